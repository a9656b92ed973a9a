package mysql

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// queryKind is what a binlog QUERY event means for transaction boundaries.
type queryKind int

const (
	qOther      queryKind = iota // DDL or another statement
	qBegin                       // BEGIN / START TRANSACTION
	qCommit                      // COMMIT (non-transactional engines end with it)
	qRollback                    // ROLLBACK of the whole transaction
	qSavepoint                   // SAVEPOINT name
	qRollbackTo                  // ROLLBACK TO [SAVEPOINT] name
	qRelease                     // RELEASE SAVEPOINT name
	qXAStart                     // XA START xid (MySQL writes it; MariaDB flags its GTID event)
	qXAEnd                       // XA END xid
	qXACommit                    // XA COMMIT xid [ONE PHASE]
	qXARollback                  // XA ROLLBACK xid
	qDML                         // a statement-based row change (binlog_format was not ROW)
)

// parsedQuery is a classified QUERY event.
type parsedQuery struct {
	kind queryKind
	name string // savepoint name, or canonical XID for XA statements
}

// classify reads the statement of a QUERY event. Servers write these
// statements themselves (SAVEPOINT `s`, XA COMMIT X'..',X'..',1), so only
// their spellings need recognising, plus the statements a session in
// STATEMENT format could leave in a ROW binlog.
func classify(q []byte) parsedQuery {
	s := strings.TrimSpace(stripComments(string(q)))
	upper := strings.ToUpper(s)
	word := func(i int) string {
		f := strings.Fields(upper)
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	arg := func(prefixWords int) string {
		f := strings.Fields(s)
		if prefixWords < len(f) {
			return unquoteIdent(strings.Join(f[prefixWords:], " "))
		}
		return ""
	}
	switch word(0) {
	case "BEGIN":
		return parsedQuery{kind: qBegin}
	case "START":
		if word(1) == "TRANSACTION" {
			return parsedQuery{kind: qBegin}
		}
	case "COMMIT":
		return parsedQuery{kind: qCommit}
	case "ROLLBACK":
		switch {
		case word(1) == "TO" && word(2) == "SAVEPOINT":
			return parsedQuery{kind: qRollbackTo, name: arg(3)}
		case word(1) == "TO":
			return parsedQuery{kind: qRollbackTo, name: arg(2)}
		case word(1) == "WORK" && word(2) == "TO" && word(3) == "SAVEPOINT":
			return parsedQuery{kind: qRollbackTo, name: arg(4)}
		case word(1) == "WORK" && word(2) == "TO":
			return parsedQuery{kind: qRollbackTo, name: arg(3)}
		}
		return parsedQuery{kind: qRollback}
	case "SAVEPOINT":
		return parsedQuery{kind: qSavepoint, name: arg(1)}
	case "RELEASE":
		if word(1) == "SAVEPOINT" {
			return parsedQuery{kind: qRelease, name: arg(2)}
		}
	case "XA":
		xid := xidKey(s)
		switch word(1) {
		case "START", "BEGIN":
			return parsedQuery{kind: qXAStart, name: xid}
		case "END":
			return parsedQuery{kind: qXAEnd, name: xid}
		case "COMMIT":
			return parsedQuery{kind: qXACommit, name: xid}
		case "ROLLBACK":
			return parsedQuery{kind: qXARollback, name: xid}
		}
	case "INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD":
		return parsedQuery{kind: qDML}
	}
	return parsedQuery{kind: qOther}
}

// stripComments removes leading /* ... */, -- and # comments.
func stripComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		switch {
		case strings.HasPrefix(s, "/*"):
			end := strings.Index(s, "*/")
			if end < 0 {
				return ""
			}
			s = s[end+2:]
		case strings.HasPrefix(s, "--"), strings.HasPrefix(s, "#"):
			end := strings.IndexByte(s, '\n')
			if end < 0 {
				return ""
			}
			s = s[end+1:]
		default:
			return s
		}
	}
}

func unquoteIdent(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '`' && s[len(s)-1] == '`' {
		return strings.ReplaceAll(s[1:len(s)-1], "``", "`")
	}
	return s
}

