package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/outboxrelay/outboxrelay/internal/failpoint"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Producer is a sink.Sink on a sarama AsyncProducer.
type Producer struct {
	cfg      Config
	log      zerolog.Logger
	p        sarama.AsyncProducer
	inflight *semaphore.Weighted
	wg       sync.WaitGroup
}

// pending rides along a message as its metadata until the ack.
type pending struct {
	ack    sink.AckFunc
	weight int64
}

// envelope is everything Send hands sarama for one record, in one
// allocation: the message, its metadata, up to four headers and the key and
// value encoders (pointers into the envelope implement sarama.Encoder, so
// they need no boxing of their own). Before, these were about ten small
// allocations per record, a visible share of the relay's CPU in profiles.
type envelope struct {
	msg        sarama.ProducerMessage
	pd         pending
	key, value sarama.ByteEncoder
	headers    [4]sarama.RecordHeader
}

// New connects to the brokers and starts the producer.
func New(cfg Config, log zerolog.Logger) (*Producer, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, err := cfg.saramaConfig()
	if err != nil {
		return nil, cfg.explain(err)
	}
	cfg.warnSecurity(log)
	p, err := sarama.NewAsyncProducer(cfg.Brokers, sc)
	if err != nil {
		return nil, cfg.explain(fmt.Errorf("connect to kafka %v: %w", cfg.Brokers, err))
	}
	k := &Producer{cfg: cfg, log: log, p: p, inflight: semaphore.NewWeighted(cfg.MaxInFlightBytes)}
	k.wg.Add(2)
	go k.successes()
	go k.errors()
	return k, nil
}

func (k *Producer) successes() {
	defer k.wg.Done()
	for m := range k.p.Successes() {
		pd := m.Metadata.(*pending)
		k.inflight.Release(pd.weight)
		pd.ack(nil)
	}
}

func (k *Producer) errors() {
	defer k.wg.Done()
	for e := range k.p.Errors() {
		pd := e.Msg.Metadata.(*pending)
		k.inflight.Release(pd.weight)
		err := e.Err
		if errors.Is(err, sarama.ErrMessageSizeTooLarge) {
			err = fmt.Errorf("%w: %w", sink.ErrTooLarge, err)
		}
		pd.ack(fmt.Errorf("produce to %s: %w", e.Msg.Topic, err))
	}
}

// Send queues r; it blocks while MaxInFlightBytes are unacknowledged.
func (k *Producer) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	size := r.Size()
	if size > k.cfg.MaxMessageBytes {
		return &TooLargeError{Topic: r.Topic, Size: size, Max: k.cfg.MaxMessageBytes}
	}
	w := int64(size) + 64 // headers and framing; never 0
	if err := k.inflight.Acquire(ctx, w); err != nil {
		return err
	}
	env := &envelope{pd: pending{ack: ack, weight: w}}
	m := &env.msg
	m.Topic = r.Topic
	m.Metadata = &env.pd
	if r.Key != nil {
		env.key = r.Key
		m.Key = &env.key
	}
	if r.Value != nil {
		env.value = r.Value
		m.Value = &env.value
	}
	if len(r.Headers) > 0 {
		if len(r.Headers) <= len(env.headers) {
			m.Headers = env.headers[:len(r.Headers)]
		} else {
			m.Headers = make([]sarama.RecordHeader, len(r.Headers))
		}
		for i, h := range r.Headers {
			// sarama only reads header keys: share the string's bytes.
			m.Headers[i] = sarama.RecordHeader{Key: unsafe.Slice(unsafe.StringData(h.Key), len(h.Key)), Value: h.Value}
		}
	}
	if r.TimestampMs != 0 {
		m.Timestamp = time.UnixMilli(r.TimestampMs)
	}
	select {
	case k.p.Input() <- m:
		failpoint.Inject("produce-before-ack")
		return nil
	case <-ctx.Done():
		k.inflight.Release(w)
		return ctx.Err()
	}
}

// Close flushes what is queued, waits for every acknowledgement, and closes
// the connections.
func (k *Producer) Close() error {
	k.p.AsyncClose()
	k.wg.Wait()
	return nil
}

// TooLargeError is a record over max_message_bytes.
type TooLargeError struct {
	Topic     string
	Size, Max int
}

// Is makes a TooLargeError match sink.ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == sink.ErrTooLarge }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("record for %s is %d bytes, over kafka.max_message_bytes (%d)", e.Topic, e.Size, e.Max)
}
