package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
)

// event is one outbox row the workload writes.
type event struct {
	ID, AggType, AggID, Type string
	Seq                      int // per aggregate, in commit order; 0 for rolled-back events
	Payload                  string
}

// txn is one transaction of the workload.
type txn struct {
	Events    []event
	Rollback  bool // written, then rolled back: none of its events may arrive
	DeleteToo bool // the outbox rows are deleted again in the same transaction
	MultiRow  bool // one multi-row INSERT instead of one INSERT per event
	Noise     int  // rows written to the non-outbox table in the same transaction
	// Steps, End and GID describe a transaction of the grammar workload
	// (grammar_workload_test.go), written by dialect.grammar.
	Steps []step
	End   endKind
	GID   string
}

// plan is a workload: committed transactions interleaved with rolled-back
// ones, and the events that must arrive, in commit order.
type plan struct {
	Txns []txn
	Want []event
}

// makePlan spreads rows over txns committed transactions of mixed sizes (1
// to 2×average-1) across aggregates, adds rollbacks rolled-back ones, and
// marks some transactions insert+delete, multi-row, or noisy.
func makePlan(seed int64, prefix string, txns, rows, aggregates, rollbacks int) plan {
	rng := rand.New(rand.NewSource(seed))
	sizes := make([]int, txns)
	for i := range sizes {
		sizes[i] = rows / txns
	}
	for i := 0; i < rows%txns; i++ {
		sizes[i]++
	}
	// Move rows between random pairs to mix sizes, keeping the total.
	for i := 0; i < txns*4; i++ {
		a, b := rng.Intn(txns), rng.Intn(txns)
		if n := rng.Intn(sizes[a]); a != b && n > 0 {
			sizes[a] -= n
			sizes[b] += n
		}
	}
	seq := map[string]int{}
	var p plan
	nextID := 0
	mk := func(committed bool) event {
		agg := "agg-" + strconv.Itoa(rng.Intn(aggregates))
		e := event{
			ID:      fmt.Sprintf("%s-%06d", prefix, nextID),
			AggType: []string{"order", "customer", "payment"}[rng.Intn(3)],
			AggID:   agg,
			Type:    []string{"Created", "Updated", "Shipped"}[rng.Intn(3)],
		}
		nextID++
		if committed {
			seq[agg]++
			e.Seq = seq[agg]
		}
		e.Payload = fmt.Sprintf(`{"id":%q,"aggregate":%q,"seq":%d,"note":"Zoë ☃ %s"}`, e.ID, agg, e.Seq, strings.Repeat("x", rng.Intn(200)))
		return e
	}
	rb := map[int]bool{}
	for len(rb) < rollbacks {
		rb[rng.Intn(txns)] = true
	}
	for i, n := range sizes {
		if rb[i] {
			t := txn{Rollback: true, Noise: 1}
			for j := 0; j < 1+rng.Intn(5); j++ {
				t.Events = append(t.Events, mk(false))
			}
			p.Txns = append(p.Txns, t)
		}
		t := txn{MultiRow: rng.Intn(3) == 0, DeleteToo: rng.Intn(10) == 0, Noise: rng.Intn(4)}
		for j := 0; j < n; j++ {
			e := mk(true)
			t.Events = append(t.Events, e)
			p.Want = append(p.Want, e)
		}
		p.Txns = append(p.Txns, t)
	}
	return p
}

// dialect is what differs between the databases when writing the workload.
type dialect struct {
	placeholder func(i int) string // i counts from 1
	exec        func(q string, args ...any) error
	noiseSQL    string // inserts one row into the non-outbox table; takes one argument
	// grammar writes a transaction with Steps or an End other than a
	// plain commit (nil: the dialect has none).
	grammar func(t testing.TB, tx txn)
}

