package kafka

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/sink"
)

func sendN(t *testing.T, p *Producer, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := p.Send(context.Background(), sink.Record{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(i))}, func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
}

// committed returns what a read_committed consumer sees on topics.
func committed(t *testing.T, b *devbroker.Broker, topics string) []devbroker.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := devbroker.CollectUntilIdle(ctx, []string{b.Addr()}, topics, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func txnBroker(t *testing.T) *devbroker.Broker {
	t.Helper()
	b, err := devbroker.Start(devbroker.Options{Partitions: 3, Topics: []string{"t", "pos"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestTransactionalCommit: records are invisible to read_committed
// consumers until Commit, which adds the position record in the same
// transaction; what an instance sent after its last commit never shows,
// even once a new instance with the same id took over.
func TestTransactionalCommit(t *testing.T) {
	t.Parallel()
	b := txnBroker(t)
	tx := func(c *Config) { c.TransactionalID = "outboxrelay-t1" }
	p := testProducer(t, b, tx)
	sendN(t, p, "t", 0, 100)
	if got := committed(t, b, "^(t|pos)$"); len(got) != 0 {
		t.Fatalf("%d records visible before the commit", len(got))
	}
	if err := p.Commit(context.Background(), sink.Record{Topic: "pos", Key: []byte("t1"), Value: []byte("p100")}); err != nil {
		t.Fatal(err)
	}
	sendN(t, p, "t", 100, 10) // the next transaction, never committed
	time.Sleep(100 * time.Millisecond)
	p.Abort()
	_ = p.Close()

	p2 := testProducer(t, b, tx) // aborts what p left open
	defer p2.Close()
	got := committed(t, b, "^(t|pos)$")
	var recs, pos int
	for _, r := range got {
		switch r.Topic {
		case "t":
			if n, _ := strconv.Atoi(string(r.Value)); n >= 100 {
				t.Errorf("uncommitted record %s is visible", r.Value)
			}
			recs++
		case "pos":
			pos++
		}
	}
	if recs != 100 || pos != 1 {
		t.Fatalf("visible: %d records and %d positions; want 100 and 1", recs, pos)
	}
}

// TestTransactionalFenced: a second producer with the same transactional
// id fences the first: the first's commit fails with sink.ErrFenced,
// permanently, and none of its records show; the second commits.
func TestTransactionalFenced(t *testing.T) {
	t.Parallel()
	b := txnBroker(t)
	tx := func(c *Config) { c.TransactionalID = "outboxrelay-t2" }
	zombie := testProducer(t, b, tx)
	defer zombie.Close()
	sendN(t, zombie, "t", 0, 20)
	time.Sleep(100 * time.Millisecond) // in flight, not committed

	fresh := testProducer(t, b, tx)
	defer fresh.Close()
	sendN(t, zombie, "t", 20, 5)
	err := zombie.Commit(context.Background(), sink.Record{Topic: "pos", Key: []byte("t2"), Value: []byte("zombie")})
	if !errors.Is(err, sink.ErrFenced) || !retry.IsPermanent(err) {
		t.Fatalf("zombie commit: %v; want a permanent sink.ErrFenced", err)
	}
	sendN(t, fresh, "t", 1000, 3)
	if err := fresh.Commit(context.Background(), sink.Record{Topic: "pos", Key: []byte("t2"), Value: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	for _, r := range committed(t, b, "^(t|pos)$") {
		if n, _ := strconv.Atoi(string(r.Value)); (r.Topic == "t" && n < 1000) || string(r.Value) == "zombie" {
			t.Errorf("the fenced producer's record %s/%s is visible", r.Topic, r.Value)
		}
	}
}

// TestTransactionalCommitDeadline: a commit that cannot finish before ctx
// ends (Kafka answers too slowly) gives up: the producer stops, and its
// transaction never becomes visible.
func TestTransactionalCommitDeadline(t *testing.T) {
	t.Parallel()
	b := txnBroker(t)
	tx := func(c *Config) { c.TransactionalID = "outboxrelay-t3" }
	p := testProducer(t, b, tx)
	unstall := b.StallProduce(2 * time.Second)
	sendN(t, p, "t", 0, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Commit(ctx, sink.Record{Topic: "pos", Key: []byte("t3"), Value: []byte("late")})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("commit past its deadline: %v", err)
	}
	t.Logf("commit gave up after %s", time.Since(start).Round(time.Millisecond))
	unstall()
	_ = p.Close()
	p2 := testProducer(t, b, tx)
	defer p2.Close()
	if got := committed(t, b, "^(t|pos)$"); len(got) != 0 {
		t.Fatalf("%d records of the abandoned transaction are visible", len(got))
	}
}

// TestTransactionalAbortFindsFence: a producer that failed for another
// reason (its database connection) and aborts learns from the abort that
// a newer producer fenced it — so that it stops instead of starting one
// that would fence the newer.
func TestTransactionalAbortFindsFence(t *testing.T) {
	t.Parallel()
	b := txnBroker(t)
	tx := func(c *Config) { c.TransactionalID = "outboxrelay-t4" }
	old := testProducer(t, b, tx)
	defer old.Close()
	sendN(t, old, "t", 0, 5)
	fresh := testProducer(t, b, tx)
	defer fresh.Close()
	if err := old.Abort(); !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("Abort of a fenced producer: %v; want sink.ErrFenced", err)
	}
	// A producer that is not fenced aborts quietly.
	sendN(t, fresh, "t", 100, 5)
	if err := fresh.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if got := committed(t, b, "^t$"); len(got) != 0 {
		t.Fatalf("%d aborted records visible", len(got))
	}
}

// TestTransactionalAbortFindsFenceWithNothingOpen: the same with nothing
// sent since the last commit (no EndTxn goes out then): the coordinator's
// view of the transactional id shows the newer producer.
func TestTransactionalAbortFindsFenceWithNothingOpen(t *testing.T) {
	t.Parallel()
	b := txnBroker(t)
	tx := func(c *Config) { c.TransactionalID = "outboxrelay-t5" }
	old := testProducer(t, b, tx)
	defer old.Close()
	sendN(t, old, "t", 0, 5)
	if err := old.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	fresh := testProducer(t, b, tx)
	defer fresh.Close()
	if err := old.Abort(); !errors.Is(err, sink.ErrFenced) {
		t.Fatalf("Abort of a fenced producer with nothing open: %v; want sink.ErrFenced", err)
	}
}
