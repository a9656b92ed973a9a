// Package cleanup deletes delivered outbox rows (outbox.cleanup): rows
// older than the retention whose records the durable checkpoint covers,
// in small batches, on a database connection of its own.
//
// The coverage rule (docs/operations.md, "Outbox cleanup"): a round first
// reads the keys of old rows (the set S, visible at time T0), then the
// server's log position P0. Every row of S was committed before it could
// be read, so its transaction ends in the log at or before P0. Once the
// durable checkpoint is at or after P0, every record of every transaction
// up to P0 — so every row of S — has been acknowledged by Kafka, and the
// round deletes exactly the rows of S (by key), never a row it did not
// see at T0. Rows committed after T0 wait for a later round.
//
// It owns the rounds and their timing; it must not know SQL (the source's
// TableConn does) nor how the checkpoint is stored (Durable tells).
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// batchesPerRound is how many batches of keys one round reads at T0: a
// round waits for the checkpoint once (about a checkpoint interval), so
// that wait is shared by several small DELETEs.
const batchesPerRound = 10

// Options wire a Cleaner.
type Options struct {
	Config outbox.Cleanup
	// IDColumn is each table's key column (the mapping's event id).
	IDColumn func(table string) string
	// Tables opens the cleanup's own connection.
	Tables source.TableAccess
	// Compare orders two positions of the source.
	Compare func(a, b string) (int, error)
	// Durable returns the durable checkpoint's position now
	// (checkpoint.ErrNotFound when there is none yet).
	Durable func(ctx context.Context) (string, error)
	// Deleted, if set, counts deleted rows (for metrics).
	Deleted func(table string, n int64)
	// Oldest, if set, is told the age of the oldest row left in any
	// outbox table after each round (ok false: all empty).
	Oldest func(age time.Duration, ok bool)
	// Poll is how often a round asks Durable while it waits. Default
	// 100ms.
	Poll time.Duration
	// Retry bounds the backoff after failures.
	Retry retry.Policy
}

// Cleaner runs the rounds.
type Cleaner struct {
	o   Options
	log zerolog.Logger
	// oldestAt is when the oldest row was last measured: MIN over a
	// table without an index on the column scans it, so it is measured
	// at most once per oldestEvery (or interval, if longer).
	oldestAt time.Time
}

// oldestEvery bounds how often the oldest-row gauge is measured: fresh
// enough for an alert on hours, and a table scan at most every so often.
const oldestEvery = 30 * time.Second

// New returns a Cleaner; nothing connects until Run.
func New(o Options, log zerolog.Logger) *Cleaner {
	o.Config.SetDefaults()
	if o.Poll == 0 {
		o.Poll = 100 * time.Millisecond
	}
	if o.Retry.Max == 0 {
		o.Retry.Max = 5 * time.Minute
	}
	o.Retry.Failing = "outbox cleanup failed; retrying with backoff (nothing is deleted meanwhile, the relay goes on)"
	o.Retry.Recovered = "outbox cleanup works again"
	return &Cleaner{o: o, log: log}
}

