package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"

	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

// TestNewestOfItsKeyWins: relays sharing the topic each load their own
// newest position; other keys, before and after, are ignored.
func TestNewestOfItsKeyWins(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	orders, billing := newStore(t, kc, "orders", Options{}), newStore(t, kc, "billing", Options{})
	var wantOrders, wantBilling = cp(""), cp("")
	for i := range 5 {
		wantOrders = save(t, orders, fmt.Sprintf("mysql-bin.000001:%d", 100+i))
		wantBilling = save(t, billing, fmt.Sprintf("mysql-bin.000007:%d", 900+i))
	}
	save(t, newStore(t, kc, "orders-eu", Options{}), "mysql-bin.000003:4") // a prefix is another key
	wantPosition(t, orders, wantOrders)
	wantPosition(t, billing, wantBilling)
	wantNotFound(t, newStore(t, kc, "shipping", Options{}))
}

// TestTombstoneIsNotFound: a record without a value for the key deletes
// the position (compaction then removes it too).
func TestTombstoneIsNotFound(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	s := newStore(t, kafkaConfig(c), "orders", Options{})
	save(t, s, "mysql-bin.000001:4")
	p, err := sarama.NewSyncProducer(c.ListenAddrs(), saramaConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: DefaultTopic, Partition: 0, Key: sarama.StringEncoder("orders")}); err != nil {
		t.Fatal(err)
	}
	wantNotFound(t, s)
	// A later save counts again.
	wantPosition(t, s, save(t, s, "mysql-bin.000001:400"))
}

// TestAbortedTransactionIgnored: a newer position written in a
// transaction that aborted is never returned; the committed one before it
// is — also when committed records of other relays follow.
func TestAbortedTransactionIgnored(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "orders", Options{})
	want := save(t, s, "mysql-bin.000001:100")

	zombie := txnProducer(t, c, sinkkafka.TransactionalID("orders"))
	if err := zombie.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	for _, pos := range []string{"mysql-bin.000001:200", "mysql-bin.000001:300"} {
		if _, _, err := zombie.SendMessage(positionMsg(t, s, pos)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zombie.AbortTxn(); err != nil {
		t.Fatal(err)
	}
	save(t, newStore(t, kc, "billing", Options{}), "mysql-bin.000009:4")
	wantPosition(t, s, want)

	// A committed transaction counts.
	if err := zombie.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := zombie.SendMessage(positionMsg(t, s, "mysql-bin.000001:500")); err != nil {
		t.Fatal(err)
	}
	if err := zombie.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(testContext(t))
	if err != nil || got.Position != "mysql-bin.000001:500" {
		t.Fatalf("Load after a committed transaction = %+v, %v", got, err)
	}
}

// TestOpenTransactionOfAnotherProducer: a transaction left open on the
// topic neither holds Load up nor shows its record; a position committed
// after it began — which read_committed alone would hide until that
// transaction ends — is found; one aborted after it is not.
func TestOpenTransactionOfAnotherProducer(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "orders", Options{})
	want := save(t, s, "mysql-bin.000001:100")

	// Another relay's transaction (and one writing our key), left open.
	other := txnProducer(t, c, sinkkafka.TransactionalID("billing"))
	if err := other.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.SendMessage(positionMsg(t, s, "mysql-bin.000001:999")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := s.Load(ctx)
	if err != nil || got.Position != want.Position {
		t.Fatalf("Load beside an open transaction = %+v, %v; want %s", got, err, want.Position)
	}

	// Positions committed after the open transaction began: by an
	// idempotent save, then by a transaction of the relay's own id.
	want = save(t, s, "mysql-bin.000001:200")
	wantPosition(t, s, want)
	own := txnProducer(t, c, sinkkafka.TransactionalID("orders"))
	if err := own.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := own.SendMessage(positionMsg(t, s, "mysql-bin.000001:300")); err != nil {
		t.Fatal(err)
	}
	if err := own.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(testContext(t))
	if err != nil || got.Position != "mysql-bin.000001:300" {
		t.Fatalf("Load of a transaction committed behind an open one = %+v, %v; want mysql-bin.000001:300", got, err)
	}
	// An aborted one behind the open transaction does not count; an
	// open one of our own id does not either.
	for _, end := range []func() error{own.AbortTxn, nil} {
		if err := own.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := own.SendMessage(positionMsg(t, s, "mysql-bin.000001:400")); err != nil {
			t.Fatal(err)
		}
		if end != nil {
			if err := end(); err != nil {
				t.Fatal(err)
			}
		}
		got, err = s.Load(testContext(t))
		if err != nil || got.Position != "mysql-bin.000001:300" {
			t.Fatalf("Load = %+v, %v; want mysql-bin.000001:300", got, err)
		}
	}

	// Once the other transaction ends, read_committed covers it all.
	if err := other.AbortTxn(); err != nil {
		t.Fatal(err)
	}
	if err := own.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(testContext(t))
	if err != nil || got.Position != "mysql-bin.000001:400" {
		t.Fatalf("Load after both ended = %+v, %v; want mysql-bin.000001:400", got, err)
	}
}

// TestTransactionalSaveFences: a transactional Save takes the relay's
// transactional id over: the exactly-once relay that held it (here a
// producer with an open transaction) cannot commit any more, and what it
// wrote is never read.
func TestTransactionalSaveFences(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "orders", Options{Transactional: true})
	save(t, s, "mysql-bin.000001:100")

	relay := txnProducer(t, c, sinkkafka.TransactionalID("orders"))
	if err := relay.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := relay.SendMessage(positionMsg(t, s, "mysql-bin.000001:900")); err != nil {
		t.Fatal(err)
	}
	want := save(t, s, "mysql-bin.000001:50") // checkpoint set, back in time
	err := relay.CommitTxn()
	if err == nil {
		t.Fatal("the fenced producer committed its transaction")
	}
	if !errors.Is(err, sarama.ErrProducerFenced) && !errors.Is(err, sarama.ErrInvalidProducerEpoch) {
		t.Logf("fenced producer's CommitTxn: %v", err)
	}
	wantPosition(t, s, want)
	// An idempotent store reads it alike.
	wantPosition(t, newStore(t, kc, "orders", Options{}), want)
}

