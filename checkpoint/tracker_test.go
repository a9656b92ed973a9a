package checkpoint

import (
	"errors"
	"math/rand"
	"sync"
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
