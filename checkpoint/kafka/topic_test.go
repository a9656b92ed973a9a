package kafka

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/retry"
)

func admin(t testing.TB, c *kfake.Cluster) sarama.ClusterAdmin {
	t.Helper()
	a, err := sarama.NewClusterAdmin(c.ListenAddrs(), saramaConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// describeTopic returns the partitions' replica counts and the
// cleanup.policy of topic.
func describeTopic(t testing.TB, a sarama.ClusterAdmin, topic string) (replicas []int, policy string) {
	t.Helper()
	md, err := a.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrNoError {
		t.Fatalf("describe %s: %v %+v", topic, err, md)
	}
	for _, p := range md[0].Partitions {
		replicas = append(replicas, len(p.Replicas))
	}
	entries, err := a.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"cleanup.policy"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		policy = e.Value
	}
	return replicas, policy
}

// TestTopicCreated: a missing topic is created by the first Load with one
// partition and compaction — not auto-created with the brokers' defaults
// (3 partitions here) — replicated as the brokers default where the
// protocol allows (Kafka ≥ 2.4), else on up to 3 brokers.
func TestTopicCreated(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		version   string
		brokers   int
		requested int16 // the replication factor asked for
		replicas  int
	}{
		{"brokers' default", "2.8.0", 2, -1, 2}, // kfake's default: 3, at most the brokers
		{"three of four brokers before 2.4", "2.3.0", 4, 3, 3},
		{"every broker of two before 2.4", "1.1.0", 2, 2, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cluster(t, kfake.NumBrokers(tt.brokers))
			var requested atomic.Int32
			requested.Store(-100)
			c.ControlKey(int16(kmsg.CreateTopics), func(r kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				for _, t := range r.(*kmsg.CreateTopicsRequest).Topics {
					requested.Store(int32(t.ReplicationFactor))
				}
				return nil, nil, false
			})
			kc := kafkaConfig(c)
			kc.Version = tt.version
			s := newStore(t, kc, "orders", Options{})
			wantNotFound(t, s)
			replicas, policy := describeTopic(t, admin(t, c), DefaultTopic)
			if len(replicas) != 1 || replicas[0] != tt.replicas || policy != "compact" || requested.Load() != int32(tt.requested) {
				t.Fatalf("created asking for replication factor %d, with replicas per partition %v, cleanup.policy %q; want %d, [%d], compact",
					requested.Load(), replicas, policy, tt.requested, tt.replicas)
			}
			wantPosition(t, s, save(t, s, "mysql-bin.000001:4"))
		})
	}
}

// TestSaveCreatesTopic: Save before any Load creates the topic as well.
func TestSaveCreatesTopic(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	s := newStore(t, kafkaConfig(c), "orders", Options{Transactional: true})
	want := save(t, s, "mysql-bin.000001:4")
	if replicas, policy := describeTopic(t, admin(t, c), DefaultTopic); len(replicas) != 1 || policy != "compact" {
		t.Fatalf("partitions %v, cleanup.policy %q", replicas, policy)
	}
	wantPosition(t, s, want)
}

// TestWrongTopicIsPermanent: a topic that exists with more than one
// partition, or without compaction alone, stops the relay (a permanent
// error) naming the fix, at Load and at Save.
func TestWrongTopicIsPermanent(t *testing.T) {
	t.Parallel()
	compact, del, both := "compact", "delete", "compact,delete"
	for _, tt := range []struct {
		name       string
		partitions int32
		policy     *string
		want       []string
	}{
		{"two partitions", 2, &compact, []string{"has 2 partitions; it must have exactly 1", "set checkpoint.kafka.topic to a new name"}},
		{"delete", 1, &del, []string{"cleanup.policy=delete; it must be compact alone", "--add-config cleanup.policy=compact"}},
		{"the brokers' default (delete)", 1, nil, []string{"cleanup.policy=delete", "kafka-configs.sh"}},
		{"compact and delete", 1, &both, []string{"cleanup.policy=compact,delete", "--entity-name " + DefaultTopic}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cluster(t)
			cfg := map[string]*string{}
			if tt.policy != nil {
				cfg["cleanup.policy"] = tt.policy
			}
			if err := admin(t, c).CreateTopic(DefaultTopic, &sarama.TopicDetail{NumPartitions: tt.partitions, ReplicationFactor: 1, ConfigEntries: cfg}, false); err != nil {
				t.Fatal(err)
			}
			s := newStore(t, kafkaConfig(c), "orders", Options{})
			_, loadErr := s.Load(testContext(t))
			saveErr := s.Save(testContext(t), cp("mysql-bin.000001:4"))
			for what, err := range map[string]error{"Load": loadErr, "Save": saveErr} {
				if err == nil || !retry.IsPermanent(err) || errors.Is(err, checkpoint.ErrUnavailable) {
					t.Fatalf("%s: %v; want a permanent error", what, err)
				}
				for _, w := range append(tt.want, DefaultTopic) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %q lacks %q", what, err, w)
					}
				}
			}
		})
	}
}
