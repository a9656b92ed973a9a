package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/sink"
)

// Exactly-once: with Config.TransactionalID set, the producer is
// transactional. Creating it registers the transactional id with its
// coordinator (InitProducerId), which bumps the producer epoch — fencing
// every older producer with that id — and aborts whatever transaction an
// older one left open. Records sent between commits belong to one Kafka
// transaction; Commit adds the position record and commits them all.

// FencedError is a transactional producer that Kafka no longer accepts: a
// newer one with the same transactional id took over (or the broker
// aborted its transaction after kafka.transaction_timeout). It matches
// sink.ErrFenced and is permanent: retrying would fence the newer one.
type FencedError struct {
	TransactionalID string
	Err             error
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("fenced: Kafka no longer accepts this relay's producer for transactional id %s (%v): another instance with the same relay.name took over, or this one was paused longer than kafka.transaction_timeout and the broker aborted its transaction. This instance stops; nothing it wrote after its last commit is visible to read_committed consumers", e.TransactionalID, e.Err)
}
func (e *FencedError) Unwrap() error        { return e.Err }
func (e *FencedError) Is(target error) bool { return target == sink.ErrFenced }
func (e *FencedError) Permanent() bool      { return true }

// isFencing reports whether err means the producer epoch is no longer
// current. Older brokers answer INVALID_PRODUCER_EPOCH (47) where newer
// ones answer PRODUCER_FENCED (90); both are fatal.
func isFencing(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) ||
		errors.Is(err, sarama.ErrInvalidProducerIDMapping)
}

// transactional applies the exactly-once settings to sc.
func (c *Config) transactional(sc *sarama.Config) {
	if c.TransactionalID == "" {
		return
	}
	sc.Producer.Transaction.ID = c.TransactionalID
	sc.Producer.Transaction.Timeout = c.TransactionTimeout
	// EndTxn and AddPartitionsToTxn retries: a coordinator moving or
	// loading takes seconds, not minutes.
	sc.Producer.Transaction.Retry.Max = 30
	sc.Producer.Transaction.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(50*time.Millisecond<<min(retries, 4), time.Second)
	}
}

// explainInit names the fix for a transactional producer Kafka refused to
// register.
func (c *Config) explainInit(err error) error {
	switch {
	case errors.Is(err, sarama.ErrInvalidTransactionTimeout):
		return sink.Permanent(fmt.Errorf("kafka.transaction_timeout %s is above the brokers' transaction.max.timeout.ms: lower it, or raise the brokers' setting: %w", c.TransactionTimeout, err))
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed):
		return sink.Permanent(fmt.Errorf("the relay's principal may not use transactional id %s: grant it WRITE and DESCRIBE on that TransactionalId (kafka-acls --add --allow-principal User:… --operation Write --operation Describe --transactional-id %s): %w", c.TransactionalID, c.TransactionalID, err))
	case errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return sink.Permanent(fmt.Errorf("the relay's principal may not produce idempotently: grant it IDEMPOTENT_WRITE on the cluster: %w", err))
	}
	return err
}

// Commit implements sink.Sink: it sends extra into the open transaction,
// waits until every record of it is acknowledged, and commits; then it
// begins the next transaction. When ctx ends first, the producer is
// stopped and the transaction is never committed.
func (k *Producer) Commit(ctx context.Context, extra ...sink.Record) error {
	if k.cfg.TransactionalID == "" {
		return sink.ErrNotTransactional
	}
	for _, r := range extra {
		if err := k.Send(ctx, r, func(error) {}); err != nil {
			return err
		}
	}
	if err := k.Err(); err != nil {
		return k.fenced(err) // a record failed: the transaction must not commit
	}
	done := make(chan error, 1)
	go func() { done <- k.p.CommitTxn() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// Stop producing: the commit's flush then fails fast, and
		// nothing of this transaction is committed by this producer.
		k.fail(fmt.Errorf("the Kafka transaction did not commit in time: %w", ctx.Err()))
		<-done
		return k.Err()
	}
	if err == nil {
		err = k.Err() // an acknowledgement failed while flushing
	}
	if err != nil {
		if isFencing(err) {
			err = &FencedError{TransactionalID: k.cfg.TransactionalID, Err: err}
		}
		k.fail(err)
		return k.fenced(k.Err())
	}
	if err := k.p.BeginTxn(); err != nil {
		err = fmt.Errorf("begin the next Kafka transaction: %w", err)
		k.fail(err)
		return err
	}
	return nil
}

