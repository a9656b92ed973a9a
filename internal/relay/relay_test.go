package relay

import (
	"context"
	"fmt"
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
