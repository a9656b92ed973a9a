// Package sink defines what the relay hands to a message broker: records,
// and an acknowledgement per record once the broker has durably accepted it.
//
// Implementations live in subpackages (sink/kafka). This package must not
// know about sources, mapping or checkpoints.
package sink

import (
	"context"
	"errors"
	"fmt"
)

// ErrTooLarge matches (errors.Is) a record refused for its size, before
// sending or by the broker.
var ErrTooLarge = errors.New("record too large")

// ErrFenced matches (errors.Is) the failure of a transactional sink that
// another instance with the same identity replaced (Kafka: a newer
// producer epoch for the transactional id), or whose transaction the
// broker aborted after it was silent too long: it must stop, not retry.
var ErrFenced = errors.New("fenced: another instance with the same transactional id took over")

// ErrNotTransactional is Commit's error on a sink without transactions.
var ErrNotTransactional = errors.New("the sink is not transactional")

// ErrAborted is the acknowledgement error of records still in flight when
// a sink was aborted.
var ErrAborted = errors.New("the sink was aborted")

// Header is one record header. Order is kept.
type Header struct {
	Key   string
	Value []byte
}

// Record is one message to produce.
type Record struct {
	Topic   string
	Key     []byte // nil: no key
	Value   []byte // nil: tombstone
	Headers []Header
	// Timestamp in Unix milliseconds; 0 lets the producer choose.
	TimestampMs int64
}

// Size approximates the bytes the record costs in flight.
func (r *Record) Size() int {
	n := len(r.Topic) + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// PermanentError is a sink failure retrying cannot fix (a setting, a grant,
// a certificate): the relay stops with it instead of backing off.
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

// RecordError is a record the broker refused, with what identifies it (its
// topic and headers) and why.
type RecordError struct {
	Topic   string
	Headers []Header
	Err     error
}

func (e *RecordError) Error() string { return fmt.Sprintf("produce to %s: %v", e.Topic, e.Err) }
func (e *RecordError) Unwrap() error { return e.Err }

// AckFunc is called exactly once per sent record: err is nil once the broker
// acknowledged it, else the reason it never will be.
type AckFunc func(err error)

// Sink produces records. Records sent with the same key are acknowledged, and
// stored by the broker, in the order they were sent.
type Sink interface {
	// Send queues r; it blocks while too much is in flight. ack is called
	// later from another goroutine. An error means r was not queued and ack
	// will not be called.
	Send(ctx context.Context, r Record, ack AckFunc) error
	// Close waits until every queued record has been acknowledged (or failed)
	// and releases the producer. When it returns, the sink writes nothing
	// any more.
	Close() error
	// Abort stops producing at once: nothing still queued reaches the
	// broker, and every record not yet acknowledged fails (with
	// ErrAborted, or the error that stopped it). Close returns promptly
	// after it. After its first failed acknowledgement a sink behaves as
	// aborted on its own: nothing sent later reaches the broker either.
	// A transactional sink also aborts its open transaction when it can:
	// its error then matches ErrFenced if that showed another instance
	// took over (nil otherwise).
	Abort() error
	// Commit makes every record sent since the last commit visible at
	// once, together with extra (the position that covers them), in one
	// transaction — all of them or none — then begins the next. It waits
	// for their acknowledgements first. When it fails nothing since the
	// last commit becomes visible (or, if the outcome could not be
	// learnt, everything did: a new sink finds out), and the sink is
	// done. ctx bounds the wait; past it the transaction is given up.
	// A sink without transactions returns ErrNotTransactional.
	Commit(ctx context.Context, extra ...Record) error
}
