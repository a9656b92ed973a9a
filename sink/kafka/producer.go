package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/outboxrelay/outboxrelay/sink"
)

// Producer is a sink.Sink on a sarama AsyncProducer.
//
// After its first failed acknowledgement it produces nothing more: Send
// refuses, and the gate (gate.go) refuses every later write to the
// brokers, so that no record queued behind the failed one — same
// partition, same key — reaches Kafka before the failed one is sent again
// by a later session. Closing it ends every write of its own before it
// returns, so an old session's producer never writes after a new one.
type Producer struct {
	cfg      Config
	sc       *sarama.Config
	log      zerolog.Logger
	client   sarama.Client
	p        sarama.AsyncProducer
	gate     *gate
	inflight *semaphore.Weighted
	loops    sync.WaitGroup // the successes and errors loops
	stop     chan struct{}  // ends the watchdog
	dogDone  chan struct{}
	closed   sync.Once
	// aborting is an AbortTxn still running after Abort returned (it
	// timed out, or the producer failed meanwhile): Close waits for it,
	// boundedly, since sarama's AbortTxn and AsyncClose must not overlap.
	aborting chan struct{}

	// failure is the first error: set once, then Send refuses; failed
	// closes then.
	failure atomic.Pointer[error]
	failed  chan struct{}
	// The transactional producer's id and epoch as the coordinator
	// reported them after InitProducerId (epoch -1: not known).
	pid   int64
	epoch int16
	// Acknowledgement progress, for the watchdog.
	pending  atomic.Int64 // records handed to sarama, not yet answered
	progress atomic.Int64 // unix nanos of the last answer (or of the first send after none pending)

	limitsMu sync.Mutex
	limits   map[string]int // per-topic record limit (max.message.bytes less the batch header), learnt on first use
	admin    sarama.ClusterAdmin
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

// recordBatchOverhead is the header of a Kafka record batch (format v2):
// the broker's max.message.bytes counts it with the records.
const recordBatchOverhead = 61

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
	g := newGate()
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, g.dialer(sc)
	backoff := sc.Producer.Retry.BackoffFunc
	sc.Producer.Retry.BackoffFunc = func(retries, max int) time.Duration {
		if g.isFenced() {
			return 0 // stopped: fail what is left at once
		}
		return backoff(retries, max)
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		g.close()
		return nil, cfg.explain(fmt.Errorf("connect to kafka %v: %w", cfg.Brokers, err))
	}
	p, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		g.close()
		if cfg.TransactionalID != "" {
			return nil, cfg.explainInit(fmt.Errorf("start the transactional kafka producer %s: %w", cfg.TransactionalID, err))
		}
		return nil, fmt.Errorf("start the kafka producer: %w", err)
	}
	if cfg.TransactionalID != "" {
		if err := p.BeginTxn(); err != nil {
			_ = p.Close()
			g.close()
			return nil, fmt.Errorf("begin a Kafka transaction: %w", err)
		}
	}
	k := &Producer{cfg: cfg, sc: sc, log: log, client: client, p: p, gate: g, inflight: semaphore.NewWeighted(cfg.MaxInFlightBytes),
		stop: make(chan struct{}), dogDone: make(chan struct{}), limits: map[string]int{}, failed: make(chan struct{})}
	if cfg.TransactionalID != "" {
		k.learnEpoch(sc)
	}
	k.progress.Store(time.Now().UnixNano())
	k.loops.Add(2)
	go k.successes()
	go k.errors()
	go k.watchdog()
	return k, nil
}

func (k *Producer) successes() {
	defer k.loops.Done()
	for m := range k.p.Successes() {
		pd := m.Metadata.(*pending)
		k.inflight.Release(pd.weight)
		k.progress.Store(time.Now().UnixNano())
		k.pending.Add(-1)
		pd.ack(nil)
	}
}

