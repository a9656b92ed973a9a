// Package sourcetest has fakes of the source contract for the tests of what
// consumes it (the relay, the metrics decorators). It reads no database.
package sourcetest

import (
	"context"
	"strconv"
	"sync"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// Pos is a position whose text is itself.
type Pos string

func (p Pos) String() string { return string(p) }

// Reader hands out Txs in order, then returns Err — or, when Err is nil,
// blocks until its context ends. It records the positions acknowledged.
type Reader struct {
	Txs       []*source.Tx
	Err       error
	TableList []*schema.Table

	mu     sync.Mutex
	acks   []string
	closed bool
}

// Next implements source.Reader.
func (r *Reader) Next(ctx context.Context) (*source.Tx, error) {
	r.mu.Lock()
	if len(r.Txs) > 0 {
		tx := r.Txs[0]
		r.Txs = r.Txs[1:]
		r.mu.Unlock()
		return tx, nil
	}
	err := r.Err
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// Ack implements source.Reader.
func (r *Reader) Ack(_ context.Context, p source.Position) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks = append(r.acks, p.String())
	return nil
}

// Tables implements source.Reader.
func (r *Reader) Tables() []*schema.Table { return r.TableList }

// Close implements source.Reader.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// Acks returns the positions acknowledged so far.
func (r *Reader) Acks() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.acks...)
}

// Closed reports whether Close was called.
func (r *Reader) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Source opens readers as the relay does (relay.Source): each Open returns
// New() when set, else the next of Readers, else fails with Err.
type Source struct {
	Name    string // Kind; default "fake"
	Start   string // what Resolve returns
	New     func() source.Reader
	Readers []source.Reader
	Err     error

	mu    sync.Mutex
	opens int
}

// Kind implements relay.Source.
func (s *Source) Kind() string {
	if s.Name == "" {
		return "fake"
	}
	return s.Name
}

// Resolve implements relay.Source.
func (s *Source) Resolve(context.Context) (string, error) { return s.Start, nil }

// Open implements relay.Source.
func (s *Source) Open(context.Context, string) (source.Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opens++
	if s.New != nil {
		return s.New(), nil
	}
	if len(s.Readers) == 0 {
		return nil, s.Err
	}
	r := s.Readers[0]
	s.Readers = s.Readers[1:]
	return r, nil
}

// Opens returns how many times Open was called.
func (s *Source) Opens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opens
}

// Start is a transaction's start whose points inside are "START+N".
type Start string

func (s Start) String() string { return string(s) }

// After implements source.TxStart.
func (s Start) After(n int) source.Position { return Pos(string(s) + "+" + strconv.Itoa(n)) }
