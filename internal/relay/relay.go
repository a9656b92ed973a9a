// Package relay wires one source, the outbox mapping, one sink and one
// checkpoint store into the pipeline
//
//	source.Next → outbox.Map → sink.Send ⇢ ack → Tracker → Store.Save → source.Ack
//
// and restarts it from the durable checkpoint after transient failures. It
// owns the order of those steps (the invariants of DESIGN.md); it must not
// know how any source, sink or store works inside.
package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/failpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Source opens readers of one kind of log.
type Source interface {
	// Kind names the source in checkpoints ("mysql", "postgres").
	Kind() string
	// Resolve returns the position a relay without a checkpoint starts
	// from (the configured start: current, earliest, a position, a new
	// replication slot). The relay stores it before it sends anything.
	Resolve(ctx context.Context) (string, error)
	// Open starts reading right after from (a checkpoint's position text).
	Open(ctx context.Context, from string) (source.Reader, error)
}

// SinkFactory connects a new sink; each session gets a fresh one.
type SinkFactory func(ctx context.Context) (sink.Sink, error)

// Config of the pipeline.
type Config struct {
	// CheckpointInterval is how often the watermark is saved when it moved.
	// Default 200ms.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// ShutdownTimeout bounds the wait for in-flight records on shutdown.
	// Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
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
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 200 * time.Millisecond
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
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
}

// New returns a relay; nothing connects until Run.
func New(cfg Config, src Source, newSink SinkFactory, store checkpoint.Store, mapper *outbox.Mapper, log zerolog.Logger) *Relay {
	cfg.SetDefaults()
	r := &Relay{cfg: cfg, src: src, newSink: newSink, store: store, mapper: mapper, log: log}
	if r.cfg.Observer == nil {
		r.latency = &latencyLog{}
		r.cfg.Observer = r.latency
	}
	return r
}

// txEnd is what the checkpoint tracker keeps per transaction: its end
// position, and what the Observer is told once the watermark passes it.
type txEnd struct {
	pos          source.Position
	commit, read time.Time
	records      int
}

// Run relays until ctx ends (then it drains, saves the final checkpoint and
// returns nil) or a permanent failure, which it returns.
func (r *Relay) Run(ctx context.Context) error {
	return retry.Do(ctx, r.log, r.cfg.Retry, r.session)
}

