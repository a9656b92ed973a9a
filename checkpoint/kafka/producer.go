package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// producer is a sarama AsyncProducer sending one message at a time, so
// that a Save can give up when its context ends without leaving the
// producer unusable: an answer to a message given up on is recognised by
// its sequence number and dropped.
type producer struct {
	client sarama.Client
	p      sarama.AsyncProducer
	seq    uint64
}

// newProducer starts an idempotent producer (acks=all), or a
// transactional one when txnID is set. sarama asks for the producer id
// (InitProducerId) here, which, for a transactional id, fences every
// older producer of it.
func (s *Store) newProducer(txnID string) (*producer, error) {
	sc, err := s.clientConfig()
	if err != nil {
		return nil, err
	}
	o := opWrite
	if txnID != "" {
		o = opTransaction
		sc.Producer.Transaction.ID = txnID
		sc.Producer.Transaction.Timeout = s.kcfg.TransactionTimeout
	}
	client, err := sarama.NewClient(s.kcfg.Brokers, sc)
	if err != nil {
		return nil, s.classify(fmt.Errorf("connect to kafka %v: %w", s.kcfg.Brokers, err), opConnect)
	}
	p, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		what := "start the checkpoint producer"
		if txnID != "" {
			what = "start a transactional producer with id " + txnID
		}
		return nil, s.classify(fmt.Errorf("%s: %w", what, err), o)
	}
	return &producer{client: client, p: p}, nil
}

// send produces msg and waits for Kafka's answer or the end of ctx.
func (p *producer) send(ctx context.Context, msg *sarama.ProducerMessage) error {
	p.seq++
	seq := p.seq
	msg.Metadata = seq
	select {
	case p.p.Input() <- msg:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		select {
		case m := <-p.p.Successes():
			if m.Metadata == seq {
				return nil
			}
		case e := <-p.p.Errors():
			if e.Msg != nil && e.Msg.Metadata == seq {
				return e.Err
			}
			if e.Msg == nil {
				return e.Err // not about one message: the producer failed
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close flushes and stops the producer, then its client.
func (p *producer) close() error {
	err := p.p.Close()
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) {
		// Answers to messages a Save already gave up on.
		err = nil
	}
	return errors.Join(err, p.client.Close())
}
