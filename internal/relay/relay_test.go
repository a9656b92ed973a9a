package relay

import (
	"context"
	"errors"
	"fmt"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

type pos string

func (p pos) String() string { return string(p) }

// fakeReader hands out txs, then blocks until ctx ends.
type fakeReader struct {
	mu   sync.Mutex
	txs  []*source.Tx
	acks []string
}

func (r *fakeReader) Next(ctx context.Context) (*source.Tx, error) {
	r.mu.Lock()
	if len(r.txs) > 0 {
		tx := r.txs[0]
		r.txs = r.txs[1:]
		r.mu.Unlock()
		return tx, nil
	}
	r.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (r *fakeReader) Ack(_ context.Context, p source.Position) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks = append(r.acks, p.String())
	return nil
}

func (r *fakeReader) Close() error { return nil }

type fakeSource struct{ r *fakeReader }

func (s fakeSource) Kind() string                            { return "fake" }
func (s fakeSource) Resolve(context.Context) (string, error) { return "start", nil }
func (s fakeSource) Open(context.Context, string) (source.Reader, error) {
	return s.r, nil
}

// gatedSink blocks Send while the gate is closed, like a producer whose
// in-flight cap is reached; it acknowledges every record it accepts.
type gatedSink struct {
	gate    chan struct{}
	blocked chan struct{} // closed when a Send first blocks
	once    sync.Once
	mu      sync.Mutex
	sent    []string
	acks    sync.WaitGroup
}

func (s *gatedSink) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	select {
	case <-s.gate:
	default:
		s.once.Do(func() { close(s.blocked) })
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	s.sent = append(s.sent, string(r.Key))
	s.mu.Unlock()
	s.acks.Add(1)
	go func() {
		defer s.acks.Done()
		ack(nil)
	}()
	return nil
}

func (s *gatedSink) Abort() {}

func (s *gatedSink) Close() error {
	s.acks.Wait()
	return nil
}

type memStore struct {
	mu sync.Mutex
	cp *checkpoint.Checkpoint
}

func (m *memStore) Load(context.Context) (checkpoint.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cp == nil {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return *m.cp, nil
}

func (m *memStore) Save(_ context.Context, cp checkpoint.Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cp = &cp
	return nil
}

func (m *memStore) Close() error { return nil }

// TestStopInsideTransactionFinishesIt: a clean stop while a transaction
// handed out in pieces is half sent (the sink blocked) finishes that
// transaction, so the final checkpoint is its end and a restart sends none
// of it twice.
func TestStopInsideTransactionFinishesIt(t *testing.T) {
	t.Parallel()
	tbl := &schema.Table{Schema: "s", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload"}}
	row := func(i int) source.Row {
		return source.Row{Table: tbl, Values: []any{fmt.Sprintf("e%d", i), "order", fmt.Sprintf("k%d", i), "Created", "{}"}}
	}
	piece := func(first, n int, end source.Position) *source.Tx {
		tx := &source.Tx{ID: "tx1", FirstIndex: first, End: end}
		for i := first; i < first+n; i++ {
			tx.Rows = append(tx.Rows, row(i))
		}
		return tx
	}
	reader := &fakeReader{txs: []*source.Tx{
		{ID: "tx0", Rows: []source.Row{row(-1)}, End: pos("0/10")},
		piece(0, 3, nil),
		piece(3, 3, nil),
		piece(6, 2, pos("0/20")),
		{ID: "tx2", Rows: []source.Row{row(100)}, End: pos("0/30")}, // must not be read on stop
	}}
	// Let tx0 and the first two rows of tx1 through, then block.
	snk := &gatedSink{gate: make(chan struct{}, 3), blocked: make(chan struct{})}
	for i := 0; i < 3; i++ {
		snk.gate <- struct{}{}
	}
	store := &memStore{}
	mapper, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{CheckpointInterval: 10 * time.Millisecond, ShutdownTimeout: 10 * time.Second}, fakeSource{reader},
		func(context.Context) (sink.Sink, error) { return snk, nil }, store, mapper, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	<-snk.blocked
	time.Sleep(50 * time.Millisecond) // a checkpoint tick or more while blocked
	cancel()
	close(snk.gate) // the sink has room again
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if len(snk.sent) != 9 {
		t.Fatalf("sent %d records (%v), want tx0 and all 8 of tx1", len(snk.sent), snk.sent)
	}
	cp, err := store.Load(context.Background())
	if err != nil || cp.Position != "0/20" {
		t.Fatalf("final checkpoint %+v, %v; want the end of tx1, 0/20", cp, err)
	}
}

// failingSink accepts records and fails every acknowledgement, like a
// broker refusing them; it counts the sessions that used it.
type failingSink struct {
	mu       sync.Mutex
	sessions []time.Time
}

func (f *failingSink) factory(context.Context) (sink.Sink, error) {
	f.mu.Lock()
	f.sessions = append(f.sessions, time.Now())
	f.mu.Unlock()
	return f, nil
}

func (f *failingSink) Send(_ context.Context, _ sink.Record, ack sink.AckFunc) error {
	go ack(errors.New("refused"))
	return nil
}
func (f *failingSink) Abort()       {}
func (f *failingSink) Close() error { return nil }

// rereader hands out the same transaction at every Open, as a source does
// when the checkpoint did not move.
type rereader struct{ tx *source.Tx }

func (s rereader) Kind() string                            { return "fake" }
func (s rereader) Resolve(context.Context) (string, error) { return "0/10", nil }
func (s rereader) Open(context.Context, string) (source.Reader, error) {
	return &fakeReader{txs: []*source.Tx{s.tx}}, nil
}

// TestRepeatedFailureAtOnePositionStops: a session that connects and then
// fails again at the same checkpoint is no recovery: the backoff keeps
// growing between sessions, and after relay.max_failures_at_position of
// them the relay stops with the error instead of looping.
func TestRepeatedFailureAtOnePositionStops(t *testing.T) {
	t.Parallel()
	tbl := &schema.Table{Schema: "s", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload"}}
	tx := &source.Tx{ID: "tx1", Rows: []source.Row{{Table: tbl, Values: []any{"e1", "order", "k", "T", "{}"}}}, End: pos("0/20")}
	mapper, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fs := &failingSink{}
	r := New(Config{CheckpointInterval: 5 * time.Millisecond, MaxFailuresAtPosition: 4, Retry: retry.Policy{Initial: 20 * time.Millisecond, Max: time.Second}},
		rereader{tx}, fs.factory, &memStore{}, mapper, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "4 times in a row at checkpoint 0/10") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Run: %v; want it to stop after 4 failures at 0/10, with the cause", err)
	}
	if len(fs.sessions) != 4 {
		t.Fatalf("%d sessions, want 4", len(fs.sessions))
	}
	// No reset between the failures: the waits grow (500 ms base jitter
	// aside, each at least the last one's lower bound).
	var gaps []time.Duration
	for i := 1; i < len(fs.sessions); i++ {
		gaps = append(gaps, fs.sessions[i].Sub(fs.sessions[i-1]))
	}
	if !(gaps[2] > gaps[0]) {
		t.Errorf("gaps between sessions %v: the backoff did not grow", gaps)
	}
}