// session is one connected run, from the durable checkpoint until ctx ends
// or something fails.
func (r *Relay) session(ctx context.Context, healthy func()) error {
	from := ""
	cp, err := r.store.Load(ctx)
	switch {
	case err == nil:
		if cp.Source != r.src.Kind() {
			return backoff.Permanent(fmt.Errorf("the checkpoint holds a %s position (%s) but this relay reads a %s source: point checkpoint.file.path elsewhere", cp.Source, cp.Position, r.src.Kind()))
		}
		from = cp.Position
	case errors.Is(err, checkpoint.ErrNotFound):
		// The first start: the configured start ("current" above all)
		// is resolved once and stored before anything is sent, so that a
		// retry or restart resumes there instead of resolving it again
		// past rows committed in between.
		if from, err = r.src.Resolve(ctx); err != nil {
			return err
		}
		if err := r.store.Save(ctx, checkpoint.Checkpoint{Source: r.src.Kind(), Position: from, UpdatedAt: time.Now().UTC()}); err != nil {
			return fmt.Errorf("store the start position %s: %w", from, err)
		}
		r.log.Info().Str("position", from).Msg("no checkpoint yet: stored the start position")
	default:
		return backoff.Permanent(err)
	}

	reader, err := r.src.Open(ctx, from)
	if err != nil {
		return err
	}
	defer reader.Close()
	// A table lacking a configured column is a configuration error: find
	// it now rather than at its first row.
	if tl, ok := reader.(interface{ Tables() []*schema.Table }); ok {
		for _, t := range tl.Tables() {
			if err := r.mapper.CheckTable(t); err != nil {
				return backoff.Permanent(fmt.Errorf("outbox mapping: %w", err))
			}
		}
	}
	snk, err := r.newSink(ctx)
	if err != nil {
		return err
	}
	healthy()

	tracker := checkpoint.NewTracker[txEnd]()
	obs := r.cfg.Observer
	tracker.OnPass(func(e txEnd) { obs.Acked(e.commit, e.read, e.records) })
	saved := from
	save := func(ctx context.Context) error {
		mark, ok := tracker.Watermark()
		if !ok {
			return nil
		}
		pos := mark.pos
		if pos.String() == saved {
			return nil
		}
		s := pos.String()
		failpoint.Inject("ack-before-checkpoint")
		if err := r.store.Save(ctx, checkpoint.Checkpoint{Source: r.src.Kind(), Position: s, UpdatedAt: time.Now().UTC()}); err != nil {
			return fmt.Errorf("save checkpoint %s: %w", s, err)
		}
		saved = s
		failpoint.Inject("after-checkpoint")
		r.log.Debug().Str("position", s).Msg("checkpoint saved")
		return reader.Ack(ctx, pos)
	}

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var saveErr error
	cpDone := make(chan struct{})
	go func() {
		defer close(cpDone)
		tick := time.NewTicker(r.cfg.CheckpointInterval)
		defer tick.Stop()
		for {
			select {
			case <-readCtx.Done():
				return
			case <-tick.C:
			}
			if tracker.Err() != nil {
				stopReading()
				return
			}
			if err := save(readCtx); err != nil && readCtx.Err() == nil {
				saveErr = err
				stopReading()
				return
			}
		}
	}()

	var st pumpState
	readErr := r.pump(readCtx, reader, snk, tracker, &st, false)
	stopReading()
	<-cpDone
	if st.cur != nil && ctx.Err() != nil && saveErr == nil && tracker.Err() == nil {
		// A clean stop inside a transaction (one handed out in pieces, or
		// stopped while its records waited for room in flight): finish it,
		// so that the final checkpoint covers it and a restart sends none
		// of its records twice.
		r.log.Info().Str("transaction", st.txID).Msg("stopping: finishing the open transaction first")
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
		if err := r.pump(fctx, reader, snk, tracker, &st, true); err != nil {
			r.log.Warn().Err(err).Str("transaction", st.txID).
				Msg("stopped inside a transaction; its records sent so far will be sent again after a restart")
		}
		cancel()
	}

	// Drain: every record sent is acknowledged or failed before the final
	// checkpoint, so that a clean stop leaves nothing to send twice.
	drained := make(chan struct{})
	go func() {
		_ = snk.Close()
		close(drained)
	}()
	// A clean stop waits up to the shutdown timeout; after a failure (the
	// broker or the database went away) waiting long only delays the
	// restart, and what stays unacknowledged is sent again anyway.
	drainTimeout, why := r.cfg.ShutdownTimeout, "shutdown"
	if ctx.Err() == nil {
		drainTimeout, why = min(r.cfg.ShutdownTimeout, failureDrain), "failure"
	}
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		r.log.Warn().Int("in_flight", tracker.InFlight()).Dur("waited", drainTimeout).Str("after", why).
			Msg("records still unacknowledged; the checkpoint stays at the last acknowledged transaction and they will be sent again")
	}
	finalCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := save(finalCtx); err != nil && saveErr == nil {
		saveErr = err
	}
	if saved != "" {
		r.log.Info().Str("position", saved).Msg("checkpoint at end of session")
	}
	if r.latency != nil {
		r.latency.log(r.log)
	}

	switch {
	case errors.Is(tracker.Err(), sink.ErrTooLarge):
		// Retrying would send the same record again: stop with the fix.
		return backoff.Permanent(fmt.Errorf("kafka refused a record as too large (%w): the topic's max.message.bytes is below kafka.max_message_bytes; lower kafka.max_message_bytes to the topic's limit so that such rows become bad rows under outbox.on_bad_row", tracker.Err()))
	case tracker.Err() != nil:
		return fmt.Errorf("kafka did not acknowledge a record: %w", tracker.Err())
	case saveErr != nil:
		return saveErr
	case errors.Is(readErr, context.Canceled) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(readErr, source.ErrEndOfRange):
		return nil // a bounded run (replay) is complete
	}
	return readErr
}

