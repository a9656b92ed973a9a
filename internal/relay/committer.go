package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/failpoint"
	"github.com/outboxrelay/outboxrelay/source"
)

// committer owns the moment sent work becomes durable (at-least-once): the
// tracker of acknowledgements, how often the watermark is saved, the save
// itself, telling the source (which may then release log), and the final
// save of a session. The pump only tells it what it sent.
//
// Under exactly-once, txCommitter (exactly.go) takes its place: its commit
// writes the records and the position in one Kafka transaction. The
// sources see no difference: they only ever get Ack(position).
type committer struct {
	kind   string
	store  checkpoint.Store
	reader interface {
		Ack(context.Context, source.Position) error
	}
	tracker  *checkpoint.Tracker[txEnd]
	interval time.Duration
	log      zerolog.Logger
	saved    string // position text last stored
	moved    bool   // the checkpoint moved in this session
	progress func() // told when the checkpoint moves
}

func newCommitter(r *Relay, reader source.Reader, from string, progress func()) *committer {
	t := checkpoint.NewTracker[txEnd]()
	t.Merge(mergeEnds)
	t.Inside(inside)
	obs := r.cfg.Observer
	t.OnPass(func(e txEnd) { obs.Acked(e.commit, e.read, e.records) })
	return &committer{
		kind: r.src.Kind(), store: r.store, reader: reader, tracker: t,
		interval: r.cfg.CheckpointInterval, log: r.log, saved: from, progress: progress,
	}
}

// err is the first failed acknowledgement: nothing more may be sent then.
func (c *committer) err() error { return c.tracker.Err() }

// run saves the watermark every interval while it moves, until ctx ends or
// saving fails; stop is called when an acknowledgement failed, so that the
// pump stops at once rather than at its next record.
func (c *committer) run(ctx context.Context, stop func()) error {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if c.tracker.Err() != nil {
			stop()
			return nil
		}
		if err := c.save(ctx); err != nil && ctx.Err() == nil {
			stop()
			return err
		}
	}
}

// save stores the watermark if it moved, then tells the source.
func (c *committer) save(ctx context.Context) error {
	mark, ok := c.tracker.Watermark()
	if !ok {
		return nil
	}
	s := mark.pos.String()
	if s == c.saved {
		return nil
	}
	failpoint.Inject("ack-before-checkpoint")
	if err := c.store.Save(ctx, checkpoint.Checkpoint{Source: c.kind, Position: s, UpdatedAt: time.Now().UTC()}); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", s, err)
	}
	c.saved, c.moved = s, true
	failpoint.Inject("after-checkpoint")
	c.log.Debug().Str("position", s).Msg("checkpoint saved")
	c.progress()
	return c.reader.Ack(ctx, mark.pos)
}

// finish is the session's last save, once the sink has drained.
func (c *committer) finish(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return c.save(fctx)
}