// errors receives sarama's errors through the gate: sarama hands a failed
// batch's errors over before it lets the next batch of that partition go,
// and the gate refuses every write after it has seen one.
func (k *Producer) errors() {
	defer k.loops.Done()
	for e := range k.gate.errors(k.p.Errors()) {
		pd := e.Msg.Metadata.(*pending)
		k.inflight.Release(pd.weight)
		k.pending.Add(-1)
		cause := e.Err
		switch {
		case errors.Is(cause, sarama.ErrMessageSizeTooLarge):
			cause = fmt.Errorf("%w: %w", sink.ErrTooLarge, cause)
		case k.cfg.TransactionalID != "" && isFencing(cause):
			cause = &FencedError{TransactionalID: k.cfg.TransactionalID, Err: cause}
		}
		re := &sink.RecordError{Topic: e.Msg.Topic, Err: cause}
		for _, h := range e.Msg.Headers {
			re.Headers = append(re.Headers, sink.Header{Key: string(h.Key), Value: h.Value})
		}
		k.fail(re)
		pd.ack(re)
	}
}

// fail records the first failure and stops all producing.
func (k *Producer) fail(err error) {
	if k.failure.CompareAndSwap(nil, &err) {
		close(k.failed)
		k.gate.fence()
		k.log.Debug().Err(err).Msg("first failed acknowledgement: the producer stops producing")
		// Everything still queued fails fast without a client.
		go func() { _ = k.client.Close() }()
	}
}

// Err returns the producer's first failure, if any.
func (k *Producer) Err() error {
	if p := k.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// watchdog fails the producer when records wait for an answer longer than
// kafka.delivery_timeout: sarama retries in order while a partition has no
// leader, which must not become a silent stall.
func (k *Producer) watchdog() {
	defer close(k.dogDone)
	every := min(time.Second, k.cfg.DeliveryTimeout/4)
	if k.cfg.TransactionalID != "" {
		every = 50 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		if k.cfg.TransactionalID != "" && k.p.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
			// Sarama does not know PRODUCER_FENCED as a produce error:
			// it retries the batch (for up to kafka.delivery_timeout)
			// although its transaction manager already turned fatal.
			// After a successful InitProducerId only a newer epoch (or
			// an expired transactional id) makes it fatal.
			k.fail(&FencedError{TransactionalID: k.cfg.TransactionalID, Err: sarama.ErrProducerFenced})
			continue
		}
		if k.pending.Load() == 0 {
			continue
		}
		if since := time.Since(time.Unix(0, k.progress.Load())); since > k.cfg.DeliveryTimeout {
			k.fail(&StalledError{Waited: since.Round(time.Second), InFlight: int(k.pending.Load())})
		}
	}
}

// StalledError is a producer that got no answer from Kafka for longer than
// kafka.delivery_timeout.
type StalledError struct {
	Waited   time.Duration
	InFlight int
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("no acknowledgement from Kafka for %s with %d record(s) in flight (kafka.delivery_timeout): a partition leader or the brokers are unavailable", e.Waited, e.InFlight)
}

// Send queues r; it blocks while MaxInFlightBytes are unacknowledged.
func (k *Producer) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	if err := k.Err(); err != nil {
		return err
	}
	limit, err := k.limit(r.Topic)
	if err != nil {
		return err
	}
	env := &envelope{}
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
	// The producer's own count (record format v2), which sarama checks
	// against Producer.MaxMessageBytes, and the topic's limit.
	size := m.ByteSize(2)
	if size > limit {
		return &TooLargeError{Topic: r.Topic, Size: size, Max: limit}
	}
	// Never more than the cap (validation keeps it above any record):
	// a weight over it would block forever.
	w := min(int64(size+len(r.Topic)), k.cfg.MaxInFlightBytes)
	if err := k.inflight.Acquire(ctx, w); err != nil {
		return err
	}
	if err := k.Err(); err != nil {
		k.inflight.Release(w)
		return err
	}
	env.pd = pending{ack: ack, weight: w}
	if k.pending.Add(1) == 1 {
		k.progress.Store(time.Now().UnixNano())
	}
	select {
	case k.p.Input() <- m:
		return nil
	case <-ctx.Done():
		k.pending.Add(-1)
		k.inflight.Release(w)
		return ctx.Err()
	}
}

