package source

import (
	"errors"
	"fmt"
)

// PermanentError is a failure that retrying cannot fix — a setting or grant
// the operator must change, a position the server can no longer serve —
// so the relay stops with it instead of backing off. Sources wrap such
// errors with Permanent; everything else a source returns is transient
// (a lost connection) and retried from the checkpoint.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help. Consumers test for it with
// errors.As on interface{ Permanent() bool } (IsPermanent), so that
// sources, sinks and the relay can each mark their own errors.
func (e *PermanentError) Permanent() bool { return true }

// Permanent marks err as one retrying cannot fix (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, says retrying
// cannot fix it.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// ErrPositionLost matches (errors.Is) a PositionLostError.
var ErrPositionLost = errors.New("position lost")

// PositionLostError is a stored position the server can no longer serve:
// the log after it was purged, the replication slot is gone, or it does
// not belong to this server. The relay never skips ahead on its own; Msg
// says what happened and the ways out. It is permanent.
type PositionLostError struct {
	Position string // the position, as stored
	Msg      string // what happened and what to do
}

func (e *PositionLostError) Error() string { return e.Msg }

// Is makes a PositionLostError match ErrPositionLost.
func (e *PositionLostError) Is(target error) bool { return target == ErrPositionLost }

// Permanent is true: retrying reads the same lost position.
func (e *PositionLostError) Permanent() bool { return true }

// PositionLost returns a PositionLostError for pos with a message.
func PositionLost(pos string, format string, args ...any) error {
	return &PositionLostError{Position: pos, Msg: fmt.Sprintf(format, args...)}
}