// xidKey returns the canonical "GTRIDHEX.BQUALHEX.FORMATID" of the XID in an
// XA statement as servers write it to the binlog: X'gtrid',X'bqual',format
// (MySQL and MariaDB both), or a quoted string as a user may type it.
func xidKey(stmt string) string {
	f := strings.Fields(stmt)
	if len(f) < 3 {
		return ""
	}
	rest := strings.Join(f[2:], " ")
	// Drop a trailing ONE PHASE / SUSPEND / JOIN / RESUME.
	for _, suffix := range []string{" ONE PHASE", " SUSPEND FOR MIGRATE", " SUSPEND", " JOIN", " RESUME"} {
		if len(rest) > len(suffix) && strings.EqualFold(rest[len(rest)-len(suffix):], suffix) {
			rest = rest[:len(rest)-len(suffix)]
		}
	}
	parts := splitXID(rest)
	var gtrid, bqual []byte
	format := uint64(1)
	var err error
	if len(parts) >= 1 {
		if gtrid, err = xidPart(parts[0]); err != nil {
			return ""
		}
	}
	if len(parts) >= 2 {
		if bqual, err = xidPart(parts[1]); err != nil {
			return ""
		}
	}
	if len(parts) >= 3 {
		if format, err = strconv.ParseUint(strings.TrimSpace(parts[2]), 10, 32); err != nil {
			return ""
		}
	}
	return xidKeyOf(gtrid, bqual, uint32(format))
}

func xidKeyOf(gtrid, bqual []byte, format uint32) string {
	return hex.EncodeToString(gtrid) + "." + hex.EncodeToString(bqual) + "." + strconv.FormatUint(uint64(format), 10)
}

// parseXIDKey checks a canonical XID key.
func parseXIDKey(k string) ([3]string, error) {
	parts := strings.Split(k, ".")
	if len(parts) != 3 {
		return [3]string{}, fmt.Errorf("XID %q: want GTRIDHEX.BQUALHEX.FORMATID", k)
	}
	for _, p := range parts[:2] {
		if _, err := hex.DecodeString(p); err != nil {
			return [3]string{}, fmt.Errorf("XID %q: %q is not hex", k, p)
		}
	}
	if _, err := strconv.ParseUint(parts[2], 10, 32); err != nil || parts[0] == "" {
		return [3]string{}, fmt.Errorf("XID %q: want GTRIDHEX.BQUALHEX.FORMATID", k)
	}
	return [3]string(parts), nil
}

// splitXID splits "X'78',X”,1" at the commas outside quotes.
func splitXID(s string) []string {
	var parts []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\'':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				parts = append(parts, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(parts, strings.TrimSpace(s[start:]))
}

func xidPart(p string) ([]byte, error) {
	switch {
	case len(p) >= 3 && (p[0] == 'X' || p[0] == 'x') && p[1] == '\'' && p[len(p)-1] == '\'':
		return hex.DecodeString(p[2 : len(p)-1])
	case len(p) >= 2 && (p[0] == '\'' || p[0] == '"') && p[len(p)-1] == p[0]:
		return []byte(p[1 : len(p)-1]), nil
	case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
		return hex.DecodeString(p[2:])
	}
	return nil, fmt.Errorf("XID part %q", p)
}

// xaPrepare is an XA_PREPARE_LOG_EVENT: it ends the events of an XA
// transaction, which it either prepares or, with one_phase, commits.
type xaPrepare struct {
	onePhase bool
	xid      string
}

// parseXAPrepare decodes the body of an XA_PREPARE_LOG_EVENT (go-mysql
// hands it over undecoded): one_phase (1 byte), formatID (4), gtrid length
// (4), bqual length (4), then gtrid and bqual — the same layout in MySQL
// (Xa_prepare_log_event) and MariaDB (XA_prepare_log_event).
func parseXAPrepare(data []byte) (xaPrepare, error) {
	if len(data) < 13 {
		return xaPrepare{}, errors.New("XA_PREPARE event: truncated")
	}
	format := binary.LittleEndian.Uint32(data[1:5])
	gl := binary.LittleEndian.Uint32(data[5:9])
	bl := binary.LittleEndian.Uint32(data[9:13])
	if gl > 64 || bl > 64 || uint64(13)+uint64(gl)+uint64(bl) > uint64(len(data)) {
		return xaPrepare{}, errors.New("XA_PREPARE event: bad XID lengths")
	}
	gtrid := data[13 : 13+gl]
	bqual := data[13+gl : 13+gl+bl]
	return xaPrepare{onePhase: data[0] != 0, xid: xidKeyOf(gtrid, bqual, format)}, nil
}

// xidText renders a canonical key as the XA statements spell it.
func xidText(k string) string {
	p, err := parseXIDKey(k)
	if err != nil {
		return k
	}
	return fmt.Sprintf("X'%s',X'%s',%s", p[0], p[1], p[2])
}
