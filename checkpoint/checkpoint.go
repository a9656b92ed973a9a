// Package checkpoint records how far the relay has safely delivered, and
// decides when that may move: only to the low watermark of broker
// acknowledgements, and only at transaction boundaries (Tracker).
//
// Stores live in subpackages (checkpoint/file, checkpoint/kafka,
// checkpoint/mem). This package must not know how positions are parsed:
// it keeps their text form and the source kind.
package checkpoint

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Load when nothing was saved yet.
var ErrNotFound = errors.New("no checkpoint stored")

// ErrUnavailable matches (errors.Is) a Load that failed because the store
// could not be reached — a Kafka broker down or moving its leadership —
// as opposed to a store that answered with something unusable. The relay
// retries the first with backoff and stops on the second.
var ErrUnavailable = errors.New("checkpoint store unavailable")

// Checkpoint is the durable position of one relay.
type Checkpoint struct {
	// Source is the source kind ("mysql", "postgres"): a checkpoint is never
	// handed to another kind of source.
	Source string `json:"source"`
	// Position is the source position's text form: every record of every
	// transaction at or before it has been acknowledged by the broker.
	Position  string    `json:"position"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PermanentError is a store failure retrying cannot fix (a corrupt file,
// a misconfigured topic): the relay stops with it instead of backing off.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help (tested through an
// interface{ Permanent() bool }).
func (e *PermanentError) Permanent() bool { return true }

// Permanent marks err as one retrying cannot fix (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Store keeps one checkpoint durably.
type Store interface {
	// Load returns ErrNotFound when nothing was saved yet; errors
	// retrying cannot fix are marked Permanent, others are transient
	// (a broker that cannot be reached).
	Load(ctx context.Context) (Checkpoint, error)
	// Save replaces the stored checkpoint atomically: after a crash, Load
	// returns either the old or the new one, never a mix.
	Save(ctx context.Context, cp Checkpoint) error
	Close() error
}
