// Package sinktest has a fake sink for the tests of what consumes the sink
// contract (the relay, the metrics decorators). It talks to no broker.
package sinktest

import (
	"context"
	"sync"
	"time"

	"github.com/outboxrelay/outboxrelay/sink"
)

// Sink records what it is sent. With Gate set, each Send first takes a
// token from it (closing Blocked the first time it has to wait), like a
// producer whose in-flight cap is reached. With Hold, acknowledgements
// wait for AckAll; otherwise each record is acknowledged at once, from
// another goroutine, with Fail (nil: success).
type Sink struct {
	Gate    chan struct{}
	Blocked chan struct{}
	Hold    bool
	Fail    error

	mu       sync.Mutex
	once     sync.Once
	sent     []sink.Record
	held     []sink.AckFunc
	acks     sync.WaitGroup
	sessions []time.Time
}

// Factory returns the sink for a relay session, noting when it was asked.
func (s *Sink) Factory(context.Context) (sink.Sink, error) {
	s.mu.Lock()
	s.sessions = append(s.sessions, time.Now())
	s.mu.Unlock()
	return s, nil
}

// Send implements sink.Sink.
func (s *Sink) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	if s.Gate != nil {
		select {
		case <-s.Gate:
		default:
			if s.Blocked != nil {
				s.once.Do(func() { close(s.Blocked) })
			}
			select {
			case <-s.Gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, r)
	if s.Hold {
		s.held = append(s.held, ack)
		return nil
	}
	s.acks.Add(1)
	go func() {
		defer s.acks.Done()
		ack(s.Fail)
	}()
	return nil
}

// AckAll answers every held record with err.
func (s *Sink) AckAll(err error) {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, a := range held {
		a(err)
	}
}

// Sent returns the keys of the records sent, in order.
func (s *Sink) Sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, len(s.sent))
	for i, r := range s.sent {
		keys[i] = string(r.Key)
	}
	return keys
}

// Sessions returns when each session asked Factory for the sink.
func (s *Sink) Sessions() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.sessions...)
}

// Abort implements sink.Sink.
func (s *Sink) Abort() error { return nil }

// Commit implements sink.Sink: the fake has no transactions.
func (s *Sink) Commit(context.Context, ...sink.Record) error { return sink.ErrNotTransactional }

// Close implements sink.Sink: it waits for the acknowledgements under way.
func (s *Sink) Close() error {
	s.acks.Wait()
	return nil
}

// AckFirst answers the n oldest held records with err.
func (s *Sink) AckFirst(n int, err error) {
	s.mu.Lock()
	n = min(n, len(s.held))
	held := s.held[:n]
	s.held = s.held[n:]
	s.mu.Unlock()
	for _, a := range held {
		a(err)
	}
}
