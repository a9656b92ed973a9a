package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// session is one connected run, from the durable checkpoint until ctx ends
// or something fails.
type session struct {
	r        *Relay
	progress func() // the checkpoint moved: the retry policy resets
	from     string // the checkpoint the session started from
	streamed bool   // connected to the source and the sink
	moved    bool   // the checkpoint moved
}

func (s *session) run(ctx context.Context) error {
	if s.r.cfg.Delivery == ExactlyOnce {
		return s.runExactlyOnce(ctx)
	}
	r := s.r
	from, err := s.start(ctx, nil)
	if err != nil {
		return err
	}
	s.from = from
	reader, err := s.open(ctx, from)
	if err != nil {
		return err
	}
	defer reader.Close()
	snk, err := r.newSink(ctx)
	if err != nil {
		return err
	}
	s.streamed = true

	c := newCommitter(r, reader, from, s.progress)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	saveErr := make(chan error, 1)
	go func() { saveErr <- c.run(readCtx, stopReading) }()

	p := &pump{r: r, reader: reader, sink: snk, tracker: c.tracker, failed: c.err}
	readErr := p.run(readCtx, false)
	stopReading()
	cpErr := <-saveErr
	if p.open() && ctx.Err() != nil && cpErr == nil && c.err() == nil {
		// A clean stop inside a transaction (one handed out in pieces, or
		// stopped while its records waited for room in flight): finish it,
		// so that the final checkpoint covers it and a restart sends none
		// of its records twice.
		r.log.Info().Str("transaction", p.txID).Msg("stopping: finishing the open transaction first")
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
		if err := p.run(fctx, true); err != nil {
			r.log.Warn().Err(err).Str("transaction", p.txID).
				Msg("stopped inside a transaction; its records sent so far and not in the checkpoint will be sent again after a restart")
		}
		cancel()
	}
	s.drain(ctx, snk, c.tracker)
	if err := c.finish(ctx); err != nil && cpErr == nil {
		cpErr = err
	}
	s.moved = c.moved
	s.logEnd(c.saved, c.moved, "checkpoint at end of session")
	return s.outcome(ctx, c.err(), cpErr, readErr)
}

// runExactlyOnce is a session under exactly-once: the transactional
// producer first (it fences older instances and aborts what they left
// open), then the position committed in Kafka, then the source.
func (s *session) runExactlyOnce(ctx context.Context) (err error) {
	r := s.r
	snk, err := r.newSink(ctx)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			// Nothing of the open transaction may become visible. The
			// abort is also where an instance that failed for another
			// reason (its database connection, after a pause) learns
			// that it was fenced meanwhile: it must stop then, not start
			// a producer that would fence the newer instance.
			if aerr := snk.Abort(); errors.Is(aerr, sink.ErrFenced) && !errors.Is(err, sink.ErrFenced) {
				err = fmt.Errorf("%w (after: %v)", aerr, err)
			}
		}
		_ = snk.Close()
	}()
	from, err := s.start(ctx, snk)
	if err != nil {
		return err
	}
	s.from = from
	reader, err := s.open(ctx, from)
	if err != nil {
		return err
	}
	defer reader.Close()
	s.streamed = true

	c := newTxCommitter(r, reader, snk, from, s.progress)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	commitErr := make(chan error, 1)
	go func() { commitErr <- c.run(readCtx, stopReading) }()

	p := &pump{r: r, reader: reader, sink: snk, tracker: c.tracker, failed: c.err, eos: c.at}
	readErr := p.run(readCtx, false)
	stopReading()
	cpErr := <-commitErr
	if (ctx.Err() != nil || errors.Is(readErr, source.ErrEndOfRange)) && cpErr == nil && c.err() == nil {
		// A clean stop (or the end of a bounded range): commit what was
		// sent, wherever the pump stopped (inside a transaction too), and
		// nothing is sent twice.
		if err := c.finish(ctx); err != nil {
			cpErr = err
		} else {
			committed = true
		}
	}
	s.moved = c.moved
	s.logEnd(c.saved, c.moved, "committed at end of session")
	return s.outcome(ctx, c.err(), cpErr, readErr)
}

// open opens the reader after from and checks the outbox tables it
// found against the mapping.
func (s *session) open(ctx context.Context, from string) (source.Reader, error) {
	reader, err := s.r.src.Open(ctx, from)
	if err != nil {
		return nil, err
	}
	// A table lacking a configured column is a configuration error: find
	// it now rather than at its first row.
	for _, t := range reader.Tables() {
		if err := s.r.mapper.CheckTable(t); err != nil {
			_ = reader.Close()
			return nil, retry.Stop(fmt.Errorf("outbox mapping: %w", err))
		}
	}
	return reader, nil
}

