// Package relay wires one source, the outbox mapping, one sink and one
// checkpoint store into the pipeline
//
//	source.Next → outbox.Map → sink.Send ⇢ ack → committer: Tracker → Store.Save → source.Ack
//
// and restarts it from the durable checkpoint after transient failures. It
// owns the order of those steps (the invariants in docs/architecture.md);
// it must not know how any source, sink or store works inside.
//
// A session (session.go) reads, maps and sends (pump.go); the committer
// (committer.go) owns the moment work becomes durable.
package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/lease"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Source opens readers of one kind of log.
type Source interface {
	// Kind names the source in checkpoints ("mysql", "postgres").
	Kind() string
	// Resolve returns the position a relay without a checkpoint starts
	// from (the configured start: current, earliest, a position). The
	// relay stores it before it sends anything. "" means the server keeps
	// that position itself (a replication slot): Open starts there.
	Resolve(ctx context.Context) (string, error)
	// Open starts reading right after from (a checkpoint's position text).
	Open(ctx context.Context, from string) (source.Reader, error)
}

// SinkFactory connects a new sink; each session gets a fresh one.
type SinkFactory func(ctx context.Context) (sink.Sink, error)

// Delivery guarantees (relay.delivery).
const (
	AtLeastOnce = "at-least-once"
	ExactlyOnce = "exactly-once"
)

