package inbox

import (
	"errors"
	"fmt"
)

// ErrBadRecord is wrapped by every error about a record that can never be
// handled as it is (no event id, a malformed version header): retrying it
// changes nothing. Test with errors.Is, or errors.As for *RecordError.
var ErrBadRecord = errors.New("inbox: bad record")

// ErrIncomparable is wrapped when two positions cannot be ordered: they come
// from different kinds of source, from differently named binlogs, or one is
// not a position at all. Scope records of one source apart from another's
// (Config.Scope) so that this does not happen.
var ErrIncomparable = errors.New("inbox: positions cannot be compared")

// RecordError says which record is bad and why. It wraps ErrBadRecord.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Reason    string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("inbox: record %s/%d@%d: %s", e.Topic, e.Partition, e.Offset, e.Reason)
}

func (e *RecordError) Unwrap() error { return ErrBadRecord }