func (s *session) logEnd(saved string, moved bool, msg string) {
	if saved == "" || !moved {
		return
	}
	if s.r.cfg.Ephemeral {
		s.r.log.Info().Str("position", saved).Msg("read up to here (nothing stored)")
	} else {
		s.r.log.Info().Str("position", saved).Msg(msg)
	}
}

// outcome is the session's result from what failed first: an
// acknowledgement, the checkpoint, or the reading.
func (s *session) outcome(ctx context.Context, ackErr, cpErr, readErr error) error {
	var tooLarge *refusedTooLarge
	switch {
	case errors.As(ackErr, &tooLarge):
		// The next session hands that row to outbox.on_bad_row rather
		// than sending it again.
		s.r.refused[tooLarge.key] = tooLarge.detail
		return fmt.Errorf("kafka refused a record as too large, at transaction %s row %d (the next session applies outbox.on_bad_row to it): %w", tooLarge.key.tx, tooLarge.key.index, ackErr)
	case ackErr != nil:
		return fmt.Errorf("kafka did not acknowledge a record: %w", ackErr)
	case cpErr != nil:
		return cpErr
	case errors.Is(readErr, context.Canceled) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(readErr, source.ErrEndOfRange):
		return nil // a bounded run (replay) is complete
	}
	return readErr
}

// start returns the position to resume from: the stored checkpoint, or, on
// the very first start, the configured start resolved once and stored
// before anything is sent, so that a retry or restart resumes there
// instead of resolving it again past rows committed in between.
func (s *session) start(ctx context.Context, tx sink.Sink) (string, error) {
	r := s.r
	cp, err := r.store.Load(ctx)
	switch {
	case err == nil:
		if cp.Source != r.src.Kind() {
			return "", retry.Stop(fmt.Errorf("the checkpoint holds a %s position (%s) but this relay reads a %s source: point the checkpoint store elsewhere", cp.Source, cp.Position, r.src.Kind()))
		}
		return cp.Position, nil
	case errors.Is(err, checkpoint.ErrNotFound):
		from, err := r.src.Resolve(ctx)
		if err != nil || from == "" {
			return "", err // "": the server holds the start (a replication slot)
		}
		cp := checkpoint.Checkpoint{Source: r.src.Kind(), Position: from, UpdatedAt: time.Now().UTC()}
		if err := s.store(ctx, tx, cp); err != nil {
			return "", fmt.Errorf("store the start position %s: %w", from, err)
		}
		r.log.Info().Str("position", from).Msg("no checkpoint yet: stored the start position")
		return from, nil
	case errors.Is(err, checkpoint.ErrUnavailable) && !isPermanent(err):
		return "", err // the store is out of reach (Kafka down): an outage, waited out
	}
	return "", retry.Stop(fmt.Errorf("load the checkpoint: %w", err))
}

// store saves cp: in the store, or, under exactly-once, as a Kafka
// transaction of its own on the session's producer (tx).
func (s *session) store(ctx context.Context, tx sink.Sink, cp checkpoint.Checkpoint) error {
	r := s.r
	if tx == nil {
		return r.store.Save(ctx, cp)
	}
	rec, err := r.cfg.PositionRecord(cp)
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx, rec); err != nil {
		return err
	}
	if r.cfg.OnCommit != nil {
		r.cfg.OnCommit(cp)
	}
	return nil
}

// drain waits until every record sent is acknowledged or failed, so that a
// clean stop leaves nothing to send twice — up to the shutdown timeout, or
// briefly after a failure (waiting long only delays the restart, and what
// stays unacknowledged is sent again anyway). Past that the sink is
// aborted: when drain returns, the session's producer writes nothing more,
// so no record of it can land after the next session's.
func (s *session) drain(ctx context.Context, snk sink.Sink, tracker *checkpoint.Tracker[txEnd]) {
	r := s.r
	closed := make(chan struct{})
	go func() {
		_ = snk.Close()
		close(closed)
	}()
	wait, why := r.cfg.ShutdownTimeout, "shutdown"
	if ctx.Err() == nil {
		wait, why = min(r.cfg.ShutdownTimeout, failureDrain), "failure"
	}
	select {
	case <-closed:
		return
	case <-time.After(wait):
	}
	r.log.Warn().Int("in_flight", tracker.InFlight()).Str("waited", wait.String()).Str("after", why).
		Msg("records still unacknowledged: the producer is stopped; the checkpoint stays at the last acknowledged transaction and they will be sent again")
	_ = snk.Abort()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		// Abort makes Close return promptly; this only names a bug.
		r.log.Error().Msg("the producer did not stop within a minute of being aborted")
		<-closed
	}
}
