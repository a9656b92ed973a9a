package checkpoint

import (
	"sync"
)

// Tracker computes the low watermark of acknowledgements across concurrently
// produced records: the newest transaction end such that every record of
// every transaction up to it has been acknowledged. Transactions are opened
// in log order; records are acknowledged in any order.
//
// With Inside set, the watermark can also stop inside the oldest
// unfinished transaction, after the longest run of its records (by index,
// from its first) that are all acknowledged: a checkpoint inside a large
// transaction, so that a restart re-sends only the rest of it.
//
// Its memory is bounded by the records in flight, not by how long one of
// them waits: finished transactions (ended, every record acknowledged)
// held back behind an unfinished one merge with their finished neighbours,
// so a stuck record on a busy log costs one entry, not one per transaction.
//
// Position is opaque to the tracker (any value the source gives).
type Tracker[P any] struct {
	mu          sync.Mutex
	head, tail  *Txn[P] // open or unfinished transactions, oldest first
	entries     int
	mark        P
	hasMark     bool
	failed      error
	pending     int // records sent and not yet acknowledged
	changed     chan struct{}
	onPass      func(end P)
	merge       func(older, newer P) P
	unmergeable bool // merge not set: keep every entry
	inside      func(start P, n int) P
}

// Txn is one transaction in the tracker.
type Txn[P any] struct {
	t          *Tracker[P]
	prev, next *Txn[P]
	pending    int
	ended      bool
	end        P
	gone       bool // passed or merged into a neighbour

	// Set by Resume: records are acknowledged by index (DoneAt).
	tracked bool
	start   P      // the transaction's start, for Inside
	first   int    // index of the first record of this session
	base    int    // every record below this index is acknowledged
	acked   []bool // acknowledgements of indexes base, base+1, …
}

// NewTracker starts with no watermark.
func NewTracker[P any]() *Tracker[P] {
	return &Tracker[P]{changed: make(chan struct{}, 1), unmergeable: true}
}

// Merge lets finished transactions waiting behind an unfinished one merge:
// fn returns the value that stands for older and newer together (its end
// must be newer's). Without it the tracker keeps an entry per transaction.
// Set it before the first Begin.
func (t *Tracker[P]) Merge(fn func(older, newer P) P) {
	t.merge, t.unmergeable = fn, fn == nil
}

// OnPass makes the tracker call fn with the end of each transaction the
// watermark passes, in log order: once it and everything before it are
// acknowledged (merged transactions pass as one). fn runs with the tracker
// locked, on the goroutine of the acknowledgement that completed it: it
// must be quick and must not call the tracker. Set it before the first
// Begin. It is how the relay observes commit-to-acknowledgement latency.
func (t *Tracker[P]) OnPass(fn func(end P)) { t.onPass = fn }

// Inside lets the watermark stop inside a transaction opened with
// Resume: fn returns the position after its first n records (n ≥ 1).
// Set it before the first Begin.
func (t *Tracker[P]) Inside(fn func(start P, n int) P) { t.inside = fn }

// Begin opens the next transaction in log order.
func (t *Tracker[P]) Begin() *Txn[P] {
	x := &Txn[P]{t: t}
	t.mu.Lock()
	if t.tail == nil {
		t.head, t.tail = x, x
	} else {
		x.prev, t.tail.next, t.tail = t.tail, x, x
	}
	t.entries++
	t.mu.Unlock()
	return x
}

// Add counts n more records of x as in flight (n < 0 takes back records
// never sent). Call it before sending them.
func (x *Txn[P]) Add(n int) {
	t := x.t
	t.mu.Lock()
	x.pending += n
	t.pending += n
	if n < 0 {
		t.settle(x)
	}
	t.mu.Unlock()
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
	t.settle(x)
	t.mu.Unlock()
}

// Resume makes x acknowledge its records by index (DoneAt), the first
// of this session being first (more than 0 when the session resumed
// inside x), so that the watermark can stop inside x after the records
// acknowledged in a row; start is x's start, handed to Inside. Call it
// before any record of x is added.
func (x *Txn[P]) Resume(first int, start P) {
	t := x.t
	t.mu.Lock()
	x.tracked, x.start, x.first, x.base = true, start, first, first
	t.mu.Unlock()
}

// DoneAt acknowledges record i of x (see Resume; without Resume it is
// Done). A non-nil err freezes the watermark for good.
func (x *Txn[P]) DoneAt(i int, err error) {
	t := x.t
	t.mu.Lock()
	if x.tracked && t.failed == nil && err == nil {
		if j := i - x.base; j >= 0 {
			for len(x.acked) <= j {
				x.acked = append(x.acked, false)
			}
			x.acked[j] = true
			k := 0
			for k < len(x.acked) && x.acked[k] {
				k++
			}
			x.base += k
			x.acked = x.acked[k:]
		}
	}
	x.pending--
	t.pending--
	if err != nil && t.failed == nil {
		t.failed = err
	}
	t.settle(x)
	t.mu.Unlock()
}

// End marks that every record of x has been added and x ends at end.
func (x *Txn[P]) End(end P) {
	t := x.t
	t.mu.Lock()
	x.ended, x.end = true, end
	t.settle(x)
	t.mu.Unlock()
}

func (x *Txn[P]) finished() bool { return x.ended && x.pending == 0 }

// settle advances the watermark, or merges x with finished neighbours.
// Caller holds mu.
func (t *Tracker[P]) settle(x *Txn[P]) {
	if t.failed != nil {
		return
	}
	if t.head != nil && t.head.finished() {
		t.advance()
		return
	}
	if t.unmergeable || x.gone || !x.finished() {
		return
	}
	if p := x.prev; p != nil && p.finished() {
		x.end = t.merge(p.end, x.end)
		t.unlink(p)
	}
	if n := x.next; n != nil && n.finished() {
		n.end = t.merge(x.end, n.end)
		t.unlink(x)
	}
}

func (t *Tracker[P]) unlink(x *Txn[P]) {
	if x.prev != nil {
		x.prev.next = x.next
	} else {
		t.head = x.next
	}
	if x.next != nil {
		x.next.prev = x.prev
	} else {
		t.tail = x.prev
	}
	x.prev, x.next, x.gone = nil, nil, true
	t.entries--
}

// advance pops finished transactions off the front. Caller holds mu.
func (t *Tracker[P]) advance() {
	moved := false
	for t.head != nil && t.head.finished() {
		x := t.head
		t.mark, t.hasMark = x.end, true
		if t.onPass != nil {
			t.onPass(x.end)
		}
		t.unlink(x)
		moved = true
	}
	if moved {
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// Watermark returns the newest position that may be checkpointed: the end
// of the newest transaction passed, or, with Inside, a point inside the
// oldest unfinished one after the records acknowledged in a row there.
// After a failed acknowledgement it stays where it was.
func (t *Tracker[P]) Watermark() (P, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x := t.head; x != nil && t.inside != nil && x.tracked && x.base > 0 {
		return t.inside(x.start, x.base), true
	}
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
	return t.head == nil
}

// Entries returns how many transactions the tracker holds (for tests and
// metrics: it stays bounded by the records in flight).
func (t *Tracker[P]) Entries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.entries
}

// Changed is signalled (without blocking) whenever the watermark moves.
func (t *Tracker[P]) Changed() <-chan struct{} { return t.changed }