// onBadRow applies outbox.on_bad_row to a row the mapping or the sink
// refused (err is an *outbox.BadRowError). Under dead-letter it puts the
// dead-letter record in *rec and returns send; under skip it returns
// !send; under fail, the error that stops the relay at this row (the
// checkpoint stays before its transaction).
func (r *Relay) onBadRow(row source.Row, err error, dropPayload bool, rec *sink.Record) (send bool, _ error) {
	var bad *outbox.BadRowError
	if !errors.As(err, &bad) {
		return false, backoff.Permanent(err)
	}
	policy := r.mapper.Policy()
	if r.cfg.BadRowHook != nil {
		r.cfg.BadRowHook(bad.Reason, policy)
	}
	switch policy {
	case outbox.PolicySkip:
		r.log.Warn().Str("table", bad.Table).Str("event_id", bad.EventID).Str("transaction", bad.TxID).Int("row", bad.Index).
			Str("reason", bad.Reason).Str("error", bad.Detail).Msg("bad outbox row skipped (on_bad_row: skip)")
		return false, nil
	case outbox.PolicyDeadLetter:
		r.log.Warn().Str("table", bad.Table).Str("event_id", bad.EventID).Str("transaction", bad.TxID).Int("row", bad.Index).
			Str("reason", bad.Reason).Str("error", bad.Detail).Msg("bad outbox row sent to the dead-letter topic")
		*rec = r.mapper.DeadLetter(row, bad, dropPayload)
		return true, nil
	}
	return false, backoff.Permanent(fmt.Errorf("%w. The relay stopped at this row and the checkpoint stays before its transaction: fix the row (or the outbox mapping), or set outbox.on_bad_row to skip or dead-letter, then start the relay again", bad))
}

func isPermanent(err error) bool {
	var perm *backoff.PermanentError
	return errors.As(err, &perm)
}

func recordHeader(r sink.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// pumpState is where pump stopped, so that a clean shutdown can finish
// the transaction it stopped in.
type pumpState struct {
	cur  *checkpoint.Txn[txEnd] // the open transaction, if any
	tx   *source.Tx             // the piece being sent, if any
	next int                    // index in tx.Rows of the next row to send
	txID string
	read time.Time // when the piece was read
}

// pump moves transactions from the reader to the sink until an error, or,
// with untilEnd, until the open transaction has ended. st carries the
// position between calls.
func (r *Relay) pump(ctx context.Context, reader source.Reader, snk sink.Sink, tracker *checkpoint.Tracker[txEnd], st *pumpState, untilEnd bool) error {
	if untilEnd && st.cur == nil {
		return nil
	}
	for {
		if st.tx == nil {
			tx, err := reader.Next(ctx)
			if err != nil {
				return err
			}
			if st.cur == nil {
				st.cur = tracker.Begin()
			}
			st.tx, st.next, st.txID, st.read = tx, 0, tx.ID, time.Now()
		}
		tx, cur := st.tx, st.cur
		if n := len(tx.Rows) - st.next; n > 0 {
			// The piece's records count as in flight at once (one tracker
			// lock per piece, not per record); those never sent are taken
			// back before returning.
			cur.Add(n)
			ack := cur.Done
			for ; st.next < len(tx.Rows); st.next++ {
				i := st.next
				rec, err := r.mapper.Map(tx.Rows[i], tx.ID, tx.FirstIndex+i, tx.CommitTime)
				if err != nil {
					send, perr := r.onBadRow(tx.Rows[i], err, false, &rec)
					if perr != nil {
						cur.Add(i - len(tx.Rows))
						return perr
					}
					if !send { // skipped: it counts as done
						cur.Done(nil)
						continue
					}
				}
				err = snk.Send(ctx, rec, ack)
				if errors.Is(err, sink.ErrTooLarge) {
					bad := &outbox.BadRowError{Table: tx.Rows[i].Table.FullName(), TxID: tx.ID, Index: tx.FirstIndex + i, Reason: outbox.ReasonTooLarge, Detail: err.Error()}
					if id, ok := recordHeader(rec, outbox.HeaderID); ok {
						bad.EventID = id
					}
					send, perr := r.onBadRow(tx.Rows[i], bad, true, &rec)
					switch {
					case perr != nil:
						err = perr
					case !send:
						cur.Done(nil)
						continue
					default:
						err = snk.Send(ctx, rec, ack)
					}
				}
				if err != nil {
					cur.Add(i - len(tx.Rows))
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if isPermanent(err) {
						return err
					}
					return backoff.Permanent(fmt.Errorf("table %s, transaction at %s, row %d: %w", tx.Rows[i].Table.FullName(), tx.ID, tx.FirstIndex+i, err))
				}
			}
		}
		st.tx = nil
		if tx.End != nil {
			cur.End(txEnd{pos: tx.End, commit: tx.CommitTime, read: st.read, records: tx.FirstIndex + len(tx.Rows)})
			st.cur = nil
			if untilEnd {
				return nil
			}
		}
		if err := tracker.Err(); err != nil {
			return err
		}
	}
}
