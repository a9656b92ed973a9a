package inbox

import (
	"context"
	"errors"
	"time"

	"github.com/IBM/sarama"
	"github.com/cenkalti/backoff/v4"
)

// GroupHandler is a sarama.ConsumerGroupHandler that processes each record
// of a claim through Inbox.Process, in order, and marks its offset only
// after the record's transaction has committed. Offsets are committed by
// sarama later still (auto-commit or session end), so a consumer that dies
// anywhere in between gets records again, and the inbox skips them.
//
// A failed record is retried, with exponential backoff up to MaxBackoff,
// until it succeeds or the session ends; it is never skipped, so a record
// that can never succeed (ErrBadRecord, or a Func that always fails) stops
// its partition, visibly through OnError. Handle records you may want to
// skip in a loop of your own around Handle or Process.
type GroupHandler struct {
	DB    TxBeginner // required
	Inbox *Inbox     // required
	// OnResult, when set, is called after each record's transaction has
	// committed, before its offset is marked (logs, metrics).
	OnResult func(*sarama.ConsumerMessage, Result)
	// OnError, when set, is called after each failed attempt.
	OnError func(*sarama.ConsumerMessage, error)
	// MaxBackoff caps the wait between attempts. Default 5s; the first
	// wait is 50ms.
	MaxBackoff time.Duration
}

var _ sarama.ConsumerGroupHandler = (*GroupHandler)(nil)

// Setup implements sarama.ConsumerGroupHandler. It refuses a handler
// without DB or Inbox, before any record is claimed.
func (h *GroupHandler) Setup(sarama.ConsumerGroupSession) error {
	switch {
	case h.DB == nil:
		return errors.New("inbox: GroupHandler.DB is nil")
	case h.Inbox == nil:
		return errors.New("inbox: GroupHandler.Inbox is nil")
	}
	return nil
}

// Cleanup implements sarama.ConsumerGroupHandler.
func (h *GroupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim implements sarama.ConsumerGroupHandler.
func (h *GroupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			res, err := h.process(ctx, msg)
			if err != nil {
				// The session ended (rebalance or shutdown) before the
				// record succeeded: its offset stays unmarked.
				return nil
			}
			if h.OnResult != nil {
				h.OnResult(msg, res)
			}
			sess.MarkMessage(msg, "")
		case <-ctx.Done():
			return nil
		}
	}
}

// process retries Process until it succeeds or ctx ends.
func (h *GroupHandler) process(ctx context.Context, msg *sarama.ConsumerMessage) (Result, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	if h.MaxBackoff > 0 {
		b.MaxInterval = h.MaxBackoff
	}
	b.MaxElapsedTime = 0 // never give a record up
	b.Reset()
	var res Result
	err := backoff.RetryNotify(func() error {
		r, err := h.Inbox.Process(ctx, h.DB, msg)
		if err != nil {
			if ctx.Err() != nil {
				return backoff.Permanent(ctx.Err())
			}
			return err
		}
		res = r
		return nil
	}, backoff.WithContext(b, ctx), func(err error, _ time.Duration) {
		if h.OnError != nil {
			h.OnError(msg, err)
		}
	})
	return res, err
}
