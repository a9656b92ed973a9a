package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/mem"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink/sinktest"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/sourcetest"
)

type pos = sourcetest.Pos

var outboxTable = &schema.Table{Schema: "s", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload"}}

func row(i int) source.Row {
	return source.Row{Table: outboxTable, Values: []any{fmt.Sprintf("e%d", i), "order", fmt.Sprintf("k%d", i), "Created", "{}"}}
}

func checkpointAt(p string) checkpoint.Checkpoint {
	return checkpoint.Checkpoint{Source: "fake", Position: p}
}

func testMapper(t *testing.T) *outbox.Mapper {
	t.Helper()
	m, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStopInsideTransactionFinishesIt: a clean stop while a transaction
// handed out in pieces is half sent (the sink blocked) finishes that
// transaction, so the final checkpoint is its end and a restart sends none
// of it twice.
func TestStopInsideTransactionFinishesIt(t *testing.T) {
	t.Parallel()
	piece := func(first, n int, end source.Position) *source.Tx {
		tx := &source.Tx{ID: "tx1", FirstIndex: first, End: end}
		for i := first; i < first+n; i++ {
			tx.Rows = append(tx.Rows, row(i))
		}
		return tx
	}
	reader := &sourcetest.Reader{Txs: []*source.Tx{
		{ID: "tx0", Rows: []source.Row{row(-1)}, End: pos("0/10")},
		piece(0, 3, nil),
		piece(3, 3, nil),
		piece(6, 2, pos("0/20")),
		{ID: "tx2", Rows: []source.Row{row(100)}, End: pos("0/30")}, // must not be read on stop
	}}
	// Let tx0 and the first two rows of tx1 through, then block.
	snk := &sinktest.Sink{Gate: make(chan struct{}, 3), Blocked: make(chan struct{})}
	for i := 0; i < 3; i++ {
		snk.Gate <- struct{}{}
	}
	store := &mem.Store{}
	r := New(Config{CheckpointInterval: 10 * time.Millisecond, ShutdownTimeout: 10 * time.Second}, &sourcetest.Source{Readers: []source.Reader{reader}},
		snk.Factory, store, testMapper(t), zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	<-snk.Blocked
	time.Sleep(50 * time.Millisecond) // a checkpoint tick or more while blocked
	cancel()
	close(snk.Gate) // the sink has room again
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if sent := snk.Sent(); len(sent) != 9 {
		t.Fatalf("sent %d records (%v), want tx0 and all 8 of tx1", len(sent), sent)
	}
	cp, err := store.Load(context.Background())
	if err != nil || cp.Position != "0/20" {
		t.Fatalf("final checkpoint %+v, %v; want the end of tx1, 0/20", cp, err)
	}
}

// TestRepeatedFailureAtOnePositionStops: a session that connects and then
// fails again at the same checkpoint is no recovery: the backoff keeps
// growing between sessions, and after relay.max_failures_at_position of
// them the relay stops with the error instead of looping.
func TestRepeatedFailureAtOnePositionStops(t *testing.T) {
	t.Parallel()
	tx := &source.Tx{ID: "tx1", Rows: []source.Row{row(1)}, End: pos("0/20")}
	// The checkpoint never moves, so every session reads the same.
	src := &sourcetest.Source{Start: "0/10", New: func() source.Reader { return &sourcetest.Reader{Txs: []*source.Tx{tx}} }}
	snk := &sinktest.Sink{Fail: errors.New("refused")}
	r := New(Config{CheckpointInterval: 5 * time.Millisecond, MaxFailuresAtPosition: 4, Retry: retry.Policy{Initial: 20 * time.Millisecond, Max: time.Second}},
		src, snk.Factory, &mem.Store{}, testMapper(t), zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "4 times in a row at checkpoint 0/10") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Run: %v; want it to stop after 4 failures at 0/10, with the cause", err)
	}
	sessions := snk.Sessions()
	if len(sessions) != 4 {
		t.Fatalf("%d sessions, want 4", len(sessions))
	}
	// No reset between the failures: the waits grow.
	var gaps []time.Duration
	for i := 1; i < len(sessions); i++ {
		gaps = append(gaps, sessions[i].Sub(sessions[i-1]))
	}
	if !(gaps[2] > gaps[0]) {
		t.Errorf("gaps between sessions %v: the backoff did not grow", gaps)
	}
}

// TestFirstStartStoresResolvedPosition: with no checkpoint the resolved
// start is stored before anything is sent, and a source that keeps its
// start itself ("") stores nothing.
func TestFirstStartStoresResolvedPosition(t *testing.T) {
	t.Parallel()
	for _, start := range []string{"0/10", ""} {
		store := &mem.Store{}
		snk := &sinktest.Sink{Gate: make(chan struct{}), Blocked: make(chan struct{})}
		src := &sourcetest.Source{Start: start, Readers: []source.Reader{&sourcetest.Reader{Txs: []*source.Tx{{ID: "t", Rows: []source.Row{row(1)}, End: pos("0/20")}}}}}
		r := New(Config{}, src, snk.Factory, store, testMapper(t), zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		<-snk.Blocked // the first record waits: nothing sent yet
		cp, err := store.Load(context.Background())
		switch {
		case start != "" && (err != nil || cp.Position != start):
			t.Errorf("before the first send: checkpoint %+v, %v; want the resolved start %s", cp, err, start)
		case start == "" && err == nil:
			t.Errorf("a source keeping its start stored %+v", cp)
		}
		cancel()
		close(snk.Gate)
		<-done
	}
}

// TestConfigErrorsStopUnlessRetried: a permanent failure (a wrong
// password, say) stops the relay at once; with retry_config_errors it is
// retried — but a lost position still stops it.
func TestConfigErrorsStopUnlessRetried(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		err     error
		retry   bool
		opensGE int // Run gives up after this many opens at least…
		stops   bool
	}{
		{"permanent stops", source.Permanent(errors.New("access denied")), false, 1, true},
		{"retried on request", source.Permanent(errors.New("access denied")), true, 3, false},
		{"lost position stops anyway", source.PositionLost("p", "purged"), true, 1, true},
	} {
		src := &sourcetest.Source{Err: tt.err}
		r := New(Config{RetryConfigErrors: tt.retry, Retry: retry.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}},
			src, (&sinktest.Sink{}).Factory, mem.At(checkpointAt("p")), testMapper(t), zerolog.Nop())
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := r.Run(ctx)
		cancel()
		if stopped := err != nil; stopped != tt.stops || src.Opens() < tt.opensGE || (tt.stops && src.Opens() != 1) {
			t.Errorf("%s: Run = %v after %d opens", tt.name, err, src.Opens())
		}
	}
}

// TestCheckpointInsideTransaction: at-least-once, the checkpoint stops
// inside a large transaction after the records acknowledged in a row, so
// that a restart re-sends only the rest of it.
func TestCheckpointInsideTransaction(t *testing.T) {
	t.Parallel()
	src := &logSource{piece: 8, sizes: []int{3, 40}}
	snk := &sinktest.Sink{Hold: true}
	store := &mem.Store{}
	r := New(Config{CheckpointInterval: time.Millisecond}, &blockingSource{logSource: src, onOpen: func() {}},
		snk.Factory, store, testMapper(t), zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		snk.AckAll(nil)
		<-done
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			cp, err := store.Load(context.Background())
			if err == nil && cp.Position == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint %+v (%v), want %s", cp, err, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for len(snk.Sent()) < 43 {
		time.Sleep(time.Millisecond)
	}
	snk.AckFirst(25, nil) // tx0's 3 and the first 22 of tx1
	waitFor("s1+22")
	snk.AckFirst(18, nil)
	waitFor("e1") // every row acknowledged: the transaction's end
}

// flakyStore fails its first loads with err.
type flakyStore struct {
	*mem.Store
	err   error
	fails int
	loads int
}

func (s *flakyStore) Load(ctx context.Context) (checkpoint.Checkpoint, error) {
	s.loads++
	if s.loads <= s.fails {
		return checkpoint.Checkpoint{}, s.err
	}
	return s.Store.Load(ctx)
}

// TestUnavailableStoreIsRetried: a store out of reach at Load (Kafka
// down: checkpoint.ErrUnavailable) is an outage the relay waits out; any
// other Load failure (a corrupt checkpoint) stops it.
func TestUnavailableStoreIsRetried(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		err   error
		stops bool
	}{
		{"unavailable", fmt.Errorf("%w: dial tcp: connection refused", checkpoint.ErrUnavailable), false},
		{"corrupt", errors.New("checkpoint is corrupt"), true},
	} {
		store := &flakyStore{Store: mem.At(checkpointAt("0/10")), err: tt.err, fails: 2}
		tx := &source.Tx{ID: "t", Rows: []source.Row{row(1)}, End: pos("0/20")}
		src := &sourcetest.Source{New: func() source.Reader { return &sourcetest.Reader{Txs: []*source.Tx{tx}} }}
		r := New(Config{CheckpointInterval: 5 * time.Millisecond, Retry: retry.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}},
			src, (&sinktest.Sink{}).Factory, store, testMapper(t), zerolog.New(zerolog.NewTestWriter(t)))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		if !tt.stops {
			for cp, _ := store.Store.Load(ctx); cp.Position != "0/20" && ctx.Err() == nil; cp, _ = store.Store.Load(ctx) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
		}
		err := <-done
		cancel()
		switch {
		case tt.stops && (err == nil || !strings.Contains(err.Error(), "corrupt") || store.loads != 1):
			t.Errorf("%s: Run = %v after %d loads; want it to stop at the first", tt.name, err, store.loads)
		case !tt.stops && (err != nil || store.loads < 3):
			t.Errorf("%s: Run = %v after %d loads; want it to retry and relay", tt.name, err, store.loads)
		}
		if cp, _ := store.Store.Load(context.Background()); !tt.stops && cp.Position != "0/20" {
			t.Errorf("%s: checkpoint %s, want 0/20 after the retries", tt.name, cp.Position)
		}
	}
}