// abortWait bounds how long Abort waits for the open transaction's abort.
const abortWait = 5 * time.Second

// abortTxn aborts the open transaction (EndTxn abort, after the records in
// flight are answered): nothing of it becomes visible, the coordinator need
// not wait for kafka.transaction_timeout, and a producer whose epoch is no
// longer current learns that it is fenced.
func (k *Producer) abortTxn() {
	done := make(chan error, 1)
	finished := make(chan struct{})
	k.aborting = finished
	go func() {
		defer close(finished)
		done <- k.p.AbortTxn()
	}()
	select {
	case err := <-done:
		if err != nil && (isFencing(err) || k.p.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0) {
			k.fail(&FencedError{TransactionalID: k.cfg.TransactionalID, Err: err})
		}
	case <-k.failed:
		// The producer failed meanwhile (its client is closed): the
		// abort cannot finish; the next producer of this id aborts it.
	case <-time.After(abortWait):
		k.fail(sink.ErrAborted)
	}
}

// learnEpoch asks the transaction coordinator which producer id and
// epoch this producer got (DescribeTransactions, Kafka ≥ 3.0), so that a
// failed producer can tell later whether a newer one replaced it.
func (k *Producer) learnEpoch(sc *sarama.Config) {
	k.pid, k.epoch = -1, -1
	st, err := k.describeTxn(sc)
	if err != nil {
		k.log.Debug().Err(err).Msg("cannot read the transactional id's producer epoch (DescribeTransactions needs Kafka 3.0): fencing is then only seen on the next write")
		return
	}
	k.pid, k.epoch = st.ProducerID, st.ProducerEpoch
}

func (k *Producer) describeTxn(sc *sarama.Config) (sarama.TransactionState, error) {
	c := *sc
	c.Producer.Transaction.ID = "" // a plain admin client
	c.Producer.Idempotent = false
	c.Net.Proxy.Enable = false // not through the gate
	if !c.Version.IsAtLeast(sarama.V3_0_0_0) {
		// DescribeTransactions came with Kafka 3.0; an older broker
		// refuses it, and the fence is then only seen on the next write.
		c.Version = sarama.V3_0_0_0
	}
	admin, err := sarama.NewClusterAdmin(k.cfg.Brokers, &c)
	if err != nil {
		return sarama.TransactionState{}, err
	}
	defer admin.Close()
	ta, ok := admin.(sarama.TransactionClusterAdmin)
	if !ok {
		return sarama.TransactionState{}, errors.New("the admin client cannot describe transactions")
	}
	states, err := ta.DescribeTransactions([]string{k.cfg.TransactionalID})
	if err != nil {
		return sarama.TransactionState{}, err
	}
	st, ok := states[k.cfg.TransactionalID]
	if !ok {
		return st, fmt.Errorf("no state for transactional id %s", k.cfg.TransactionalID)
	}
	return st, nil
}

// replaced reports whether a newer producer took this producer's
// transactional id over (false when it cannot tell).
// fenced returns err, as a FencedError when it is not one already but the
// coordinator says a newer producer holds the transactional id: a record
// refused after the fence can carry another code (INVALID_TXN_STATE, say).
func (k *Producer) fenced(err error) error {
	if err == nil || errors.Is(err, sink.ErrFenced) || !k.replaced() {
		return err
	}
	return &FencedError{TransactionalID: k.cfg.TransactionalID, Err: err}
}

func (k *Producer) replaced() bool {
	if k.epoch < 0 {
		return false
	}
	st, err := k.describeTxn(k.sc)
	if err != nil {
		k.log.Debug().Err(err).Msg("cannot read the transactional id's producer epoch")
		return false
	}
	return st.ProducerID != k.pid || st.ProducerEpoch > k.epoch
}