// Run deletes until ctx ends. Every failure is retried with backoff (a
// missing grant or column too, so that the cleanup never stops the
// relay: its warning names the table and the fix).
func (c *Cleaner) Run(ctx context.Context) error {
	cfg := c.o.Config
	c.log.Info().Str("retention", cfg.Retention.String()).Int("batch_size", cfg.BatchSize).Str("interval", cfg.Interval.String()).Str("column", cfg.Column).
		Msg("outbox cleanup on: deleting delivered rows older than the retention")
	err := retry.Do(ctx, c.log, c.o.Retry, func(ctx context.Context, healthy func()) error {
		err := c.session(ctx, healthy)
		if source.IsPermanent(err) {
			// An operator must act (a grant, a column): say so loudly,
			// and keep trying, slowly, instead of stopping for good.
			c.log.Error().Err(err).Msg("outbox cleanup cannot work until this is fixed; nothing is deleted, the relay goes on")
			return retryable{err}
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// retryable hides that err is permanent from retry.Do (no Unwrap).
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }

// session is one connection's life: rounds until ctx ends or a failure.
func (c *Cleaner) session(ctx context.Context, healthy func()) error {
	conn, err := c.o.Tables.OpenTables(ctx)
	if err != nil {
		return fmt.Errorf("outbox cleanup: connect: %w", err)
	}
	defer conn.Close()
	names, err := conn.Tables(ctx)
	if err != nil {
		return fmt.Errorf("outbox cleanup: list the outbox tables: %w", err)
	}
	specs := make([]source.TableSpec, 0, len(names))
	for _, n := range names {
		t := source.TableSpec{Table: n, Key: c.o.IDColumn(n), Time: c.o.Config.Column}
		if err := conn.CheckTable(ctx, t); err != nil {
			return fmt.Errorf("outbox cleanup: %w", err)
		}
		specs = append(specs, t)
	}
	if len(specs) == 0 {
		c.log.Warn().Msg("outbox cleanup: no outbox table to clean (source tables match none)")
	}
	for {
		full, err := c.round(ctx, conn, specs)
		if err != nil {
			return err
		}
		healthy()
		if full {
			continue // more old rows wait: no pause
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.o.Config.Interval):
		}
	}
}

// round reads the old rows' keys (S at T0), then P0, waits until the
// durable checkpoint covers P0, and deletes S. full reports that a table
// had more old rows than one round takes.
func (c *Cleaner) round(ctx context.Context, conn source.TableConn, specs []source.TableSpec) (full bool, err error) {
	cfg := c.o.Config
	limit := cfg.BatchSize * batchesPerRound
	sets := make([][]string, len(specs))
	total := 0
	for i, t := range specs {
		keys, err := conn.OldKeys(ctx, t, cfg.Retention, limit)
		if err != nil {
			return false, fmt.Errorf("outbox cleanup: %w", err)
		}
		sets[i] = keys
		total += len(keys)
		full = full || len(keys) == limit
	}
	if total > 0 {
		// Read after the keys: see the package comment.
		p0, err := conn.Position(ctx)
		if err != nil {
			return false, fmt.Errorf("outbox cleanup: read the server's position: %w", err)
		}
		if err := c.waitCovered(ctx, p0); err != nil {
			return false, err
		}
		for i, t := range specs {
			if err := c.delete(ctx, conn, t, sets[i]); err != nil {
				return false, err
			}
		}
	}
	if c.o.Oldest != nil && time.Since(c.oldestAt) >= max(cfg.Interval, oldestEvery) {
		c.oldestAt = time.Now()
		var oldest time.Duration
		found := false
		for _, t := range specs {
			age, ok, err := conn.OldestAge(ctx, t)
			if err != nil {
				return false, fmt.Errorf("outbox cleanup: %w", err)
			}
			if ok && (!found || age > oldest) {
				oldest, found = age, true
			}
		}
		c.o.Oldest(oldest, found)
	}
	return full, nil
}

func (c *Cleaner) delete(ctx context.Context, conn source.TableConn, t source.TableSpec, keys []string) error {
	bs := c.o.Config.BatchSize
	var deleted int64
	for len(keys) > 0 {
		n := min(bs, len(keys))
		began := time.Now()
		d, err := conn.Delete(ctx, t, keys[:n], c.o.Config.Retention)
		if err != nil {
			return fmt.Errorf("outbox cleanup: %w", err)
		}
		if len(keys) > n {
			// Pace the batches: the database gets as much time for the
			// application's writes as the last DELETE took, so that a
			// backlog of old rows does not crowd out the stream.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(time.Since(began), time.Second)):
			}
		}
		deleted += d
		if c.o.Deleted != nil {
			c.o.Deleted(t.Table, d)
		}
		c.log.Debug().Str("table", t.Table).Int64("deleted", d).Str("first", keys[0]).Str("last", keys[n-1]).Msg("outbox cleanup: batch deleted")
		keys = keys[n:]
	}
	if deleted > 0 {
		c.log.Info().Str("table", t.Table).Int64("deleted", deleted).Msg("outbox cleanup: deleted delivered rows")
	}
	return nil
}

// waitCovered returns once the durable checkpoint is at or after p0.
func (c *Cleaner) waitCovered(ctx context.Context, p0 string) error {
	start := time.Now()
	warned := false
	for {
		pos, err := c.o.Durable(ctx)
		switch {
		case errors.Is(err, checkpoint.ErrNotFound), err == nil && snapshot.IsPending(pos):
			// No position yet, or the initial snapshot is still being
			// sent: nothing is covered.
		case err != nil:
			return fmt.Errorf("outbox cleanup: read the checkpoint: %w", err)
		default:
			cmp, err := c.o.Compare(pos, p0)
			if err == nil && cmp >= 0 {
				return nil
			}
			if err != nil && !warned {
				c.log.Warn().Err(err).Str("checkpoint", pos).Str("server_position", p0).Msg("outbox cleanup: the checkpoint cannot be compared with the server's position; nothing is deleted until it can")
				warned = true
			}
		}
		if !warned && time.Since(start) > 2*time.Minute {
			c.log.Warn().Str("checkpoint", pos).Str("server_position", p0).
				Msg("outbox cleanup: waiting for the durable checkpoint to reach the server's position before deleting (the relay is behind, stopped or blocked); nothing is deleted meanwhile")
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.o.Poll):
		}
	}
}
