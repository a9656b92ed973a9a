package inbox

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/outboxrelay/outboxrelay/source/kinds"
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
// source: -1, 0 or 1, as the relay's source kinds order their positions
// (source/kinds.Compare: MySQL/MariaDB "binlog.000012:4711" by file
// sequence and offset; Postgres "16/B374D848" by LSN). Anything after the
// first '@', '+' or ';' of a MySQL position (a GTID set, or a suffix a
// later relay may add) is ignored.
func ComparePositions(a, b string) (int, error) {
	a, b = trimSuffix(a), trimSuffix(b)
	c, err := kinds.Compare(a, b)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrIncomparable, err)
	}
	return c, nil
}

// trimSuffix drops everything from the first '@', '+' or ';'.
func trimSuffix(p string) string {
	if i := strings.IndexAny(p, "@+;"); i >= 0 {
		p = p[:i]
	}
	return strings.TrimSpace(p)
}
