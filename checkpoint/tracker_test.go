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
	const txns, per = 300, 7
	tr := NewTracker[int]()
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
