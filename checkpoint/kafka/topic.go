package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/sink"
)

// topicState is what the brokers say of the positions topic.
type topicState struct {
	exists     bool
	created    bool // by this call
	partitions int
	// policy is its cleanup.policy, "" when the brokers would not say
	// (DescribeConfigs not granted).
	policy string
}

// topic checks the positions topic, creating it when it is missing and
// create is set. A topic the store cannot work with is a permanent error
// naming the fix: with more than one partition the newest position of a
// relay is not the last record of one log, and without compaction (or
// with deletion beside it) an idle relay's position expires with
// retention.ms and the relay would start over.
func (s *Store) topic(ctx context.Context, client sarama.Client, create bool) (topicState, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return topicState{}, s.classify(err, opDescribe)
	}
	// admin is not closed: that would close client, which the caller owns.
	st, err := s.describe(admin)
	if err != nil {
		return st, err
	}
	if !st.exists && create {
		if err := s.create(admin, client); err != nil {
			return st, err
		}
		// The new topic's leader may take a moment to be known.
		for i := 0; ; i++ {
			st, err = s.describe(admin)
			if err == nil && st.exists {
				break
			}
			if i == 20 || ctx.Err() != nil {
				if err == nil {
					err = fmt.Errorf("topic %s was created but the brokers do not show it yet", s.cfg.Topic)
				}
				return st, s.classify(err, opDescribe)
			}
			time.Sleep(100 * time.Millisecond)
		}
		st.created = true
		s.log.Info().Str("topic", s.cfg.Topic).Msg("created the positions topic (1 partition, cleanup.policy=compact)")
	}
	if !st.exists {
		return st, nil
	}
	if err := s.judge(st); err != nil {
		return st, err
	}
	return st, nil
}

// describe reads the topic's partitions and cleanup.policy.
func (s *Store) describe(admin sarama.ClusterAdmin) (topicState, error) {
	md, err := admin.DescribeTopics([]string{s.cfg.Topic})
	if err != nil {
		return topicState{}, s.classify(fmt.Errorf("describe topic %s: %w", s.cfg.Topic, err), opDescribe)
	}
	var st topicState
	for _, t := range md {
		if t.Name != s.cfg.Topic {
			continue
		}
		switch {
		case errors.Is(t.Err, sarama.ErrUnknownTopicOrPartition):
			return st, nil
		case !errors.Is(t.Err, sarama.ErrNoError):
			return st, s.classify(fmt.Errorf("describe topic %s: %w", s.cfg.Topic, t.Err), opDescribe)
		}
		st.exists, st.partitions = true, len(t.Partitions)
	}
	if !st.exists {
		return st, nil
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: s.cfg.Topic, ConfigNames: []string{"cleanup.policy"}})
	switch {
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		// DescribeConfigs is not among what the relay needs: go on
		// without knowing, and say so.
		s.log.Warn().Str("topic", s.cfg.Topic).Msg("the brokers do not let the relay read the positions topic's cleanup.policy (DescribeConfigs): make sure it is compact, or an idle relay's position expires with retention.ms")
	case err != nil:
		return st, s.classify(fmt.Errorf("describe the configuration of topic %s: %w", s.cfg.Topic, err), opDescribe)
	}
	for _, e := range entries {
		if e.Name == "cleanup.policy" {
			st.policy = e.Value
		}
	}
	return st, nil
}

// judge refuses a topic the store cannot keep positions in.
func (s *Store) judge(st topicState) error {
	t, b := s.cfg.Topic, s.kcfg.Brokers[0]
	if st.partitions != 1 {
		return sink.Permanent(&fixError{
			problem: fmt.Sprintf("positions topic %s has %d partitions; it must have exactly 1, so that a relay's newest position is the last record of its key in one log", t, st.partitions),
			fix:     fmt.Sprintf("set checkpoint.kafka.topic to a new name (the relay creates it) and move the position there with `outboxrelay checkpoint set`; partitions cannot be removed from %s", t)})
	}
	if st.policy != "" && !compactOnly(st.policy) {
		return sink.Permanent(&fixError{
			problem: fmt.Sprintf("positions topic %s has cleanup.policy=%s; it must be compact alone, or the position of a relay that saved nothing for retention.ms is deleted and the relay starts over", t, st.policy),
			fix:     fmt.Sprintf("kafka-configs.sh --bootstrap-server %s --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact", b, t)})
	}
	return nil
}

func compactOnly(policy string) bool {
	return strings.ReplaceAll(strings.ToLower(policy), " ", "") == "compact"
}

// create makes the topic: one partition, compacted, replicated as the
// brokers' default (default.replication.factor) where the protocol
// lets the request leave it to them (CreateTopics v4, Kafka 2.4), else
// on up to 3 brokers.
func (s *Store) create(admin sarama.ClusterAdmin, client sarama.Client) error {
	compact := "compact"
	detail := &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: -1, ConfigEntries: map[string]*string{"cleanup.policy": &compact}}
	if v, _ := sarama.ParseKafkaVersion(s.kcfg.Version); !v.IsAtLeast(sarama.V2_4_0_0) {
		detail.ReplicationFactor = int16(min(3, len(client.Brokers())))
	}
	err := admin.CreateTopic(s.cfg.Topic, detail, false)
	if errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return nil // another relay was quicker
	}
	if err != nil {
		return s.classify(fmt.Errorf("create positions topic %s: %w", s.cfg.Topic, err), opCreate)
	}
	return nil
}