// write executes the plan's transactions tx[from:to].
func (p plan) write(t testing.TB, d dialect, from, to int) {
	t.Helper()
	must := func(q string, args ...any) {
		t.Helper()
		if err := d.exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, tx := range p.Txns[from:to] {
		if len(tx.Steps) > 0 || tx.End != endCommit {
			d.grammar(t, tx)
			continue
		}
		must("BEGIN")
		for i := 0; i < tx.Noise; i++ {
			must(d.noiseSQL, "noise")
		}
		if tx.MultiRow {
			// Multi-row INSERTs of at most 500 rows: placeholders are
			// limited (65535 per statement).
			for start := 0; start < len(tx.Events); start += 500 {
				var vals []string
				var args []any
				for _, e := range tx.Events[start:min(start+500, len(tx.Events))] {
					n := len(args)
					vals = append(vals, fmt.Sprintf("(%s,%s,%s,%s,%s)", d.placeholder(n+1), d.placeholder(n+2), d.placeholder(n+3), d.placeholder(n+4), d.placeholder(n+5)))
					args = append(args, e.ID, e.AggType, e.AggID, e.Type, e.Payload)
				}
				must("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES "+strings.Join(vals, ","), args...)
			}
		} else {
			q := fmt.Sprintf("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (%s,%s,%s,%s,%s)",
				d.placeholder(1), d.placeholder(2), d.placeholder(3), d.placeholder(4), d.placeholder(5))
			for _, e := range tx.Events {
				must(q, e.ID, e.AggType, e.AggID, e.Type, e.Payload)
			}
		}
		// UPDATEs and DELETEs of outbox rows must produce nothing.
		if len(tx.Events) > 0 {
			must("UPDATE outbox SET type = type WHERE id = "+d.placeholder(1), tx.Events[0].ID)
		}
		if tx.DeleteToo {
			for _, e := range tx.Events {
				must("DELETE FROM outbox WHERE id = "+d.placeholder(1), e.ID)
			}
		}
		if tx.Rollback {
			must("ROLLBACK")
		} else {
			must("COMMIT")
		}
	}
}

// committedBefore counts the events wanted from p.Txns[:n].
func (p plan) committedBefore(n int) int {
	c := 0
	for _, tx := range p.Txns[:n] {
		if !tx.Rollback {
			c += len(tx.Events)
		}
	}
	return c
}

// verifyExactlyOnce checks that got holds every wanted event exactly once,
// mapped as the defaults say, with per-key order kept.
func verifyExactlyOnce(t testing.TB, got []devbroker.Record, want []event) {
	t.Helper()
	byID := make(map[string]event, len(want))
	for _, e := range want {
		byID[e.ID] = e
	}
	seen := map[string]int{}
	sort.SliceStable(got, func(i, j int) bool {
		if got[i].Topic != got[j].Topic {
			return got[i].Topic < got[j].Topic
		}
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	keyPartition := map[string]int32{}
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, r := range got {
		id, _ := r.Header(outbox.HeaderID)
		seen[id]++
		e, ok := byID[id]
		if !ok {
			fail("unexpected record id %q (rolled back or foreign): %s", id, r)
			continue
		}
		if seen[id] > 1 {
			fail("duplicate record id %q", id)
			continue
		}
		if string(r.Key) != e.AggID || r.Topic != "outbox.event."+e.AggType || string(r.Value) != e.Payload {
			fail("record %s mapped wrong: topic %q key %q value %q", id, r.Topic, r.Key, r.Value)
		}
		if typ, _ := r.Header(outbox.HeaderType); typ != e.Type {
			fail("record %s: type header %q, want %q", id, typ, e.Type)
		}
		if pos, _ := r.Header(outbox.HeaderPosition); pos == "" {
			fail("record %s has no %s header", id, outbox.HeaderPosition)
		}
		if _, ok := r.Header(outbox.HeaderIndex); !ok {
			fail("record %s has no %s header", id, outbox.HeaderIndex)
		}
		if p, ok := keyPartition[e.AggType+"/"+e.AggID]; ok && p != r.Partition {
			fail("key %s landed on partitions %d and %d", e.AggID, p, r.Partition)
		}
		keyPartition[e.AggType+"/"+e.AggID] = r.Partition
	}
	// Per-key order: within each topic-partition, an aggregate's sequence
	// numbers must increase. (An aggregate's events go to up to three
	// topics, by aggregatetype; order is per key within a topic.)
	perTopicKey := map[string]int{}
	for _, r := range got {
		id, _ := r.Header(outbox.HeaderID)
		e, ok := byID[id]
		if !ok {
			continue
		}
		k := r.Topic + "/" + e.AggID
		if e.Seq <= perTopicKey[k] {
			fail("order broken for key %s in %s: seq %d after %d", e.AggID, r.Topic, e.Seq, perTopicKey[k])
		}
		perTopicKey[k] = e.Seq
	}
	for _, e := range want {
		if seen[e.ID] == 0 {
			fail("lost event %s (aggregate %s seq %d)", e.ID, e.AggID, e.Seq)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d records, want exactly %d", len(got), len(want))
	}
}

// runningRelay is a relay built from YAML exactly as `outboxrelay run`
// builds it, running in this process.
type runningRelay struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog waits until the relay has logged a line containing s.
func (rr *runningRelay) waitLog(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(rr.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("relay did not log %q within 30s; logs:\n%s", s, rr.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startRelay(t testing.TB, yaml string) *runningRelay {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	r, store, err := cli.Build(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningRelay{cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() {
		err := r.Run(ctx)
		store.Close()
		rr.done <- err
	}()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

// stop shuts the relay down gracefully and fails t if it did not exit
// cleanly.
func (rr *runningRelay) stop(t testing.TB) {
	t.Helper()
	if rr.cancel == nil {
		return
	}
	rr.cancel()
	rr.cancel = nil
	select {
	case err := <-rr.done:
		if err != nil {
			t.Errorf("relay exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("relay did not stop within 60s")
	}
}

// startBroker starts an in-process Kafka (kfake) for one test.
func startBroker(t testing.TB, partitions int) *devbroker.Broker {
	t.Helper()
	b, err := devbroker.Start(devbroker.Options{Addr: "127.0.0.1:0", Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func collect(t testing.TB, b *devbroker.Broker, n int, within time.Duration) []devbroker.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	recs, err := devbroker.CollectN(ctx, []string{b.Addr()}, `outbox\.event\..*`, n)
	if err != nil {
		t.Fatalf("waiting for %d records: %v", n, err)
	}
	return recs
}

func collectAll(t testing.TB, b *devbroker.Broker) []devbroker.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{b.Addr()}, `outbox\.event\..*`, 1500*time.Millisecond)
	if err != nil {
		t.Fatalf("collecting records: %v", err)
	}
	return recs
}
