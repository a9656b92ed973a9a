package checkpoint

import (
	"errors"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
)

func TestTrackerLowWatermark(t *testing.T) {
	t.Parallel()
	tr := NewTracker[int]()
	a, b, c := tr.Begin(), tr.Begin(), tr.Begin()
	a.Add(2)
	b.Add(1)
	a.End(10)
	b.End(20)
	c.End(30) // no records: done as soon as it ends

	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark before any ack")
	}
	b.Done(nil) // b is complete, but a is not: nothing may move
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark moved past an unacknowledged earlier transaction")
	}
	a.Done(nil)
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark moved with one record of a still pending")
	}
	a.Done(nil)
	if got, _ := tr.Watermark(); got != 30 {
		t.Fatalf("watermark = %d, want 30", got)
	}
	if !tr.Idle() || tr.InFlight() != 0 {
		t.Fatalf("idle %v in flight %d", tr.Idle(), tr.InFlight())
	}
}

func TestTrackerOpenTransactionHoldsWatermark(t *testing.T) {
	t.Parallel()
	tr := NewTracker[int]()
	a := tr.Begin()
	a.Add(1)
	a.Done(nil) // all sent records acked, but the transaction has not ended
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark inside an unfinished transaction")
	}
	a.End(5)
	if got, _ := tr.Watermark(); got != 5 {
		t.Fatalf("watermark = %d, want 5", got)
	}
}

func TestTrackerFailureFreezes(t *testing.T) {
	t.Parallel()
	tr := NewTracker[int]()
	a, b := tr.Begin(), tr.Begin()
	a.Add(1)
	b.Add(1)
	a.End(1)
	b.End(2)
	a.Done(nil)
	b.Done(errors.New("boom"))
	if got, _ := tr.Watermark(); got != 1 {
		t.Fatalf("watermark = %d, want 1", got)
	}
	c := tr.Begin()
	c.End(3)
	if got, _ := tr.Watermark(); got != 1 {
		t.Fatalf("watermark moved to %d after a failure", got)
	}
	if tr.Err() == nil {
		t.Fatal("Err() = nil after a failed ack")
	}
}

// TestTrackerConcurrentAcks acknowledges records from many goroutines in
// random order and checks the watermark only ever names a transaction whose
// records, and all earlier ones, were acknowledged.
func TestTrackerConcurrentAcks(t *testing.T) {
	t.Parallel()
	for _, merging := range []bool{false, true} {
		concurrentAcks(t, merging)
	}
}