// TestLoadManyRecords: a topic of 100,000 positions of 100 relays (kfake
// never compacts) is read in one Load; the time is logged, not judged.
func TestLoadManyRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 records")
	}
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "relay-42", Options{})
	save(t, s, "mysql-bin.000001:4") // creates the topic

	// One record per batch, as a relay's saves are written (a batch of
	// at most 512 bytes holds one of these records, whose position has a
	// GTID set of 20 domains), through franz-go, which pipelines them
	// faster than sarama.
	var gtids []string
	for d := range 20 {
		gtids = append(gtids, fmt.Sprintf("%d-1-%d", d, 1000000+d))
	}
	gtid := strings.Join(gtids, ",")
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerBatchMaxBytes(512), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(10000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 100_000
	began := time.Now()
	var last string
	var failed atomic.Pointer[error]
	for i := range n {
		name := fmt.Sprintf("relay-%d", i%100)
		pos := fmt.Sprintf("mysql-bin.%06d:%d@%s", 1+i/10000, 4+i, gtid)
		if name == "relay-42" {
			last = pos
		}
		v := fmt.Sprintf(`{"relay":%q,"source":"mysql","position":%q,"updated_at":"2026-01-02T03:04:05Z"}`, name, pos)
		cl.Produce(context.Background(), &kgo.Record{Topic: DefaultTopic, Partition: 0, Key: []byte(name), Value: []byte(v)}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	if err := cl.Flush(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
	t.Logf("wrote %d records in %s", n, time.Since(began).Round(time.Millisecond))

	for range 2 {
		began = time.Now()
		got, err := s.Load(testContext(t))
		if err != nil || got.Position != last {
			t.Fatalf("Load = %+v, %v; want %s", got, err, last)
		}
		t.Logf("Load read %d records in %s", n+1, time.Since(began).Round(time.Millisecond))
	}
}
