package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/sink"
	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

// op is what the store was doing when the brokers refused, for the ACL
// an error names.
type op int

const (
	opConnect     op = iota
	opDescribe       // metadata, configuration
	opRead           // ListOffsets, Fetch
	opCreate         // CreateTopics
	opWrite          // the idempotent producer
	opTransaction    // the transactional producer
)

// what each op needs on the positions topic, in words.
var topicOps = map[op]string{
	opConnect:     "Describe",
	opDescribe:    "Describe",
	opRead:        "Read and Describe",
	opCreate:      "Create",
	opWrite:       "Write",
	opTransaction: "Write",
}

// classify marks err for the relay's retry decision: a refused ACL or a
// TLS/SASL mistake is permanent (sink.Permanent, naming the ACL or the
// setting); a broker out of reach is checkpoint.ErrUnavailable (retried);
// anything else is returned as it is.
func (s *Store) classify(err error, o op) error {
	switch {
	case err == nil:
		return nil
	case permanent(err), errors.Is(err, checkpoint.ErrUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	if denied := s.denied(err, o); denied != nil {
		return sink.Permanent(denied)
	}
	if explained := s.kcfg.Explain(err); permanent(explained) {
		return explained
	}
	if transient(err) {
		return fmt.Errorf("%w: %w", checkpoint.ErrUnavailable, err)
	}
	return err
}

// permanent is the relay's permanence predicate (internal/retry's
// IsPermanent), which the sink's and the sources' errors answer.
func permanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// transient reports the failures a broker outage or a leader election
// causes: trying again later may succeed.
func transient(err error) bool {
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		switch kerr {
		case sarama.ErrNotLeaderForPartition, sarama.ErrLeaderNotAvailable, sarama.ErrUnknownTopicOrPartition,
			sarama.ErrRequestTimedOut, sarama.ErrBrokerNotAvailable, sarama.ErrReplicaNotAvailable,
			sarama.ErrNetworkException, sarama.ErrNotEnoughReplicas, sarama.ErrNotEnoughReplicasAfterAppend,
			sarama.ErrNotController, sarama.ErrKafkaStorageError, sarama.ErrFencedLeaderEpoch,
			sarama.ErrUnknownLeaderEpoch, sarama.ErrOffsetNotAvailable, sarama.ErrConsumerCoordinatorNotAvailable,
			sarama.ErrNotCoordinatorForConsumer, sarama.ErrOffsetsLoadInProgress, sarama.ErrConcurrentTransactions:
			return true
		}
		return false
	}
	var cerr sarama.ConfigurationError
	if errors.As(err, &cerr) {
		return false
	}
	// Anything else that is not the brokers' answer — connection refused or
	// dropped, no broker reachable, a timeout — is an outage.
	var perr sarama.ProducerErrors
	if errors.As(err, &perr) && len(perr) > 0 {
		return transient(perr[0].Err)
	}
	return true
}

// fixError is a failure an operator must fix: what is wrong, and the
// exact change (`outboxrelay check` prints them apart).
type fixError struct {
	problem string
	fix     string
	err     error // the brokers' answer, if any
}

func (e *fixError) Error() string {
	s := e.problem
	if e.err != nil {
		s += " (" + e.err.Error() + ")"
	}
	return s + "; fix: " + e.fix
}

func (e *fixError) Unwrap() error { return e.err }

// denied explains an authorization failure with the ACL to grant, or
// returns nil.
func (s *Store) denied(err error, o op) error {
	principal := "User:RELAY"
	switch {
	case s.kcfg.SASL.Mechanism == sinkkafka.MechanismOAuthBearer:
		principal = "User:PRINCIPAL (the token's)"
	case s.kcfg.SASL.User != "":
		principal = "User:" + s.kcfg.SASL.User
	}
	acl := fmt.Sprintf("kafka-acls.sh --bootstrap-server %s --add --allow-principal %s", s.kcfg.Brokers[0], principal)
	switch {
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed):
		return &fixError{err: err,
			problem: fmt.Sprintf("kafka does not allow %s %s on the positions topic %s (checkpoint.kafka.topic)", principal, topicOps[o], s.cfg.Topic),
			fix:     fmt.Sprintf("grant the relay what it needs on it: %s --operation Read --operation Write --operation Describe --operation Create --topic %s", acl, s.cfg.Topic)}
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed):
		id := sinkkafka.TransactionalID(s.name)
		return &fixError{err: err,
			problem: fmt.Sprintf("kafka does not allow %s to use the transactional id %s (relay.name %s, relay.delivery exactly-once)", principal, id, s.name),
			fix:     fmt.Sprintf("%s --operation Write --operation Describe --transactional-id %s", acl, id)}
	case errors.Is(err, sarama.ErrClusterAuthorizationFailed) && o == opCreate:
		return &fixError{err: err,
			problem: fmt.Sprintf("kafka does not allow %s to create the positions topic %s", principal, s.cfg.Topic),
			fix: fmt.Sprintf("grant Create on it (%s --operation Create --topic %s), or create it yourself: kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions 1 --config cleanup.policy=compact",
				acl, s.cfg.Topic, s.kcfg.Brokers[0], s.cfg.Topic)}
	case errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return &fixError{err: err,
			problem: fmt.Sprintf("kafka does not allow %s the idempotent producer the checkpoint is written with", principal),
			fix:     fmt.Sprintf("%s --operation IdempotentWrite --cluster", acl)}
	}
	return nil
}