// limit is the largest record topic accepts: kafka.max_message_bytes, or
// less when the topic's max.message.bytes (minus the batch header) is
// lower. The topic's setting is read once per producer; a relay not
// allowed to read it (DescribeConfigs) uses kafka.max_message_bytes.
func (k *Producer) limit(topic string) (int, error) {
	k.limitsMu.Lock()
	defer k.limitsMu.Unlock()
	if l, ok := k.limits[topic]; ok {
		return l, nil
	}
	l := k.cfg.MaxMessageBytes
	if b, ok := k.topicMaxBytes(topic); ok && b-recordBatchOverhead < l {
		// Batches of smaller records can reach kafka.max_message_bytes,
		// which the broker would then refuse whole: a configuration
		// mistake, not a bad row.
		return 0, &TopicLimitError{Topic: topic, TopicMax: b, Max: k.cfg.MaxMessageBytes}
	}
	k.limits[topic] = l
	return l, nil
}

func (k *Producer) topicMaxBytes(topic string) (int, bool) {
	if k.admin == nil {
		a, err := sarama.NewClusterAdminFromClient(k.client)
		if err != nil {
			return 0, false
		}
		k.admin = a // closing it would close the client: never closed
	}
	entries, err := k.admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"max.message.bytes"}})
	if err != nil {
		// A topic created on first use, or no DescribeConfigs right:
		// the broker's default applies, which check reports.
		k.log.Debug().Err(err).Str("topic", topic).Msg("cannot read the topic's max.message.bytes")
		return 0, false
	}
	for _, e := range entries {
		if e.Name == "max.message.bytes" {
			if n, err := strconv.Atoi(e.Value); err == nil && n > 0 {
				return n, true
			}
		}
	}
	return 0, false
}

// TopicLimitError is a topic whose max.message.bytes is below
// kafka.max_message_bytes (plus the batch header).
type TopicLimitError struct {
	Topic    string
	TopicMax int
	Max      int
}

// Permanent reports that retrying cannot help: the settings must change.
func (e *TopicLimitError) Permanent() bool { return true }

func (e *TopicLimitError) Error() string {
	return fmt.Sprintf("topic %s accepts batches of at most %d bytes (max.message.bytes), less than kafka.max_message_bytes (%d) plus a batch header (%d): set kafka.max_message_bytes to at most %d, or raise the topic's max.message.bytes",
		e.Topic, e.TopicMax, e.Max, recordBatchOverhead, e.TopicMax-recordBatchOverhead)
}

// Close flushes what is queued, waits for every acknowledgement, and closes
// the connections. Abort first makes it return at once.
func (k *Producer) Close() error {
	k.closed.Do(func() {
		if k.aborting != nil {
			select {
			case <-k.aborting:
			case <-time.After(abortWait):
				k.log.Warn().Msg("the Kafka transaction's abort did not finish; closing the producer anyway")
			}
		}
		k.p.AsyncClose()
		k.loops.Wait() // every record answered
		close(k.stop)
		<-k.dogDone
		_ = k.client.Close() // already closed after a failure
		k.gate.close()
	})
	return nil
}

// Abort stops producing at once: nothing queued is written any more, and
// every record still unacknowledged fails (the relay sends it again from
// its checkpoint). Call Close after it.
func (k *Producer) Abort() error {
	if k.cfg.TransactionalID == "" {
		k.fail(sink.ErrAborted)
		return nil
	}
	if k.Err() == nil {
		k.abortTxn()
	}
	k.fail(sink.ErrAborted)
	err := k.Err()
	if errors.Is(err, sink.ErrFenced) {
		return err
	}
	// Failed for another reason — which may be the fence seen from a
	// produce request (INVALID_TXN_STATE, say): ask the coordinator.
	if k.replaced() {
		return &FencedError{TransactionalID: k.cfg.TransactionalID, Err: fmt.Errorf("a newer producer holds the transactional id (after: %v)", err)}
	}
	return nil
}

// TooLargeError is a record over kafka.max_message_bytes (which the relay
// keeps at or below every target topic's limit).
type TooLargeError struct {
	Topic     string
	Size, Max int
}

// Is makes a TooLargeError match sink.ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == sink.ErrTooLarge }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("record for %s is %d bytes as the producer frames it (key, value, headers, record overhead), over kafka.max_message_bytes (%d)", e.Topic, e.Size, e.Max)
}
