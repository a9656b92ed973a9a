package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/preflight"
)

// Preflight is `outboxrelay check`'s view of the store: the positions
// topic (there and usable, or to be created), what it holds for the relay
// (read as Load reads it), and, for an exactly-once relay, whether the
// brokers accept its transaction timeout. startNote says where a relay
// without a position starts. It writes nothing — it creates no topic and
// starts no producer, so it never takes the relay's transactional id
// from a running relay. cp is the stored position (ok false when none).
func (s *Store) Preflight(ctx context.Context, startNote string) (checks []preflight.Check, cp checkpoint.Checkpoint, ok bool) {
	const name = "checkpoint"
	fail := func(err error, fix string) []preflight.Check {
		var fe *fixError
		if errors.As(err, &fe) {
			detail := fe.problem
			if fe.err != nil {
				detail += " (" + fe.err.Error() + ")"
			}
			return []preflight.Check{preflight.Fail(name, detail, fe.fix)}
		}
		return []preflight.Check{preflight.Fail(name, err.Error(), fix)}
	}
	client, done, err := s.connect(ctx)
	if err != nil {
		return fail(err, "see kafka.connect"), cp, false
	}
	defer done()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fail(err, "see kafka.connect"), cp, false
	}
	where := fmt.Sprintf("topic %s, key %s", s.cfg.Topic, s.name)
	st, err := s.describe(admin)
	switch {
	case err != nil:
		return fail(err, "the relay's principal must be allowed to describe the positions topic"), cp, false
	case !st.exists:
		checks = append(checks, preflight.Pass(name, "the positions topic %s does not exist yet: the relay creates it at its first start (1 partition, cleanup.policy=compact; it needs Create on it); with no position the relay will start at %s", s.cfg.Topic, startNote))
	default:
		if err := s.judge(st); err != nil {
			return append(fail(err, ""), s.transactionCheck(admin)...), cp, false
		}
		cp, err = s.load(ctx, false)
		switch {
		case errors.Is(err, checkpoint.ErrNotFound):
			checks = append(checks, preflight.Pass(name, "no position yet at %s: the relay will start at %s", where, startNote))
		case err != nil:
			checks = append(checks, fail(err, "the relay's principal needs Read and Describe on the positions topic")...)
		default:
			ok = true
			c := preflight.Pass(name, "%s at %s, written %s (%s ago)", cp.Position, where, cp.UpdatedAt.Format(time.RFC3339), time.Since(cp.UpdatedAt).Round(time.Second))
			if st.policy == "" {
				c = preflight.Warn(name, c.Detail+"; the brokers do not tell the topic's cleanup.policy (DescribeConfigs refused)",
					fmt.Sprintf("make sure it is compact, or an idle relay's position expires: kafka-configs.sh --bootstrap-server %s --describe --entity-type topics --entity-name %s", s.kcfg.Brokers[0], s.cfg.Topic))
			}
			checks = append(checks, c)
		}
	}
	return append(checks, s.transactionCheck(admin)...), cp, ok
}

// transactionCheck compares kafka.transaction_timeout with the brokers'
// transaction.max.timeout.ms, for an exactly-once relay: a producer
// asking for more is refused when it starts.
func (s *Store) transactionCheck(admin sarama.ClusterAdmin) []preflight.Check {
	if !s.o.Transactional {
		return nil
	}
	const name = "kafka.transaction_timeout"
	want := s.kcfg.TransactionTimeout
	unknown := func(why string) []preflight.Check {
		return []preflight.Check{preflight.Warn(name, fmt.Sprintf("kafka.transaction_timeout is %s; the brokers' transaction.max.timeout.ms is unknown (%s)", want, why),
			fmt.Sprintf("make sure it is at least %d on every broker (kafka-configs.sh --bootstrap-server %s --describe --entity-type brokers --all), or the exactly-once producer is refused", want.Milliseconds(), s.kcfg.Brokers[0]))}
	}
	brokers, _, err := admin.DescribeCluster()
	if err != nil || len(brokers) == 0 {
		return unknown(fmt.Sprintf("describe the cluster: %v", err))
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.BrokerResource, Name: strconv.Itoa(int(brokers[0].ID())), ConfigNames: []string{"transaction.max.timeout.ms"}})
	if err != nil {
		return unknown(fmt.Sprintf("DescribeConfigs: %v", err))
	}
	for _, e := range entries {
		if e.Name != "transaction.max.timeout.ms" {
			continue
		}
		ms, err := strconv.ParseInt(e.Value, 10, 64)
		if err != nil {
			return unknown(fmt.Sprintf("%q", e.Value))
		}
		brokerMax := time.Duration(ms) * time.Millisecond
		if brokerMax < want {
			return []preflight.Check{preflight.Fail(name, fmt.Sprintf("kafka.transaction_timeout is %s, more than the brokers' transaction.max.timeout.ms (%d): the exactly-once producer would be refused", want, ms),
				fmt.Sprintf("set kafka.transaction_timeout to %s or less, or raise transaction.max.timeout.ms on every broker", brokerMax))}
		}
		return []preflight.Check{preflight.Pass(name, "kafka.transaction_timeout %s ≤ the brokers' transaction.max.timeout.ms (%d)", want, ms)}
	}
	return unknown("the brokers did not return it")
}
