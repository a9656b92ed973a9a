package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/sink/sinktest"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/sourcetest"
)

// logSource is a fake log of transactions that resumes like the real
// sources: after a transaction's end ("eK"), or inside one ("sK+N": its
// first N rows delivered), handing large transactions out in pieces.
type logSource struct {
	sizes []int // rows per transaction; 0: a transaction without outbox rows
	piece int
}

func (l *logSource) Kind() string                            { return "fake" }
func (l *logSource) Resolve(context.Context) (string, error) { return "", nil }

func (l *logSource) Open(_ context.Context, from string) (source.Reader, error) {
	first, skip := 0, 0
	switch {
	case strings.HasPrefix(from, "e"):
		k, _ := strconv.Atoi(from[1:])
		first = k + 1
	case strings.HasPrefix(from, "s"):
		k, n, _ := strings.Cut(from[1:], "+")
		first, _ = strconv.Atoi(k)
		skip, _ = strconv.Atoi(n)
	}
	var txs []*source.Tx
	for k := first; k < len(l.sizes); k++ {
		id := fmt.Sprintf("tx%d", k)
		start := sourcetest.Start(fmt.Sprintf("s%d", k))
		i := 0
		if k == first {
			i = skip
		}
		for {
			tx := &source.Tx{ID: id, FirstIndex: i}
			if l.sizes[k] > 0 {
				tx.Start = start
			}
			for ; i < l.sizes[k] && len(tx.Rows) < l.piece; i++ {
				tx.Rows = append(tx.Rows, source.Row{Table: outboxTable, Values: []any{fmt.Sprintf("%d.%d", k, i), "order", "k", "Created", "{}"}})
			}
			if i >= l.sizes[k] {
				tx.End = sourcetest.Pos(fmt.Sprintf("e%d", k))
			}
			txs = append(txs, tx)
			if tx.End != nil {
				break
			}
		}
	}
	return &sourcetest.Reader{Txs: txs, Err: source.ErrEndOfRange}, nil
}

// brokerStore keeps positions as records of a fake transactional broker,
// as the Kafka store does.
type brokerStore struct{ b *sinktest.Broker }

func (s brokerStore) record(cp checkpoint.Checkpoint) (sink.Record, error) {
	v, err := json.Marshal(cp)
	return sink.Record{Topic: "positions", Key: []byte("relay"), Value: v}, err
}

func (s brokerStore) Load(context.Context) (checkpoint.Checkpoint, error) {
	var cp checkpoint.Checkpoint
	found := false
	for _, r := range s.b.Committed() {
		if r.Topic == "positions" {
			found = true
			if err := json.Unmarshal(r.Value, &cp); err != nil {
				return cp, err
			}
		}
	}
	if !found {
		return cp, checkpoint.ErrNotFound
	}
	return cp, nil
}
func (s brokerStore) Save(context.Context, checkpoint.Checkpoint) error {
	return errors.New("an exactly-once relay never calls Save")
}
func (s brokerStore) Close() error { return nil }

