package checkpoint

import (
	"sync"
)

// Tracker computes the low watermark of acknowledgements across concurrently
// produced records: the newest transaction end such that every record of
// every transaction up to it has been acknowledged. Transactions are opened
// in log order; records are acknowledged in any order.
//
// Position is opaque to the tracker (any value the source gives).
type Tracker[P any] struct {
	mu      sync.Mutex
	queue   []*Txn[P] // open or unfinished transactions, oldest first
	head    int       // queue[head:] is live; compacted lazily
	mark    P
	hasMark bool
	failed  error
	pending int // records sent and not yet acknowledged
	changed chan struct{}
	onPass  func(end P)
}

// Txn is one transaction in the tracker.
type Txn[P any] struct {
	t       *Tracker[P]
	pending int
	ended   bool
	end     P
}

// NewTracker starts with no watermark.
func NewTracker[P any]() *Tracker[P] {
	return &Tracker[P]{changed: make(chan struct{}, 1)}
}

// OnPass makes the tracker call fn with the end of each transaction the
// watermark passes, in log order: once it and everything before it are
// acknowledged. fn runs with the tracker locked, on the goroutine of the
// acknowledgement that completed it: it must be quick and must not call the
// tracker. Set it before the first Begin. It is how the relay observes
// commit-to-acknowledgement latency.
func (t *Tracker[P]) OnPass(fn func(end P)) { t.onPass = fn }

// Begin opens the next transaction in log order.
func (t *Tracker[P]) Begin() *Txn[P] {
	x := &Txn[P]{t: t}
	t.mu.Lock()
	t.queue = append(t.queue, x)
	t.mu.Unlock()
	return x
}

// Add counts n more records of x as in flight. Call it before sending them.
func (x *Txn[P]) Add(n int) {
	x.t.mu.Lock()
	x.pending += n
	x.t.pending += n
	x.t.mu.Unlock()
}

// Done acknowledges one record of x. A non-nil err freezes the watermark
// for good: nothing at or after x may be checkpointed by this tracker.
func (x *Txn[P]) Done(err error) {
	t := x.t
	t.mu.Lock()
	x.pending--
	t.pending--
	if err != nil && t.failed == nil {
		t.failed = err
	}
	t.advance()
	t.mu.Unlock()
}

// End marks that every record of x has been added and x ends at end.
func (x *Txn[P]) End(end P) {
	t := x.t
	t.mu.Lock()
	x.ended, x.end = true, end
	t.advance()
	t.mu.Unlock()
}

// advance pops finished transactions off the front. Caller holds mu.
func (t *Tracker[P]) advance() {
	if t.failed != nil {
		return
	}
	moved := false
	for t.head < len(t.queue) {
		x := t.queue[t.head]
		if !x.ended || x.pending > 0 {
			break
		}
		t.mark, t.hasMark = x.end, true
		if t.onPass != nil {
			t.onPass(x.end)
		}
		t.queue[t.head] = nil
		t.head++
		moved = true
	}
	if t.head > 1024 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue = t.queue[:n]
		t.head = 0
	}
	if moved {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// Watermark returns the newest position that may be checkpointed.
func (t *Tracker[P]) Watermark() (P, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mark, t.hasMark
}

// Err returns the first acknowledgement error, if any.
func (t *Tracker[P]) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// InFlight returns how many records are sent and not yet acknowledged.
func (t *Tracker[P]) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// Idle reports whether every opened transaction has ended and been fully
// acknowledged.
func (t *Tracker[P]) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head == len(t.queue)
}

// Changed is signalled (without blocking) whenever the watermark moves.
func (t *Tracker[P]) Changed() <-chan struct{} { return t.changed }
