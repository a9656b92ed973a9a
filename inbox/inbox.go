package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/IBM/sarama"
)

// Func applies one event to the service's state, inside tx. It must do all
// its database work through tx (so that it commits or rolls back with the
// inbox row) and must not commit or roll back tx itself. An error rolls
// the whole transaction back and the record is retried.
type Func func(ctx context.Context, tx *sql.Tx, ev Event) error

// Result says what Handle did with a record. Every Result is a success:
// commit the transaction, then mark the offset.
type Result int

const (
	// Applied: the event was new; Func ran and succeeded.
	Applied Result = iota + 1
	// Duplicate: an event with this id was handled before (or is being
	// handled by a transaction that committed while this one waited).
	// Func did not run.
	Duplicate
	// Stale: Config.CheckVersion is on and an event at or after this one's
	// version was already applied to its aggregate. Func did not run; the
	// inbox row is kept, so a redelivery is a Duplicate.
	Stale
)

func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Config configures an Inbox. Table names are used in SQL as written: plain
// identifiers, optionally qualified by a schema (database on MySQL).
type Config struct {
	// Dialect is MySQL or Postgres. Required.
	Dialect Dialect
	// Table is the inbox table (event ids). Default "inbox".
	Table string
	// CheckVersion turns the per-aggregate version check on: an event
	// whose (position, index) is not after the last applied one of its
	// aggregate is Stale. Default false. Use it where events of an
	// aggregate must apply in log order even after a replay, or after
	// pruning; records without the position headers then are bad records,
	// and records with a null or empty key skip the check (they have no
	// aggregate).
	CheckVersion bool
	// VersionTable holds the last version per (scope, aggregate). Default
	// "inbox_version". Used only with CheckVersion.
	VersionTable string
	// Scope names the log whose positions a record's version is compared
	// within: positions of different relays do not compare. Default: the
	// record's topic, right when each topic is fed by one relay.
	Scope func(*sarama.ConsumerMessage) string
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Validate checks c after defaults are applied; the error names the field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, err := c.Dialect.statements(c.Table, c.VersionTable); err != nil {
		return err
	}
	if !identRE.MatchString(c.Table) {
		return fmt.Errorf("inbox: Config.Table %q: want a plain identifier, optionally schema-qualified", c.Table)
	}
	if !identRE.MatchString(c.VersionTable) {
		return fmt.Errorf("inbox: Config.VersionTable %q: want a plain identifier, optionally schema-qualified", c.VersionTable)
	}
	if c.Table == c.VersionTable {
		return fmt.Errorf("inbox: Config.VersionTable %q: must differ from Config.Table", c.VersionTable)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Table == "" {
		c.Table = "inbox"
	}
	if c.VersionTable == "" {
		c.VersionTable = "inbox_version"
	}
	if c.Scope == nil {
		c.Scope = func(m *sarama.ConsumerMessage) string { return m.Topic }
	}
	return c
}

// Inbox handles records idempotently. It holds no connection and no state
// between calls: any number of goroutines and processes may share one
// inbox table.
type Inbox struct {
	cfg Config
	sql statements
	fn  Func
}

// New returns an Inbox that runs fn for each new event.
func New(cfg Config, fn Func) (*Inbox, error) {
	if fn == nil {
		return nil, errors.New("inbox: New: fn is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	st, _ := cfg.Dialect.statements(cfg.Table, cfg.VersionTable)
	return &Inbox{cfg: cfg, sql: st, fn: fn}, nil
}

// Handle claims msg's event id in the inbox table, checks its version when
// configured, and runs the Func — all in tx, which the caller then commits
// (for any Result) or rolls back (on error). Handle itself neither commits
// nor rolls back. An error wraps ErrBadRecord for a record that can never
// be handled, else the Func's or the database's error.
//
// A second Handle of the same id blocks until the first transaction ends:
// if it committed, the second sees a Duplicate; if it rolled back, the
// second applies the event.
func (in *Inbox) Handle(ctx context.Context, tx *sql.Tx, msg *sarama.ConsumerMessage) (Result, error) {
	ev, err := ParseEvent(msg)
	if err != nil {
		return 0, err
	}
	fresh, err := in.claim(ctx, tx, ev)
	if err != nil {
		return 0, fmt.Errorf("inbox: claim event %s: %w", ev.ID, err)
	}
	if !fresh {
		return Duplicate, nil
	}
	if in.cfg.CheckVersion && len(ev.Aggregate) > 0 {
		fresh, err := in.advanceVersion(ctx, tx, ev)
		if err != nil {
			return 0, err
		}
		if !fresh {
			return Stale, nil
		}
	}
	if err := in.fn(ctx, tx, ev); err != nil {
		return 0, fmt.Errorf("inbox: event %s (%s): %w", ev.ID, ev.Type, err)
	}
	return Applied, nil
}

// claim inserts ev's inbox row and reports whether it is new; on a
// duplicate it counts the redelivery on the existing row instead.
func (in *Inbox) claim(ctx context.Context, tx *sql.Tx, ev Event) (bool, error) {
	msg := ev.Message
	args := []any{ev.ID, truncate(msg.Topic, maxIDLen), msg.Partition, msg.Offset}
	if in.cfg.Dialect == Postgres {
		var dups int64
		if err := tx.QueryRowContext(ctx, in.sql.claim, args...).Scan(&dups); err != nil {
			return false, err
		}
		return dups == 0, nil
	}
	res, err := tx.ExecContext(ctx, in.sql.claim, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	// MySQL: 1 for an inserted row, 2 for an updated one.
	return n == 1, nil
}

// advanceVersion locks the aggregate's version row and moves it to ev's
// version; it reports false, moving nothing, when ev is not newer.
func (in *Inbox) advanceVersion(ctx context.Context, tx *sql.Tx, ev Event) (bool, error) {
	msg := ev.Message
	if !ev.HasVersion {
		return false, badRecord(msg, "no %s/%s headers, needed by Config.CheckVersion", HeaderPosition, HeaderIndex)
	}
	scope := in.cfg.Scope(msg)
	switch {
	case len(ev.Aggregate) > maxIDLen:
		return false, badRecord(msg, "key is %d bytes, longer than %d", len(ev.Aggregate), maxIDLen)
	case scope == "" || len(scope) > maxIDLen:
		return false, badRecord(msg, "scope %q: want 1 to %d bytes", scope, maxIDLen)
	case len(ev.Version.Position) > maxIDLen:
		return false, badRecord(msg, "header %s is %d bytes, longer than %d", HeaderPosition, len(ev.Version.Position), maxIDLen)
	}
	// Bytes, not strings: both columns are binary (exact comparison, no
	// collation folding "A" into "a").
	sc, agg := []byte(scope), ev.Aggregate
	if _, err := tx.ExecContext(ctx, in.sql.ensureVersion, sc, agg); err != nil {
		return false, fmt.Errorf("inbox: version row of %q: %w", agg, err)
	}
	var last Version
	if err := tx.QueryRowContext(ctx, in.sql.lockVersion, sc, agg).Scan(&last.Position, &last.Index); err != nil {
		return false, fmt.Errorf("inbox: lock version row of %q: %w", agg, err)
	}
	if last.Position != "" {
		c, err := ev.Version.Compare(last)
		if err != nil {
			return false, fmt.Errorf("inbox: event %s of %q: version %v against last applied %v: %w", ev.ID, agg, ev.Version, last, err)
		}
		if c <= 0 {
			return false, nil
		}
	}
	if _, err := tx.ExecContext(ctx, in.sql.setVersion, ev.Version.Position, ev.Version.Index, sc, agg); err != nil {
		return false, fmt.Errorf("inbox: set version of %q: %w", agg, err)
	}
	return true, nil
}

// TxBeginner is what Process needs of a database: *sql.DB and *sql.Conn
// have it.
type TxBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Process runs Handle in a transaction of its own on db and commits it; on
// error it rolls back. A transaction conflict (IsRetryable) is retried at
// once, a few times, since it says nothing about the record. When Process
// returns a Result, the transaction has committed and the caller may mark
// the offset.
//
// A failed Commit may still have committed (the connection broke after the
// server committed): retrying is safe either way, as the retry finds the
// inbox row or applies the event.
func (in *Inbox) Process(ctx context.Context, db TxBeginner, msg *sarama.ConsumerMessage) (Result, error) {
	for attempt := 1; ; attempt++ {
		res, err := in.processOnce(ctx, db, msg)
		if err == nil || !IsRetryable(err) || attempt == conflictRetries || ctx.Err() != nil {
			return res, err
		}
		// A short, growing pause lets the surviving transaction finish.
		select {
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		case <-ctx.Done():
			return 0, err
		}
	}
}

// conflictRetries bounds Process's attempts on transaction conflicts.
const conflictRetries = 5

func (in *Inbox) processOnce(ctx context.Context, db TxBeginner, msg *sarama.ConsumerMessage) (Result, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("inbox: begin: %w", err)
	}
	res, err := in.Handle(ctx, tx, msg)
	if err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			err = errors.Join(err, fmt.Errorf("inbox: rollback: %w", rerr))
		}
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("inbox: commit: %w", err)
	}
	return res, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
