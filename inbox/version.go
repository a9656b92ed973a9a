package inbox

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/outboxrelay/outboxrelay/source/mysql"
	"github.com/outboxrelay/outboxrelay/source/postgres"
)

// Version is an event's place in its source log: the relay's
// "outboxrelay-position" header (the position of the event's transaction)
// and "outboxrelay-index" (the event's index within that transaction).
// Events of one source are totally ordered by (Position, Index): the
// position orders transactions the way the log does, the index orders the
// events of one transaction.
type Version struct {
	Position string
	Index    int64
}

func (v Version) String() string { return fmt.Sprintf("%s#%d", v.Position, v.Index) }

// Compare returns -1, 0 or 1 as v is before, equal to or after w. Versions
// of different sources do not compare: the error wraps ErrIncomparable.
func (v Version) Compare(w Version) (int, error) {
	c, err := ComparePositions(v.Position, w.Position)
	if err != nil || c != 0 {
		return c, err
	}
	return cmp.Compare(v.Index, w.Index), nil
}

// ComparePositions orders two "outboxrelay-position" header values of one
// source: -1, 0 or 1. It is the only place that knows their formats, so
// that a new format needs a change here only:
//   - MySQL/MariaDB "binlog.000012:4711" — the position where the
//     transaction starts in the binlog; ordered by file sequence, then
//     offset. Anything after the first '@', '+' or ';' (a GTID set, or a
//     suffix a later relay may add) is ignored.
//   - Postgres "16/B374D848" — the commit LSN of the transaction.
//
// The kinds are told apart by their separators (':' or '/'), which never
// appear in the other form.
func ComparePositions(a, b string) (int, error) {
	a, b = trimSuffix(a), trimSuffix(b)
	ka, kb := kindOf(a), kindOf(b)
	if ka != kb || ka == unknownKind {
		return 0, fmt.Errorf("%w: %q and %q", ErrIncomparable, a, b)
	}
	if ka == postgresKind {
		pa, err := postgres.ParsePosition(a)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
		}
		pb, err := postgres.ParsePosition(b)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
		}
		return pa.Compare(pb), nil
	}
	ma, err := mysql.ParsePosition(a)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
	}
	mb, err := mysql.ParsePosition(b)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
	}
	if ma.File == "" || mb.File == "" {
		// A GTID set alone has no order of its own here.
		return 0, fmt.Errorf("%w: %q and %q need a binlog file and offset", ErrIncomparable, a, b)
	}
	c, err := ma.Compare(mb)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
	}
	return c, nil
}

type positionKind int

const (
	unknownKind positionKind = iota
	mysqlKind
	postgresKind
)

func kindOf(p string) positionKind {
	switch {
	case strings.Contains(p, ":") && !strings.Contains(p, "/"):
		return mysqlKind
	case strings.Contains(p, "/") && !strings.Contains(p, ":"):
		return postgresKind
	}
	return unknownKind
}

// trimSuffix drops everything from the first '@', '+' or ';'.
func trimSuffix(p string) string {
	if i := strings.IndexAny(p, "@+;"); i >= 0 {
		p = p[:i]
	}
	return strings.TrimSpace(p)
}
