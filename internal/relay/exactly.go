package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/failpoint"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Exactly-once (relay.delivery: exactly-once). The sink is transactional:
// every record sent since the last commit belongs to one open Kafka
// transaction. Every relay.commit_interval (or once relay.commit_max_records
// were sent) the txCommitter takes the lock the pump holds around each
// row, so that the pump stands between rows; it encodes the position the
// pump reached — a transaction's end, or a point inside a transaction —
// as the position record, and commits it with the records it covers in
// that one transaction. A crash at any moment leaves either the old
// records and position or the new ones visible to read_committed
// consumers, never a mix: the next instance's producer aborts whatever
// the last one left open, and starts from the committed position.

// sent is how far the pump got, as the commits see it. The pump holds mu
// while it hands a row to the sink and updates it; a commit holds mu
// while it commits.
type sent struct {
	mu sync.Mutex
	// Where the pump stands: the end of the last transaction it passed,
	// or rows of the open one (start non-nil).
	end   source.Position
	start source.TxStart
	rows  int
	// records sent since the last commit, and the limit that asks for
	// an early commit through full. The limit is hard: at max records the
	// pump waits (waitRoom) until committed is closed by the commit that
	// empties the transaction, so that a fast source cannot grow one
	// Kafka transaction past it while the commit waits for its turn.
	records, max int
	full         chan struct{}
	committed    chan struct{}
}

// waitRoom returns with mu held once the open Kafka transaction has room
// for another record, or ctx's error (mu not held). Caller holds mu.
func (s *sent) waitRoom(ctx context.Context) error {
	for s.max > 0 && s.records >= s.max {
		ch := s.committed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	return nil
}

// emptied records that a commit emptied the transaction. Caller holds mu.
func (s *sent) emptied() {
	s.records = 0
	close(s.committed)
	s.committed = make(chan struct{})
}

// row records that the row at index of the transaction starting at start
// was handled (sent, when n, or dealt with by on_bad_row).
func (s *sent) row(start source.TxStart, index int, n bool) {
	if start != nil {
		s.start, s.rows = start, index+1
	}
	if n {
		s.records++
		if s.records >= s.max {
			select {
			case s.full <- struct{}{}:
			default:
			}
		}
	}
}

// ended records that a transaction ended at end.
func (s *sent) ended(end source.Position) {
	s.mu.Lock()
	s.end, s.start, s.rows = end, nil, 0
	s.mu.Unlock()
}

// position is where the pump stands (nil: nowhere yet). Caller holds mu.
func (s *sent) position() source.Position {
	if s.start != nil && s.rows > 0 {
		return s.start.After(s.rows)
	}
	return s.end
}

// txCommitter is the commit point under exactly-once.
type txCommitter struct {
	kind   string
	sink   sink.Sink
	reader interface {
		Ack(context.Context, source.Position) error
	}
	tracker  *checkpoint.Tracker[txEnd]
	at       *sent
	interval time.Duration
	// timeout is kafka.transaction_timeout: a transaction not committed
	// within four fifths of it is given up (the broker would abort it).
	timeout time.Duration
	record  func(checkpoint.Checkpoint) (sink.Record, error)
	commits func(checkpoint.Checkpoint)
	obs     Observer
	log     zerolog.Logger

	began    time.Time // when the open Kafka transaction began
	saved    string    // position text last committed
	moved    bool
	progress func()

	passMu sync.Mutex
	passed []txEnd // transactions acknowledged since the last commit
}

func newTxCommitter(r *Relay, reader source.Reader, snk sink.Sink, from string, progress func()) *txCommitter {
	c := &txCommitter{
		kind: r.src.Kind(), sink: snk, reader: reader, tracker: checkpoint.NewTracker[txEnd](),
		at:       &sent{max: r.cfg.CommitMaxRecords, full: make(chan struct{}, 1), committed: make(chan struct{})},
		interval: r.cfg.CommitInterval, timeout: r.cfg.TransactionTimeout,
		record: r.cfg.PositionRecord, commits: r.cfg.OnCommit, obs: r.cfg.Observer, log: r.log,
		began: time.Now(), saved: from, progress: progress,
	}
	c.tracker.Merge(mergeEnds)
	c.tracker.OnPass(func(e txEnd) {
		// Visible only once committed: the Observer hears of them then.
		c.passMu.Lock()
		if n := len(c.passed); n >= 1024 {
			c.passed[n-1] = mergeEnds(c.passed[n-1], e)
		} else {
			c.passed = append(c.passed, e)
		}
		c.passMu.Unlock()
	})
	return c
}

// err is the first failed acknowledgement: the open transaction must not
// commit, and nothing more may be sent.
func (c *txCommitter) err() error { return c.tracker.Err() }

// run commits every interval, or when the pump filled a transaction,
// until ctx ends or a commit fails; stop ends the pump's reading then.
func (c *txCommitter) run(ctx context.Context, stop func()) error {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-c.at.full:
		}
		if c.tracker.Err() != nil {
			stop()
			return nil
		}
		if err := c.commit(ctx); err != nil {
			stop()
			if ctx.Err() != nil && !errors.Is(err, sink.ErrFenced) {
				return nil // stopping: finish commits or gives up
			}
			return err
		}
	}
}

// commit commits the open Kafka transaction with the position the pump
// reached, if it moved.
func (c *txCommitter) commit(ctx context.Context) error {
	c.at.mu.Lock()
	defer c.at.mu.Unlock()
	if err := c.tracker.Err(); err != nil {
		return err
	}
	pos := c.at.position()
	if pos == nil {
		return nil
	}
	s := pos.String()
	if s == c.saved && c.at.records == 0 {
		return nil
	}
	cp := checkpoint.Checkpoint{Source: c.kind, Position: s, UpdatedAt: time.Now().UTC()}
	rec, err := c.record(cp)
	if err != nil {
		return fmt.Errorf("encode the position %s: %w", s, err)
	}
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), c.began.Add(c.timeout*4/5))
	defer cancel()
	failpoint.Inject("before-commit")
	if err := c.sink.Commit(cctx, rec); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the Kafka transaction up to %s could not commit within four fifths of kafka.transaction_timeout (%s): it is aborted and the relay resumes from the position committed before it: %w", s, c.timeout, err)
		}
		return fmt.Errorf("commit the Kafka transaction up to %s: %w", s, err)
	}
	failpoint.Inject("after-commit")
	c.began = time.Now()
	c.saved, c.moved = s, true
	c.at.emptied()
	if c.commits != nil {
		c.commits(cp)
	}
	c.passMu.Lock()
	passed := c.passed
	c.passed = nil
	c.passMu.Unlock()
	for _, e := range passed {
		c.obs.Acked(e.commit, e.read, e.records)
	}
	c.log.Debug().Str("position", s).Msg("committed")
	c.progress()
	return c.reader.Ack(ctx, pos)
}

// finish is a clean stop's last commit.
func (c *txCommitter) finish(ctx context.Context) error {
	return c.commit(context.WithoutCancel(ctx))
}