func concurrentAcks(t *testing.T, merging bool) {
	const txns, per = 300, 7
	tr := NewTracker[int]()
	if merging {
		tr.Merge(func(_, newer int) int { return newer })
	}
	acked := make([]int, txns) // guarded by mu
	var mu sync.Mutex
	type rec struct {
		x  *Txn[int]
		tx int
	}
	var recs []rec
	for i := 0; i < txns; i++ {
		x := tr.Begin()
		x.Add(per)
		for j := 0; j < per; j++ {
			recs = append(recs, rec{x, i})
		}
		x.End(i)
	}
	rand.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(recs); i += 8 {
				mu.Lock()
				acked[recs[i].tx]++
				mu.Unlock()
				recs[i].x.Done(nil)
				if m, ok := tr.Watermark(); ok {
					mu.Lock()
					for k := 0; k <= m; k++ {
						if acked[k] != per {
							t.Errorf("watermark %d but transaction %d has %d/%d acks", m, k, acked[k], per)
						}
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if m, _ := tr.Watermark(); m != txns-1 {
		t.Fatalf("final watermark %d, want %d", m, txns-1)
	}
}

// TestTrackerBoundedBehindStuckRecord: one record stays unacknowledged
// while a busy log goes on (rows-less transactions, and transactions whose
// records are acknowledged at once): the tracker holds a handful of
// entries, not one per transaction, and when the stuck record is finally
// acknowledged the watermark jumps to the newest end.
func TestTrackerBoundedBehindStuckRecord(t *testing.T) {
	t.Parallel()
	tr := NewTracker[int]()
	var passed []int
	tr.Merge(func(_, newer int) int { return newer })
	tr.OnPass(func(end int) { passed = append(passed, end) })
	stuck := tr.Begin()
	stuck.Add(1)
	stuck.End(0)
	for i := 1; i <= 100000; i++ {
		x := tr.Begin()
		if i%3 == 0 {
			x.Add(2)
			x.End(i)
			x.Done(nil)
			x.Done(nil)
		} else {
			x.End(i)
		}
		if n := tr.Entries(); n > 3 {
			t.Fatalf("after %d transactions behind a stuck record the tracker holds %d entries", i, n)
		}
	}
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark moved past the stuck record")
	}
	stuck.Done(nil)
	if m, _ := tr.Watermark(); m != 100000 || tr.Entries() != 0 {
		t.Fatalf("after the stuck record: watermark %d, %d entries", m, tr.Entries())
	}
	if len(passed) != 2 || passed[1] != 100000 {
		t.Fatalf("passed %v, want [0 100000]", passed)
	}
}

// TestTrackerMergeKeepsUnfinishedApart: a finished transaction between two
// unfinished ones is kept; once its neighbours finish they merge.
func TestTrackerMergeKeepsUnfinishedApart(t *testing.T) {
	t.Parallel()
	tr := NewTracker[int]()
	tr.Merge(func(_, newer int) int { return newer })
	a, b, c, d := tr.Begin(), tr.Begin(), tr.Begin(), tr.Begin()
	a.Add(1)
	c.Add(1)
	a.End(1)
	b.End(2)
	c.End(3)
	d.End(4)
	if n := tr.Entries(); n != 4 {
		t.Fatalf("%d entries, want 4 (a, b, c unfinished, d)", n)
	}
	c.Done(nil) // c and d merge; b stays behind unfinished a
	if n := tr.Entries(); n != 2 {
		t.Fatalf("%d entries after c finished, want 2", n)
	}
	a.Done(nil)
	if m, _ := tr.Watermark(); m != 4 {
		t.Fatalf("watermark %d, want 4", m)
	}
}

// inPos is a test position: a transaction end, or rows inside one.
type inPos struct {
	tx   string
	rows int // 0: the end of tx
}

// TestTrackerInside: the watermark stops inside the oldest unfinished
// transaction after the records acknowledged in a row from its first, and
// only there; a later transaction's progress never shows.
func TestTrackerInside(t *testing.T) {
	t.Parallel()
	tr := NewTracker[inPos]()
	tr.Inside(func(start inPos, n int) inPos { return inPos{start.tx, n} })
	a := tr.Begin()
	a.Resume(0, inPos{tx: "a"})
	a.Add(5)
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark before any ack")
	}
	a.DoneAt(1, nil) // record 0 still in flight
	if _, ok := tr.Watermark(); ok {
		t.Fatal("watermark past an unacknowledged first record")
	}
	a.DoneAt(0, nil)
	if got, _ := tr.Watermark(); got != (inPos{"a", 2}) {
		t.Fatalf("watermark %v, want 2 rows of a", got)
	}
	a.DoneAt(3, nil)
	if got, _ := tr.Watermark(); got != (inPos{"a", 2}) {
		t.Fatalf("watermark %v past the gap at index 2", got)
	}
	b := tr.Begin()
	b.Resume(0, inPos{tx: "b"})
	b.Add(1)
	b.DoneAt(0, nil)
	b.End(inPos{tx: "b"})
	if got, _ := tr.Watermark(); got != (inPos{"a", 2}) {
		t.Fatalf("watermark %v moved with a later transaction", got)
	}
	a.DoneAt(2, nil)
	a.DoneAt(4, nil)
	if got, _ := tr.Watermark(); got != (inPos{"a", 5}) {
		t.Fatalf("watermark %v, want all 5 rows of a (a has not ended)", got)
	}
	a.End(inPos{tx: "a"})
	if got, _ := tr.Watermark(); got != (inPos{"b", 0}) {
		t.Fatalf("watermark %v, want the end of b", got)
	}
}

// TestTrackerInsideResumed: a session resumed inside a transaction counts
// from there; a failure freezes the point inside too.
func TestTrackerInsideResumed(t *testing.T) {
	t.Parallel()
	tr := NewTracker[inPos]()
	tr.Inside(func(start inPos, n int) inPos { return inPos{start.tx, n} })
	a := tr.Begin()
	a.Resume(3000, inPos{tx: "a"})
	a.Add(3)
	if got, ok := tr.Watermark(); !ok || got != (inPos{"a", 3000}) {
		t.Fatalf("watermark %v %v, want where the session resumed", got, ok)
	}
	a.DoneAt(3000, nil)
	if got, _ := tr.Watermark(); got != (inPos{"a", 3001}) {
		t.Fatalf("watermark %v, want 3001 rows of a", got)
	}
	a.DoneAt(3001, errors.New("refused"))
	a.DoneAt(3002, nil)
	if got, _ := tr.Watermark(); got != (inPos{"a", 3001}) {
		t.Fatalf("watermark %v after a failure, want it frozen at 3001", got)
	}
}

// TestTrackerInsideConcurrent: acknowledgements by index from many
// goroutines; whenever the watermark is inside the transaction, every
// record below it was acknowledged.
func TestTrackerInsideConcurrent(t *testing.T) {
	t.Parallel()
	tr := NewTracker[inPos]()
	tr.Inside(func(start inPos, n int) inPos { return inPos{start.tx, n} })
	const n = 20000
	var acked [n]atomic.Bool
	a := tr.Begin()
	a.Resume(0, inPos{tx: "a"})
	a.Add(n)
	order := rand.Perm(n)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := w; k < n; k += 4 {
				i := order[k]
				acked[i].Store(true)
				a.DoneAt(i, nil)
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if got, ok := tr.Watermark(); ok {
			for i := 0; i < got.rows; i++ {
				if !acked[i].Load() {
					t.Fatalf("watermark %d rows, but record %d was not acknowledged", got.rows, i)
				}
			}
		}
	}
	if got, _ := tr.Watermark(); got.rows != n {
		t.Fatalf("watermark %v after every ack, want %d rows", got, n)
	}
}