// Config of the pipeline.
type Config struct {
	// Name is the relay's identity: its transactional.id, its key in the
	// Kafka positions topic and (with standby instances) its group.
	// Required for checkpoint.type kafka and for exactly-once. Letters,
	// digits, '.', '_' and '-'.
	Name string `yaml:"name"`
	// Delivery is at-least-once (acknowledged records, then the
	// position) or exactly-once (records and position in one Kafka
	// transaction). Default at-least-once.
	Delivery string `yaml:"delivery"`
	// CommitInterval is how long an exactly-once relay collects records
	// in one Kafka transaction before committing it. Default 100ms.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// CommitMaxRecords closes an exactly-once Kafka transaction early
	// once it holds this many records. Default 50000.
	CommitMaxRecords int `yaml:"commit_max_records"`
	// CheckpointInterval is how often the watermark is saved when it moved.
	// Default 200ms.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// ShutdownTimeout bounds the wait for in-flight records on shutdown.
	// Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxFailuresAtPosition stops the relay (exit 1, with the error) once
	// this many sessions in a row failed at the same checkpoint after
	// connecting to both the database and Kafka: a failure that repeats
	// there is not an outage the relay can wait out. Connection failures
	// (an outage) do not count. Default 10; -1 never stops.
	MaxFailuresAtPosition int `yaml:"max_failures_at_position"`
	// RetryConfigErrors keeps retrying, with backoff, failures an operator
	// must fix — a wrong password, a missing database, table or grant, a
	// TLS mistake — instead of exiting with the fix (exit 1, which a
	// platform such as Kubernetes shows as a failing pod). A lost
	// position, a bad row under on_bad_row: fail, and
	// max_failures_at_position stop the relay regardless. Default false.
	RetryConfigErrors bool `yaml:"retry_config_errors"`
	// HA runs this instance as one of several with the same name, which
	// a Kafka consumer group coordinates: one streams, the others stand
	// by (relay.ha; the lease package).
	HA lease.Config `yaml:"ha"`
	// Ephemeral says the store keeps nothing durable (a replay's, in
	// memory): logs then say so instead of naming a checkpoint.
	Ephemeral bool `yaml:"-"`
	// TransactionTimeout is kafka.transaction_timeout (exactly-once): a
	// Kafka transaction not committed within four fifths of it is given
	// up and the relay resumes from the committed position.
	TransactionTimeout time.Duration `yaml:"-"`
	// PositionRecord encodes a checkpoint as the record that stores it
	// (the Kafka store's): under exactly-once it is committed in the same
	// Kafka transaction as the records it covers.
	PositionRecord func(checkpoint.Checkpoint) (sink.Record, error) `yaml:"-"`
	// OnCommit, if set, is told of every position an exactly-once relay
	// committed (for metrics: the store's Save is not called then).
	OnCommit func(checkpoint.Checkpoint) `yaml:"-"`
	// BadRowHook, if set, is told of every bad row with its reason and the
	// policy applied (for metrics).
	BadRowHook func(reason, policy string) `yaml:"-"`
	// Retry bounds the backoff between sessions after transient failures.
	Retry retry.Policy `yaml:"-"`
	// Observer is told when each transaction is acknowledged. Default: a
	// commit→ack latency histogram logged at debug level at the end of each
	// session (see observe.go).
	Observer Observer `yaml:"-"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Delivery == "" {
		c.Delivery = AtLeastOnce
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 100 * time.Millisecond
	}
	if c.CommitMaxRecords == 0 {
		c.CommitMaxRecords = 50000
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 200 * time.Millisecond
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.MaxFailuresAtPosition == 0 {
		c.MaxFailuresAtPosition = 10
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = time.Minute
	}
	c.HA.SetDefaults()
	if c.HA.Topic == "" && c.Name != "" {
		c.HA.Topic = lease.DefaultTopic(c.Name)
	}
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	if c.Name != "" && !validName(c.Name) {
		errs = append(errs, fmt.Errorf("name: %q: use letters, digits, '.', '_' and '-' (at most 200)", c.Name))
	}
	switch c.Delivery {
	case AtLeastOnce, ExactlyOnce:
	default:
		errs = append(errs, fmt.Errorf("delivery: %q is not one of at-least-once, exactly-once", c.Delivery))
	}
	if c.CommitInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("commit_interval: %s is too short (min 1ms)", c.CommitInterval))
	}
	if c.CommitMaxRecords < 1 {
		errs = append(errs, fmt.Errorf("commit_max_records: %d: want at least 1", c.CommitMaxRecords))
	}
	if c.CheckpointInterval < 0 {
		errs = append(errs, fmt.Errorf("checkpoint_interval: %s must not be negative", c.CheckpointInterval))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown_timeout: %s must not be negative", c.ShutdownTimeout))
	}
	if c.MaxFailuresAtPosition < -1 {
		errs = append(errs, fmt.Errorf("max_failures_at_position: %d: want a count ≥ 1, or -1 for never", c.MaxFailuresAtPosition))
	}
	if err := c.HA.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("ha.%s", line))
		}
	}
	return errors.Join(errs...)
}

// validName reports whether s can name a relay: it becomes part of a
// transactional.id, a record key and a group id.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 200 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// failureDrain bounds the wait for in-flight acknowledgements when a session
// ends on a failure rather than a shutdown.
const failureDrain = 5 * time.Second

// Relay is the pipeline.
type Relay struct {
	cfg     Config
	src     Source
	newSink SinkFactory
	store   checkpoint.Store
	mapper  *outbox.Mapper
	log     zerolog.Logger
	latency *latencyLog // the default Observer, if in use
	// refused holds the records the broker refused as too large, by
	// transaction and index: a later session treats them as bad rows
	// (outbox.on_bad_row) instead of sending them again.
	refused map[rowKey]string
}

type rowKey struct {
	tx    string
	index int
}

// New returns a relay; nothing connects until Run.
func New(cfg Config, src Source, newSink SinkFactory, store checkpoint.Store, mapper *outbox.Mapper, log zerolog.Logger) *Relay {
	cfg.SetDefaults()
	r := &Relay{cfg: cfg, src: src, newSink: newSink, store: store, mapper: mapper, log: log, refused: map[rowKey]string{}}
	if r.cfg.Observer == nil {
		r.latency = &latencyLog{}
		r.cfg.Observer = r.latency
	}
	return r
}

// Run relays until ctx ends (then it drains, saves the final checkpoint and
// returns nil) or a permanent failure, which it returns.
func (r *Relay) Run(ctx context.Context) error {
	if r.cfg.Delivery == ExactlyOnce && r.cfg.PositionRecord == nil {
		return retry.Stop(errors.New("relay.delivery exactly-once needs a store that keeps positions in Kafka (checkpoint.type: kafka)"))
	}
	var rep repeats
	return retry.Do(ctx, r.log, r.cfg.Retry, func(ctx context.Context, progress func()) error {
		s := &session{r: r, progress: progress}
		err := s.run(ctx)
		if r.latency != nil {
			r.latency.log(r.log)
		}
		if errors.Is(err, sink.ErrFenced) && !isPermanent(err) {
			err = retry.Stop(err) // retrying would fence the newer instance
		}
		err = rep.check(s, err, r.cfg.MaxFailuresAtPosition)
		if r.cfg.RetryConfigErrors && isPermanent(err) && !mustStop(err) {
			err = &retriedError{err}
		}
		if err != nil && s.from != "" && !isPermanent(err) && !errors.Is(err, context.Canceled) {
			err = &AtError{At: s.from, Err: err}
		}
		return err
	})
}

// repeats counts sessions that failed in a row at one checkpoint after
// connecting: a failure that keeps coming back there is no outage.
type repeats struct {
	at string
	n  int
}

func (p *repeats) check(s *session, err error, limit int) error {
	if err == nil || isPermanent(err) || errors.Is(err, context.Canceled) {
		return err
	}
	switch {
	case s.moved:
		*p = repeats{}
		return err
	case !s.streamed:
		return err // could not connect: an outage, waited out with backoff
	}
	if p.at == s.from {
		p.n++
	} else {
		*p = repeats{at: s.from, n: 1}
	}
	if limit > 0 && p.n >= limit {
		return &repeatedError{fmt.Errorf("%w; this failed %d times in a row at checkpoint %s without the checkpoint moving (relay.max_failures_at_position = %d): the relay stops instead of retrying forever", err, p.n, p.at, limit)}
	}
	return err
}

// mustStop reports the permanent failures retry_config_errors never
// retries: a lost position, a bad row the policy stops at, and a failure
// that repeated at one checkpoint.
func mustStop(err error) bool {
	var bad *outbox.BadRowError
	var rep *repeatedError
	return errors.Is(err, source.ErrPositionLost) || errors.Is(err, sink.ErrFenced) || errors.As(err, &bad) || errors.As(err, &rep)
}

// retriedError is a permanent failure retried on the operator's request
// (relay.retry_config_errors): its Permanent is false.
type retriedError struct{ err error }

func (e *retriedError) Error() string   { return e.err.Error() }
func (e *retriedError) Unwrap() error   { return e.err }
func (e *retriedError) Permanent() bool { return false }

// repeatedError is a failure that came back at one checkpoint too often.
type repeatedError struct{ err error }

func (e *repeatedError) Error() string   { return e.err.Error() }
func (e *repeatedError) Unwrap() error   { return e.err }
func (e *repeatedError) Permanent() bool { return true }

// AtError is a session's failure with the checkpoint it restarts from.
type AtError struct {
	At  string
	Err error
}

func (e *AtError) Error() string {
	return fmt.Sprintf("%v (the relay resumes from checkpoint %s)", e.Err, e.At)
}
func (e *AtError) Unwrap() error { return e.Err }

func isPermanent(err error) bool { return retry.IsPermanent(err) }

// txEnd is what the checkpoint tracker keeps per transaction: its end
// position, and what the Observer is told once the watermark passes it.
type txEnd struct {
	pos          source.Position
	commit, read time.Time
	records      int
	start        source.TxStart // for a point inside (Tracker.Inside)
}

// inside is the tracker's point inside a transaction after n rows.
func inside(start txEnd, n int) txEnd { return txEnd{pos: start.start.After(n)} }

// mergeEnds stands for two finished transactions held back together: the
// newer's end; the older's commit time (the latency of the slower one).
func mergeEnds(older, newer txEnd) txEnd {
	newer.commit = older.commit
	newer.records += older.records
	return newer
}
