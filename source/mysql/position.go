package mysql

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/outboxrelay/outboxrelay/source"
)

// Position is a point in a MySQL/MariaDB binlog:
//
//   - File and Offset: the binlog file and the offset of the next event to
//     read. Outside a transaction this is right after the event that ended
//     the previous one; with Rows > 0 it is the first event of a committed
//     transaction of which Rows rows are already delivered.
//   - the executed GTID set at that point (MySQL "uuid:1-5" sets, tagged
//     "uuid:tag:1-5" included; MariaDB "domain-server-seq" lists), whenever
//     the server has GTIDs.
//   - XA: the XA transactions prepared but not yet committed or rolled back
//     at that point, each with where its prepared events start, so that a
//     relay resumed after the prepare still publishes their rows when the
//     XA COMMIT comes.
//
// Text form (stable; parsed by ParsePosition):
//
//	FILE:OFFSET[@GTIDSET][+ROWS][;xa=GTRID.BQUAL.FORMAT@FILE:OFFSET]...
//
// e.g. "mysql-bin.000003:1234", "mysql-bin.000003:1234@0-1-55",
// "mysql-bin.000003:1234@0-1-55+2048",
// "mysql-bin.000003:1234@0-1-55;xa=7831..1@mysql-bin.000003:999"
// (GTRID and BQUAL in hex), or a GTID set alone, "@0-1-55" (also accepted
// as "gtid:0-1-55"), which resumes by GTID only.
type Position struct {
	File   string
	Offset uint32
	// Rows is the number of rows of the transaction starting at
	// File:Offset already delivered; 0 at a transaction boundary.
	Rows int
	// XA lists the prepared, unresolved XA transactions, ordered by where
	// they start. Treat it as immutable: positions share it.
	XA []PreparedXA

	gtid string    // parsed text; "" when snap holds it or GTIDs are not tracked
	snap *gtidSnap // the reader's lazy snapshot, materialized on demand
}

// PreparedXA is an XA transaction prepared at File:Offset (its first
// event) and not yet resolved.
type PreparedXA struct {
	XID    string // canonical "GTRIDHEX.BQUALHEX.FORMATID"
	File   string
	Offset uint32
}

// GTID returns the executed GTID set at the position ("" if not tracked).
func (p Position) GTID() string {
	if p.snap != nil {
		return p.snap.String()
	}
	return p.gtid
}

// WithGTID returns p with the executed GTID set s.
func (p Position) WithGTID(s string) Position {
	p.gtid, p.snap = s, nil
	return p
}

// WithRows returns p (a transaction's first event) with n of its rows
// delivered.
func (p Position) WithRows(n int) Position {
	p.Rows = n
	return p
}

// After implements source.TxStart: p is a transaction's first event.
func (p Position) After(n int) source.Position { return p.WithRows(n) }

func (p Position) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(p.Offset), 10))
	}
	if g := p.GTID(); g != "" || p.File == "" {
		b.WriteByte('@')
		b.WriteString(g)
	}
	if p.Rows > 0 {
		b.WriteByte('+')
		b.WriteString(strconv.Itoa(p.Rows))
	}
	for _, x := range p.XA {
		fmt.Fprintf(&b, ";xa=%s@%s:%d", x.XID, x.File, x.Offset)
	}
	return b.String()
}

// txID is the text of the position of a transaction's first event, without
// GTIDs: what records carry as their transaction's position.
func txID(file string, offset uint32) string {
	return file + ":" + strconv.FormatUint(uint64(offset), 10)
}

// ParsePosition parses the text form. It never panics.
func ParsePosition(s string) (Position, error) {
	var p Position
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "gtid:"); ok {
		s = "@" + rest
	}
	main, xas, _ := strings.Cut(s, ";")
	if xas != "" || strings.HasSuffix(s, ";") {
		for _, part := range strings.Split(xas, ";") {
			x, err := parsePreparedXA(part)
			if err != nil {
				return Position{}, fmt.Errorf("position %q: %w", s, err)
			}
			p.XA = append(p.XA, x)
		}
		slices.SortFunc(p.XA, comparePreparedXA)
	}
	// Rows: after a '+' that follows the offset (and the GTID set), which
	// contain none; a '+' in a binlog file name comes before its ':'.
	if i := strings.LastIndexByte(main, '+'); i >= 0 && i > strings.LastIndexByte(main, ':') {
		n, err := strconv.ParseUint(main[i+1:], 10, 31)
		if err != nil || n == 0 {
			return Position{}, fmt.Errorf("position %q: rows %q after '+' must be a positive number", s, main[i+1:])
		}
		p.Rows, main = int(n), main[:i]
	}
	filePos, gtid, hasGTID := strings.Cut(main, "@")
	if hasGTID && filePos == "" {
		if gtid == "" {
			return Position{}, fmt.Errorf("position %q: empty GTID set after '@'", s)
		}
		if p.Rows > 0 {
			return Position{}, fmt.Errorf("position %q: rows need a FILE:OFFSET", s)
		}
		p.gtid = gtid
		return p, nil
	}
	if hasGTID {
		if gtid == "" {
			return Position{}, fmt.Errorf("position %q: empty GTID set after '@'", s)
		}
		p.gtid = gtid
	}
	file, off, err := parseFileOffset(filePos)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	p.File, p.Offset = file, off
	return p, nil
}

