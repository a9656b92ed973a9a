package sinktest

import (
	"context"
	"fmt"
	"sync"

	"github.com/outboxrelay/outboxrelay/sink"
)

// Broker is a fake transactional broker: each Producer it makes fences
// the ones before (like a new producer epoch for one transactional id);
// records become visible only when their producer commits, all of them
// with the extra records of that commit.
type Broker struct {
	// FailCommit, when set, is asked before each commit: a non-nil
	// error makes that commit fail (and the producer unusable).
	FailCommit func(n int) error

	mu        sync.Mutex
	epoch     int
	commits   int
	committed []sink.Record
	sessions  int
}

// Factory returns a new producer, fencing the previous one.
func (b *Broker) Factory(context.Context) (sink.Sink, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.epoch++
	b.sessions++
	return &Producer{b: b, epoch: b.epoch}, nil
}

// Committed returns the records visible to a read_committed consumer, in
// commit order.
func (b *Broker) Committed() []sink.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sink.Record(nil), b.committed...)
}

// Sessions returns how many producers were made.
func (b *Broker) Sessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions
}

// Producer is one transactional producer of a Broker.
type Producer struct {
	b       *Broker
	epoch   int
	mu      sync.Mutex
	open    []sink.Record
	acks    sync.WaitGroup
	aborted bool
}

// Send implements sink.Sink: the record joins the open transaction and
// is acknowledged at once (from another goroutine).
func (p *Producer) Send(_ context.Context, r sink.Record, ack sink.AckFunc) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return sink.ErrAborted
	}
	p.open = append(p.open, r)
	p.acks.Add(1)
	go func() {
		defer p.acks.Done()
		ack(nil)
	}()
	return nil
}

// Commit implements sink.Sink.
func (p *Producer) Commit(_ context.Context, extra ...sink.Record) error {
	p.acks.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted {
		return sink.ErrAborted
	}
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != p.epoch {
		p.aborted = true
		return fmt.Errorf("epoch %d, now %d: %w", p.epoch, b.epoch, sink.ErrFenced)
	}
	b.commits++
	if b.FailCommit != nil {
		if err := b.FailCommit(b.commits); err != nil {
			p.aborted = true
			return err
		}
	}
	b.committed = append(b.committed, p.open...)
	b.committed = append(b.committed, extra...)
	p.open = nil
	return nil
}

// Abort implements sink.Sink: the open transaction is dropped; a
// producer whose epoch is no longer current learns it is fenced.
func (p *Producer) Abort() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.aborted
	p.aborted, p.open = true, nil
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	if !was && p.b.epoch != p.epoch {
		return fmt.Errorf("abort at epoch %d, now %d: %w", p.epoch, p.b.epoch, sink.ErrFenced)
	}
	return nil
}

// Close implements sink.Sink.
func (p *Producer) Close() error {
	p.acks.Wait()
	return nil
}
