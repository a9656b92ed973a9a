// Package retry runs a long-lived operation again after transient failures,
// with exponential backoff, logging once per change of state rather than
// once per attempt. It owns no resources of its own.
package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
)

// Op runs until ctx ends or it fails. It calls healthy whenever it made
// progress (for the relay: the checkpoint moved — connecting alone is no
// progress), which resets the backoff and ends an outage.
type Op func(ctx context.Context, healthy func()) error

// Policy bounds the backoff. Zero fields take the defaults.
type Policy struct {
	Initial time.Duration // default 500ms
	Max     time.Duration // default 30s
	// Failing and Recovered are the lines logged when an outage starts
	// and ends. Defaults: the relay's ("transient failure; retrying from
	// the last checkpoint with backoff", "recovered: the checkpoint moves
	// again").
	Failing, Recovered string
}

// Do runs op until it returns nil, ctx ends, or it fails permanently
// (IsPermanent), which it returns.
func Do(ctx context.Context, log zerolog.Logger, p Policy, op Op) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 500 * time.Millisecond
	if p.Initial > 0 {
		b.InitialInterval = p.Initial
	}
	b.MaxInterval = 30 * time.Second
	if p.Max > 0 {
		b.MaxInterval = p.Max
	}
	b.MaxElapsedTime = 0 // a relay waits out any outage
	failing, recovered := "transient failure; retrying from the last checkpoint with backoff", "recovered: the checkpoint moves again"
	if p.Failing != "" {
		failing = p.Failing
	}
	if p.Recovered != "" {
		recovered = p.Recovered
	}
	b.Reset()

	// One warning when an outage starts and one line when it ends: the
	// errors of the attempts in between (connection refused, EOF, …) are
	// logged at debug level only.
	var outage bool
	var since time.Time
	attempts := 0
	healthy := func() {
		b.Reset()
		if outage {
			log.Info().Str("outage", time.Since(since).Round(time.Millisecond).String()).Int("attempts", attempts).Msg(recovered)
			outage, attempts = false, 0
		}
	}
	for {
		err := op(ctx, healthy)
		if err == nil || (ctx.Err() != nil && errors.Is(err, context.Canceled)) {
			return nil
		}
		if IsPermanent(err) {
			return unstop(err)
		}
		attempts++
		if !outage {
			log.Warn().Err(err).Msg(failing)
			outage, since = true, time.Now()
		} else {
			log.Debug().Err(err).Int("attempt", attempts).Msg("still failing")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(b.NextBackOff()):
		}
	}
}

// IsPermanent reports whether err, or an error it wraps, says retrying
// cannot fix it: it has a Permanent() bool method that returns true (as
// source.PermanentError, sink.PermanentError and Stop's errors do). Each
// package marks its own errors so; this predicate is the only test.
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// Stop marks err as permanent for Do (nil stays nil).
func Stop(err error) error {
	if err == nil {
		return nil
	}
	return &stopError{err}
}

type stopError struct{ err error }

func (e *stopError) Error() string   { return e.err.Error() }
func (e *stopError) Unwrap() error   { return e.err }
func (e *stopError) Permanent() bool { return true }

// unstop returns err without Stop's wrapper, if it is one.
func unstop(err error) error {
	if s, ok := err.(*stopError); ok {
		return s.err
	}
	return err
}