func eosRelay(t *testing.T, src Source, b *sinktest.Broker, mod func(*Config)) *Relay {
	t.Helper()
	store := brokerStore{b}
	cfg := Config{Delivery: ExactlyOnce, CommitInterval: time.Millisecond, CommitMaxRecords: 5, PositionRecord: store.record,
		MaxFailuresAtPosition: -1, Retry: retry.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
	if mod != nil {
		mod(&cfg)
	}
	m, err := outbox.New(outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, src, b.Factory, store, m, zerolog.Nop())
}

// TestExactlyOnceAcrossFailedCommits: commits fail at random (each failure
// ends the session; the next producer fences the last); what a
// read_committed consumer sees is every row exactly once, in order, and
// positions inside large transactions are committed too.
func TestExactlyOnceAcrossFailedCommits(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(1))
	src := &logSource{piece: 4}
	want := 0
	for k := 0; k < 60; k++ {
		n := rng.Intn(4)
		if k%10 == 3 {
			n = 30 // larger than a Kafka transaction (commit_max_records 5)
		}
		src.sizes = append(src.sizes, n)
		want += n
	}
	b := &sinktest.Broker{FailCommit: func(n int) error {
		if rng.Intn(3) == 0 {
			return fmt.Errorf("commit %d refused", n)
		}
		return nil
	}}
	r := eosRelay(t, src, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got []string
	inside := 0
	for _, rec := range b.Committed() {
		if rec.Topic == "positions" {
			var cp checkpoint.Checkpoint
			_ = json.Unmarshal(rec.Value, &cp)
			if strings.Contains(cp.Position, "+") {
				inside++
			}
			continue
		}
		id, _ := recordHeader(rec, outbox.HeaderID)
		got = append(got, id)
	}
	if len(got) != want {
		t.Errorf("%d records visible, want %d (each row once)", len(got), want)
	}
	next := map[int]int{}
	lastTx := -1
	for _, id := range got {
		k, i := 0, 0
		fmt.Sscanf(id, "%d.%d", &k, &i)
		if k < lastTx || i != next[k] {
			t.Fatalf("record %s out of order or repeated (expected row %d of tx %d, last tx %d)", id, next[k], k, lastTx)
		}
		next[k], lastTx = i+1, k
	}
	if inside == 0 {
		t.Error("no position inside a transaction was committed")
	}
	t.Logf("%d records in %d sessions; %d positions inside transactions", len(got), b.Sessions(), inside)
}

// TestExactlyOnceFencedStops: another producer with the same identity
// takes over: the relay's next commit is fenced, and it stops at once
// (no retry, which would fence the newer one) with sink.ErrFenced.
func TestExactlyOnceFencedStops(t *testing.T) {
	t.Parallel()
	src := &logSource{piece: 4, sizes: []int{2, 2}}
	b := &sinktest.Broker{}
	// The other instance starts after this one made its producer (and
	// read its position), before its first commit.
	r := eosRelay(t, &blockingSource{logSource: src, onOpen: func() { _, _ = b.Factory(context.Background()) }}, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("Run: %v; want it stopped, fenced", err)
	}
	if n := b.Sessions(); n != 2 {
		t.Errorf("%d producers: the fenced relay retried", n)
	}
}

// blockingSource is a logSource whose reader waits (for the log to grow)
// after its transactions, instead of ending.
type blockingSource struct {
	*logSource
	onOpen func()
}

func (s *blockingSource) Open(ctx context.Context, from string) (source.Reader, error) {
	r, err := s.logSource.Open(ctx, from)
	if err != nil {
		return nil, err
	}
	r.(*sourcetest.Reader).Err = nil
	s.onOpen()
	return r, nil
}

// TestExactlyOnceFenceFoundOnAbort: the session fails for another reason
// (the database connection) after another instance took over: the abort
// shows the fence, and the relay stops instead of starting a producer
// that would fence the newer instance.
func TestExactlyOnceFenceFoundOnAbort(t *testing.T) {
	t.Parallel()
	b := &sinktest.Broker{}
	src := &failingSource{onOpen: func() { _, _ = b.Factory(context.Background()) }}
	r := eosRelay(t, src, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("Run: %v; want it stopped, fenced", err)
	}
	if n := b.Sessions(); n != 2 {
		t.Errorf("%d producers: the fenced relay started another", n)
	}
}

// failingSource opens readers whose connection fails at once.
type failingSource struct{ onOpen func() }

func (s *failingSource) Kind() string                            { return "fake" }
func (s *failingSource) Resolve(context.Context) (string, error) { return "", nil }
func (s *failingSource) Open(context.Context, string) (source.Reader, error) {
	s.onOpen()
	return &sourcetest.Reader{Err: errors.New("connection reset by peer")}, nil
}
