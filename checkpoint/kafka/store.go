package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/sink"
	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

// Options of a Store.
type Options struct {
	// Transactional makes Save write through a transactional producer with
	// the relay's own transactional.id (sinkkafka.TransactionalID(name)):
	// set it when relay.delivery is exactly-once. Such a Save fences any
	// live exactly-once relay of that name — Kafka bumps the id's producer
	// epoch, the relay's next write fails and it stops — which is what
	// `checkpoint set` and `checkpoint import` need: the relay cannot
	// overwrite the new position with the one it was about to commit.
	// A running exactly-once relay must therefore never Save itself (it
	// would fence its own producer): it commits Record's record in its
	// own transaction instead.
	Transactional bool
}

// Store is a checkpoint.Store in partition 0 of the positions topic, one
// record per save, keyed by the relay's name: the newest committed record
// of that key is the checkpoint. Nothing connects until the first Load or
// Save. Load and Save may be called from different goroutines.
type Store struct {
	cfg  Config
	name string
	kcfg sinkkafka.Config
	o    Options
	log  zerolog.Logger

	mu      sync.Mutex // serialises Save and guards what follows
	ensured bool       // the topic was found (or made) as it must be
	prod    *producer  // the idempotent producer, kept open between Saves
	closed  bool
}

// validName is what relay.name allows; the key must stay readable in
// kafka-console-consumer's output.
var validName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// New returns the store of the relay called name (relay.name) in the
// cluster kcfg describes (the sink's kafka.* settings: brokers, version,
// TLS, SASL). Nothing connects yet.
func New(cfg Config, name string, kcfg sinkkafka.Config, o Options, log zerolog.Logger) (*Store, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint.kafka.%w", err)
	}
	if name == "" {
		return nil, errors.New("relay.name: required with checkpoint.type kafka (it keys the relay's position in the positions topic)")
	}
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("relay.name: %q: use letters, digits, '.', '_' and '-'", name)
	}
	kcfg.SetDefaults()
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	v, err := sarama.ParseKafkaVersion(kcfg.Version)
	if err != nil {
		return nil, fmt.Errorf("kafka.version: %w", err)
	}
	if !v.IsAtLeast(sarama.V0_11_0_0) {
		// Transactions, read_committed and the last stable offset came
		// with 0.11.
		return nil, fmt.Errorf("kafka.version: %s: the Kafka checkpoint store needs 0.11.0 or later", kcfg.Version)
	}
	return &Store{cfg: cfg, name: name, kcfg: kcfg, o: o, log: log}, nil
}

// Topic is the positions topic; Key the record key of this relay.
func (s *Store) Topic() string { return s.cfg.Topic }

// Key is the record key the relay's positions are stored under.
func (s *Store) Key() string { return s.name }

// stored is a record's value: the checkpoint, as the file store writes it,
// plus the relay's name, so that a record read with kafka-console-consumer
// says whose it is.
type stored struct {
	Relay string `json:"relay"`
	checkpoint.Checkpoint
}

// Record is the record that stores cp: what an exactly-once relay sends
// inside its own Kafka transaction, next to the records cp covers, so
// that both commit or neither does. Save writes the same bytes.
func (s *Store) Record(cp checkpoint.Checkpoint) (sink.Record, error) {
	if cp.Source == "" || cp.Position == "" {
		return sink.Record{}, fmt.Errorf("checkpoint lacks source or position: %+v", cp)
	}
	b, err := json.Marshal(stored{Relay: s.name, Checkpoint: cp})
	if err != nil {
		return sink.Record{}, err
	}
	return sink.Record{Topic: s.cfg.Topic, Key: []byte(s.name), Value: b}, nil
}

// decode reads a record's value; offset is for the error only.
func (s *Store) decode(value []byte, offset int64) (checkpoint.Checkpoint, error) {
	var v stored
	if err := json.Unmarshal(value, &v); err != nil {
		return checkpoint.Checkpoint{}, fmt.Errorf("the position of relay %s in topic %s (offset %d) is not a checkpoint (%v): write a valid one with `outboxrelay checkpoint set`", s.name, s.cfg.Topic, offset, err)
	}
	if v.Source == "" || v.Position == "" {
		return checkpoint.Checkpoint{}, fmt.Errorf("the position of relay %s in topic %s (offset %d) lacks source or position: write a valid one with `outboxrelay checkpoint set`", s.name, s.cfg.Topic, offset)
	}
	return v.Checkpoint, nil
}

// Load returns the newest committed position of the relay; ErrNotFound
// when it has none (or its newest record is a tombstone). It creates the
// topic when it is missing. Its time is bounded by ctx.
func (s *Store) Load(ctx context.Context) (checkpoint.Checkpoint, error) {
	return s.load(ctx, true)
}

// Peek is Load without creating a missing topic (ErrNotFound then), for
// commands that change nothing (`outboxrelay checkpoint show`).
func (s *Store) Peek(ctx context.Context) (checkpoint.Checkpoint, error) {
	return s.load(ctx, false)
}

// load reads the position; create says whether a missing topic is
// created (else: ErrNotFound).
func (s *Store) load(ctx context.Context, create bool) (checkpoint.Checkpoint, error) {
	cp, err := s.read(ctx, create)
	if err != nil && ctx.Err() != nil && !errors.Is(err, checkpoint.ErrNotFound) {
		return cp, fmt.Errorf("read the position of relay %s from topic %s: %w", s.name, s.cfg.Topic, ctx.Err())
	}
	return cp, err
}

