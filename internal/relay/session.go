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
	r := s.r
	from, err := s.start(ctx)
	if err != nil {
		return err
	}
	s.from = from
	reader, err := r.src.Open(ctx, from)
	if err != nil {
		return err
	}
	defer reader.Close()
	// A table lacking a configured column is a configuration error: find
	// it now rather than at its first row.
	for _, t := range reader.Tables() {
		if err := r.mapper.CheckTable(t); err != nil {
			return retry.Stop(fmt.Errorf("outbox mapping: %w", err))
		}
	}
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

	p := &pump{r: r, reader: reader, sink: snk, c: c}
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
				Msg("stopped inside a transaction; its records sent so far will be sent again after a restart")
		}
		cancel()
	}
	s.drain(ctx, snk, c)
	if err := c.finish(ctx); err != nil && cpErr == nil {
		cpErr = err
	}
	s.moved = c.moved
	if c.saved != "" && c.moved {
		if r.cfg.Ephemeral {
			r.log.Info().Str("position", c.saved).Msg("read up to here (nothing stored)")
		} else {
			r.log.Info().Str("position", c.saved).Msg("checkpoint at end of session")
		}
	}

	ackErr := c.err()
	var tooLarge *refusedTooLarge
	switch {
	case errors.As(ackErr, &tooLarge):
		// The next session hands that row to outbox.on_bad_row rather
		// than sending it again.
		r.refused[tooLarge.key] = tooLarge.detail
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
func (s *session) start(ctx context.Context) (string, error) {
	r := s.r
	cp, err := r.store.Load(ctx)
	switch {
	case err == nil:
		if cp.Source != r.src.Kind() {
			return "", retry.Stop(fmt.Errorf("the checkpoint holds a %s position (%s) but this relay reads a %s source: point checkpoint.file.path elsewhere", cp.Source, cp.Position, r.src.Kind()))
		}
		return cp.Position, nil
	case errors.Is(err, checkpoint.ErrNotFound):
		from, err := r.src.Resolve(ctx)
		if err != nil || from == "" {
			return "", err // "": the server holds the start (a replication slot)
		}
		if err := r.store.Save(ctx, checkpoint.Checkpoint{Source: r.src.Kind(), Position: from, UpdatedAt: time.Now().UTC()}); err != nil {
			return "", fmt.Errorf("store the start position %s: %w", from, err)
		}
		r.log.Info().Str("position", from).Msg("no checkpoint yet: stored the start position")
		return from, nil
	case errors.Is(err, checkpoint.ErrUnavailable) && !isPermanent(err):
		return "", err // the store is out of reach (Kafka down): an outage, waited out
	}
	return "", retry.Stop(err)
}

// drain waits until every record sent is acknowledged or failed, so that a
// clean stop leaves nothing to send twice — up to the shutdown timeout, or
// briefly after a failure (waiting long only delays the restart, and what
// stays unacknowledged is sent again anyway). Past that the sink is
// aborted: when drain returns, the session's producer writes nothing more,
// so no record of it can land after the next session's.
func (s *session) drain(ctx context.Context, snk sink.Sink, c *committer) {
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
	r.log.Warn().Int("in_flight", c.tracker.InFlight()).Str("waited", wait.String()).Str("after", why).
		Msg("records still unacknowledged: the producer is stopped; the checkpoint stays at the last acknowledged transaction and they will be sent again")
	snk.Abort()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		// Abort makes Close return promptly; this only names a bug.
		r.log.Error().Msg("the producer did not stop within a minute of being aborted")
		<-closed
	}
}