func parseFileOffset(s string) (string, uint32, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", 0, fmt.Errorf("want FILE:OFFSET[@GTIDSET], e.g. mysql-bin.000003:1234")
	}
	off, err := strconv.ParseUint(s[i+1:], 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("offset %q is not a number", s[i+1:])
	}
	if _, _, err := splitFile(s[:i]); err != nil {
		return "", 0, err
	}
	return s[:i], uint32(off), nil
}

func parsePreparedXA(s string) (PreparedXA, error) {
	rest, ok := strings.CutPrefix(s, "xa=")
	if !ok {
		return PreparedXA{}, fmt.Errorf("%q: want xa=XID@FILE:OFFSET", s)
	}
	xid, at, ok := strings.Cut(rest, "@")
	if !ok {
		return PreparedXA{}, fmt.Errorf("%q: want xa=XID@FILE:OFFSET", s)
	}
	if _, err := parseXIDKey(xid); err != nil {
		return PreparedXA{}, err
	}
	file, off, err := parseFileOffset(at)
	if err != nil {
		return PreparedXA{}, fmt.Errorf("%q: %w", s, err)
	}
	return PreparedXA{XID: xid, File: file, Offset: off}, nil
}

func comparePreparedXA(a, b PreparedXA) int {
	if c, err := (Position{File: a.File, Offset: a.Offset}).Compare(Position{File: b.File, Offset: b.Offset}); err == nil && c != 0 {
		return c
	}
	return strings.Compare(a.XID, b.XID)
}

// splitFile splits "mysql-bin.000003" into its base name and sequence.
func splitFile(name string) (string, uint64, error) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "", 0, fmt.Errorf("binlog file name %q: want BASE.NUMBER", name)
	}
	seq, err := strconv.ParseUint(name[i+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("binlog file name %q: want BASE.NUMBER", name)
	}
	return name[:i], seq, nil
}

// Compare orders positions of one server's binlog by file sequence, then
// offset, then rows delivered inside the transaction there. GTID sets are
// not compared: the file/offset pair orders one log. Positions in
// differently named binlogs, or without a file, cannot be compared.
func (p Position) Compare(q Position) (int, error) {
	pb, ps, err := splitFile(p.File)
	if err != nil {
		return 0, err
	}
	qb, qs, err := splitFile(q.File)
	if err != nil {
		return 0, err
	}
	if pb != qb {
		return 0, fmt.Errorf("positions in different binlogs (%s, %s) cannot be compared", pb, qb)
	}
	switch {
	case ps != qs:
		return cmpInt(ps, qs), nil
	case p.Offset != q.Offset:
		return cmpInt(p.Offset, q.Offset), nil
	}
	return cmpInt(p.Rows, q.Rows), nil
}

func cmpInt[T uint64 | uint32 | int](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// withXA returns a copy of list with x added (kept sorted).
func withXA(list []PreparedXA, x PreparedXA) []PreparedXA {
	out := make([]PreparedXA, 0, len(list)+1)
	out = append(out, list...)
	out = append(out, x)
	slices.SortFunc(out, comparePreparedXA)
	return out
}

// withoutXA returns list without xid, and whether it was there; list itself
// is not modified.
func withoutXA(list []PreparedXA, xid string) ([]PreparedXA, PreparedXA, bool) {
	for i, x := range list {
		if x.XID == xid {
			out := make([]PreparedXA, 0, len(list)-1)
			out = append(out, list[:i]...)
			return append(out, list[i+1:]...), x, true
		}
	}
	return list, PreparedXA{}, false
}