func (s *Store) read(ctx context.Context, create bool) (checkpoint.Checkpoint, error) {
	client, done, err := s.connect(ctx)
	if err != nil {
		return checkpoint.Checkpoint{}, err
	}
	defer done()
	t, err := s.topic(ctx, client, create)
	if err != nil {
		return checkpoint.Checkpoint{}, err
	}
	if !t.exists {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	s.mu.Lock()
	s.ensured = true
	s.mu.Unlock()
	r, err := s.newest(ctx, client)
	if err != nil {
		return checkpoint.Checkpoint{}, err
	}
	if !r.found || r.value == nil {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return s.decode(r.value, r.offset)
}

// connect opens a client whose connections end with ctx (dial.go); done
// closes it.
func (s *Store) connect(ctx context.Context) (client sarama.Client, done func(), err error) {
	sc, err := s.clientConfig()
	if err != nil {
		return nil, nil, err
	}
	release := boundTo(ctx, sc)
	client, err = sarama.NewClient(s.kcfg.Brokers, sc)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, s.classify(fmt.Errorf("connect to kafka %v: %w", s.kcfg.Brokers, err), opConnect)
	}
	return client, func() { _ = client.Close(); release() }, nil
}

// clientConfig is the sink's client configuration (version, TLS, SASL)
// adapted to the store.
func (s *Store) clientConfig() (*sarama.Config, error) {
	sc, err := s.kcfg.ClientConfig()
	if err != nil {
		return nil, err
	}
	// A Metadata request naming a missing topic would otherwise create it
	// with the brokers' defaults (several partitions, cleanup.policy
	// delete) wherever auto.create.topics.enable is on.
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Metadata.Retry.Max = 3
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	sc.Net.DialTimeout = 10 * time.Second
	sc.Net.ReadTimeout = 15 * time.Second
	sc.Net.WriteTimeout = 15 * time.Second
	sc.Admin.Timeout = 15 * time.Second
	// One small record per Save, sent at once; a broker outage fails it
	// within seconds, so that the relay restarts its session instead of
	// waiting on a save.
	sc.Producer.Flush = sarama.NewConfig().Producer.Flush
	sc.Producer.Compression = sarama.CompressionNone
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	sc.Producer.Retry.Max = 10
	return sc, nil
}

// Save writes cp as the relay's newest position, durably (acks=all) or
// not at all. With Options.Transactional it commits it in a transaction
// of the relay's transactional id, fencing a live exactly-once relay of
// that name.
func (s *Store) Save(ctx context.Context, cp checkpoint.Checkpoint) error {
	rec, err := s.Record(cp)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("checkpoint store closed")
	}
	if !s.ensured {
		if err := s.ensure(ctx); err != nil {
			return err
		}
		s.ensured = true
	}
	msg := &sarama.ProducerMessage{Topic: rec.Topic, Partition: 0, Key: sarama.ByteEncoder(rec.Key), Value: sarama.ByteEncoder(rec.Value)}
	if s.o.Transactional {
		return s.saveInTransaction(ctx, msg)
	}
	if s.prod == nil {
		p, err := s.newProducer("")
		if err != nil {
			return err
		}
		s.prod = p
	}
	if err := s.prod.send(ctx, msg); err != nil {
		// A failed producer may hold a stale epoch or connection: the
		// next Save starts a new one.
		_ = s.prod.close()
		s.prod = nil
		return s.classify(fmt.Errorf("save position %s of relay %s to topic %s: %w", cp.Position, s.name, s.cfg.Topic, err), opWrite)
	}
	s.log.Debug().Str("position", cp.Position).Msg("checkpoint saved to kafka")
	return nil
}

// ensure checks (or creates) the topic on a client of its own.
func (s *Store) ensure(ctx context.Context) error {
	client, done, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer done()
	_, err = s.topic(ctx, client, true)
	return err
}

// saveInTransaction writes msg in a transaction of the relay's own
// transactional id. Its producer lives for this one Save only: it is
// fenced by the next instance of the id anyway — a relay starting, or
// the next `checkpoint set`.
func (s *Store) saveInTransaction(ctx context.Context, msg *sarama.ProducerMessage) error {
	id := sinkkafka.TransactionalID(s.name)
	p, err := s.newProducer(id)
	if err != nil {
		return err
	}
	defer p.close()
	fail := func(step string, err error) error {
		if p.p.TxnStatus()&sarama.ProducerTxnFlagInTransaction != 0 {
			_ = p.p.AbortTxn()
		}
		return s.classify(fmt.Errorf("save the position of relay %s to topic %s in a transaction of %s: %s: %w", s.name, s.cfg.Topic, id, step, err), opTransaction)
	}
	if err := p.p.BeginTxn(); err != nil {
		return fail("begin", err)
	}
	if err := p.send(ctx, msg); err != nil {
		return fail("produce", err)
	}
	if err := p.p.CommitTxn(); err != nil {
		return fail("commit", err)
	}
	s.log.Info().Str("transactional_id", id).Msg("checkpoint committed in a transaction of the relay's transactional id: an exactly-once relay of this name running now is fenced and stops")
	return nil
}

// Close releases the producer.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.prod == nil {
		return nil
	}
	err := s.prod.close()
	s.prod = nil
	return err
}
