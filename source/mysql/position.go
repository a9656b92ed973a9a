package mysql

import (
	"fmt"
	"strconv"
	"strings"
)

// Position is a point in a MySQL/MariaDB binlog: the file and the offset of
// the next event, plus, when the relay tracks GTIDs, the executed GTID set at
// that point (MySQL "uuid:1-5" sets, MariaDB "domain-server-seq" lists).
//
// Text form: "mysql-bin.000003:1234" or "mysql-bin.000003:1234@0-1-55", or
// a GTID set alone, "@0-1-55" (also accepted as "gtid:0-1-55"), which
// resumes by GTID only.
type Position struct {
	File   string
	Offset uint32
	GTID   string
}

func (p Position) String() string {
	if p.File == "" {
		return "@" + p.GTID
	}
	s := p.File + ":" + strconv.FormatUint(uint64(p.Offset), 10)
	if p.GTID != "" {
		s += "@" + p.GTID
	}
	return s
}

// ParsePosition parses the text form. It never panics.
func ParsePosition(s string) (Position, error) {
	var p Position
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "gtid:"); ok {
		s = "@" + rest
	}
	filePos, gtid, hasGTID := strings.Cut(s, "@")
	if hasGTID && filePos == "" && gtid != "" {
		return Position{GTID: gtid}, nil
	}
	if hasGTID {
		if gtid == "" {
			return p, fmt.Errorf("position %q: empty GTID set after '@'", s)
		}
		p.GTID = gtid
	}
	i := strings.LastIndexByte(filePos, ':')
	if i <= 0 || i == len(filePos)-1 {
		return p, fmt.Errorf("position %q: want FILE:OFFSET[@GTIDSET], e.g. mysql-bin.000003:1234", s)
	}
	off, err := strconv.ParseUint(filePos[i+1:], 10, 32)
	if err != nil {
		return p, fmt.Errorf("position %q: offset %q is not a number", s, filePos[i+1:])
	}
	p.File, p.Offset = filePos[:i], uint32(off)
	if _, _, err := splitFile(p.File); err != nil {
		return p, fmt.Errorf("position %q: %w", s, err)
	}
	return p, nil
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
// offset. GTID sets are not compared: the file/offset pair orders one log.
// Positions in differently named binlogs cannot be compared.
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
		if ps < qs {
			return -1, nil
		}
		return 1, nil
	case p.Offset < q.Offset:
		return -1, nil
	case p.Offset > q.Offset:
		return 1, nil
	}
	return 0, nil
}
