package kafka

import (
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outboxrelay/outboxrelay/preflight"
	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

func byName(checks []preflight.Check) map[string]preflight.Check {
	m := map[string]preflight.Check{}
	for _, c := range checks {
		m[c.Name] = c
	}
	return m
}

// TestPreflightWritesNothing: with no topic yet, check says it will be
// created — and does not create it.
func TestPreflightWritesNothing(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	s := newStore(t, kafkaConfig(c), "orders", Options{Transactional: true})
	checks, _, ok := s.Preflight(testContext(t), "the current binlog position")
	got := byName(checks)
	cpCheck := got["checkpoint"]
	if ok || !cpCheck.OK || !strings.Contains(cpCheck.Detail, "does not exist yet: the relay creates it") || !strings.Contains(cpCheck.Detail, "the current binlog position") {
		t.Fatalf("checks %+v", checks)
	}
	if tc := got["kafka.transaction_timeout"]; !tc.OK || tc.Warning || !strings.Contains(tc.Detail, "(900000)") {
		t.Errorf("transaction timeout check %+v", tc)
	}
	md, err := admin(t, c).DescribeTopics([]string{DefaultTopic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrUnknownTopicOrPartition {
		t.Fatalf("after check the topic is %+v, %v; want it still missing", md, err)
	}
}

// TestPreflightNeverFences: check reads the position of an exactly-once
// relay that is running — a transaction of its id open — and the relay
// can still commit afterwards.
func TestPreflightNeverFences(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "orders", Options{Transactional: true})
	want := save(t, s, "mysql-bin.000001:100")

	relay := txnProducer(t, c, sinkkafka.TransactionalID("orders"))
	if err := relay.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := relay.SendMessage(positionMsg(t, s, "mysql-bin.000001:200")); err != nil {
		t.Fatal(err)
	}
	checks, got, ok := newStore(t, kc, "orders", Options{Transactional: true}).Preflight(testContext(t), "")
	cpCheck := byName(checks)["checkpoint"]
	if !ok || got.Position != want.Position || !cpCheck.OK || !strings.Contains(cpCheck.Detail, "mysql-bin.000001:100 at topic outboxrelay.positions, key orders") {
		t.Fatalf("Preflight = %+v, %+v, %v", checks, got, ok)
	}
	if err := relay.CommitTxn(); err != nil {
		t.Fatalf("the relay's commit after check: %v", err)
	}
}

// TestPreflightRefusals: a topic the store cannot use, and a transaction
// timeout the brokers refuse, fail with their fixes.
func TestPreflightRefusals(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": "30000"}))
	if err := admin(t, c).CreateTopic(DefaultTopic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	kc := kafkaConfig(c)
	kc.TransactionTimeout = time.Minute
	checks, _, ok := newStore(t, kc, "orders", Options{Transactional: true}).Preflight(testContext(t), "")
	got := byName(checks)
	if cpCheck := got["checkpoint"]; ok || cpCheck.OK || !strings.Contains(cpCheck.Detail, "has 2 partitions") || !strings.Contains(cpCheck.Fix, "checkpoint.kafka.topic") {
		t.Errorf("checkpoint check %+v", cpCheck)
	}
	if tc := got["kafka.transaction_timeout"]; tc.OK || !strings.Contains(tc.Detail, "more than the brokers' transaction.max.timeout.ms (30000)") || !strings.Contains(tc.Fix, "30s or less") {
		t.Errorf("transaction timeout check %+v", tc)
	}
	// At-least-once relays use no transactions: no such check.
	if checks, _, _ := newStore(t, kc, "orders", Options{}).Preflight(testContext(t), ""); len(checks) != 1 {
		t.Errorf("at-least-once checks %+v", checks)
	}
}
