package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

// cluster starts an in-process kfake cluster. It creates topics on first
// use, with 3 partitions, as many brokers are set up: the store must not
// let that happen to its topic.
func cluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func kafkaConfig(c *kfake.Cluster) sinkkafka.Config {
	kc := sinkkafka.Config{Brokers: c.ListenAddrs()}
	kc.SetDefaults()
	return kc
}

// newStore is a store of relay name on c, closed with the test.
func newStore(t testing.TB, kc sinkkafka.Config, name string, o Options) *Store {
	t.Helper()
	s, err := New(Config{}, name, kc, o, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func cp(pos string) checkpoint.Checkpoint {
	return checkpoint.Checkpoint{Source: "mysql", Position: pos, UpdatedAt: time.Now().UTC().Truncate(time.Millisecond)}
}

func save(t testing.TB, s *Store, pos string) checkpoint.Checkpoint {
	t.Helper()
	c := cp(pos)
	if err := s.Save(testContext(t), c); err != nil {
		t.Fatalf("Save(%s): %v", pos, err)
	}
	return c
}

// wantPosition loads and compares.
func wantPosition(t testing.TB, s *Store, want checkpoint.Checkpoint) {
	t.Helper()
	got, err := s.Load(testContext(t))
	if err != nil {
		t.Fatalf("Load: %v; want %s", err, want.Position)
	}
	if got.Source != want.Source || got.Position != want.Position || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("Load = %+v; want %+v", got, want)
	}
}

func wantNotFound(t testing.TB, s *Store) {
	t.Helper()
	got, err := s.Load(testContext(t))
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load = %+v, %v; want ErrNotFound", got, err)
	}
}

// saramaConfig is a test client's configuration: plain sarama, as another
// application on the cluster would write.
func saramaConfig(txnID string) *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	sc.Producer.Transaction.ID = txnID
	sc.Metadata.AllowAutoTopicCreation = false
	return sc
}

// txnProducer is a transactional producer of id on c.
func txnProducer(t testing.TB, c *kfake.Cluster, id string) sarama.SyncProducer {
	t.Helper()
	p, err := sarama.NewSyncProducer(c.ListenAddrs(), saramaConfig(id))
	if err != nil {
		t.Fatalf("transactional producer %s: %v", id, err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// positionMsg is what a Save of pos by relay name writes, through the
// store's own encoding.
func positionMsg(t testing.TB, s *Store, pos string) *sarama.ProducerMessage {
	t.Helper()
	r, err := s.Record(cp(pos))
	if err != nil {
		t.Fatal(err)
	}
	return &sarama.ProducerMessage{Topic: r.Topic, Partition: 0, Key: sarama.ByteEncoder(r.Key), Value: sarama.ByteEncoder(r.Value)}
}
