// Package source defines what every change-log source hands to the relay:
// committed transactions, in commit order, each ending at a typed position.
//
// It owns only the shared vocabulary (Position, Tx, Row, Reader). The
// implementations live in subpackages (source/mysql, source/postgres); this
// package must not know about any database, mapping or sink.
package source

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/schema"
)

// Position is a point in one source's log. Its String form is stable and
// round-trips through the source's own parser, so it can be stored in a
// checkpoint and typed by an operator.
type Position interface {
	String() string
}

// TxStart is where a transaction can be read again from: the position
// right before it, which can also count rows of it already delivered.
type TxStart interface {
	Position
	// After returns the position inside the transaction once its first n
	// rows (n ≥ 1) are delivered: a reader opened there re-reads the
	// transaction from its start and hands out only the rest — a counted
	// point inside a committed transaction, never a raw log offset.
	After(n int) Position
}

// Row is one outbox INSERT as the source decoded it.
type Row struct {
	// Table describes the columns of Values. Rows of one table share the
	// same *Table until its layout changes, so consumers may cache work per
	// pointer.
	Table *schema.Table
	// Values holds one value per column of Table: nil, []byte, string or a
	// Go number/time as the source decodes it.
	Values []any
}

// Tx is a committed transaction, or a piece of one: large transactions are
// handed out in several pieces so that memory does not grow with their size.
// Every piece of a transaction carries the same ID; only the last has End set.
type Tx struct {
	// ID identifies the transaction in the log: stable across restarts and
	// ordered like the log (MySQL: position of its first event; Postgres: its
	// commit LSN). Records carry it in a header so consumers can drop
	// duplicates.
	ID string
	// Start is where the transaction can be read again from (the position
	// right before it), and, through its After, the position inside it
	// once some of its rows are delivered: a checkpoint may stop inside a
	// large transaction, and an exactly-once relay commits one Kafka
	// transaction per slice of it. Nil for a transaction without rows.
	Start TxStart
	// FirstIndex is the index within the transaction of Rows[0].
	FirstIndex int
	// Rows are the outbox INSERTs of this piece, in log order. Transactions
	// that touched no outbox table arrive with no rows, so that the
	// checkpoint can still move past them.
	Rows []Row
	// End is the position right after the transaction's commit; nil while
	// more pieces of the same transaction follow. Resuming at End never
	// starts inside a transaction.
	End Position
	// CommitTime is when the source committed the transaction (zero if the
	// source does not tell).
	CommitTime time.Time
	// Snapshot marks the pieces of an initial snapshot (start: snapshot,
	// source/snapshot): rows that existed in the outbox tables before the
	// stream's start, read from the tables rather than from the log.
	Snapshot bool
}

// Reader hands out committed transactions in commit order.
type Reader interface {
	// Next blocks until the next piece of a transaction is available. It
	// returns ctx.Err() when ctx ends.
	Next(ctx context.Context) (*Tx, error)
	// Ack tells the source that everything up to and including pos is
	// durable, so it may let the server release log up to there. Sources
	// whose server keeps no per-reader state (MySQL) ignore it.
	Ack(ctx context.Context, pos Position) error
	// Tables returns the outbox tables' layouts as the server showed them
	// when the reader opened (those the relay's user can see), so that the
	// mapping is checked before the first row.
	Tables() []*schema.Table
	Close() error
}

// Source is one configured kind of source — everything the relay, its
// commands (check, checkpoint show/set, replay) and its metrics need from a
// database. Implementations live in their own packages (source/mysql,
// source/postgres); source/kinds lists them. Positions cross this
// interface as their text form, which each kind parses itself.
type Source interface {
	// Kind names the kind, as in source.type and in checkpoints.
	Kind() string
	// Resolve returns the position a relay without a checkpoint starts
	// from (the configured start). The relay stores it before it sends
	// anything. "" means the server keeps that position itself (a
	// replication slot): Open("") starts there.
	Resolve(ctx context.Context) (string, error)
	// Open starts reading right after from (a checkpoint's position).
	Open(ctx context.Context, from string, o OpenOptions) (Reader, error)
	// Compare orders two positions of this kind: -1, 0 or 1.
	Compare(a, b string) (int, error)
	// Number maps a position to a number that grows with the log, for
	// metrics; false when it has none.
	Number(pos string) (float64, bool)
	// Status reports the server's position now and how far pos (if not
	// "") is behind it.
	Status(ctx context.Context, pos string) (PositionStatus, error)
	// Check verifies that a relay (or, with o.Replay, a replay) could
	// start right after pos, and returns the position to store: the same,
	// completed with what the server can tell (a GTID set).
	Check(ctx context.Context, pos string, o OpenOptions) (string, error)
	// Preflight checks what the source needs from the server and the
	// relay's user, given the stored position ("" if none), each with the
	// fix: the same checks Open applies before it streams, and more. It
	// changes nothing on the server.
	Preflight(ctx context.Context, pos string, saved time.Time, o PreflightOptions) []preflight.Check
	// StartNote says, for operators, where a relay with no checkpoint
	// starts ("source.mysql.start (current)").
	StartNote() string
}

// TableCheck checks an outbox table's layout against what the relay will
// do with its rows (the outbox mapping): a non-nil error names the problem
// and the fix.
type TableCheck func(*schema.Table) error

// OpenOptions tune a reader.
type OpenOptions struct {
	// CheckTable, when set, checks each outbox table the source finds at
	// open, before the source creates anything on the server (a Postgres
	// publication or slot); a failure stops the open (permanently).
	CheckTable TableCheck
	// Replay opens a bounded re-read for `outboxrelay replay` that must
	// not disturb the running relay (MySQL: a replica id of its own;
	// Postgres: a temporary copy of the slot, never moving the relay's).
	Replay bool
	// ReplicaID is a replay's MySQL replica server_id (0: a free one).
	ReplicaID uint32
	// TakeOver says the relay holds the fence (exactly-once: its
	// producer epoch fenced every older instance of it), so an older
	// instance still holding what only one reader may hold (a Postgres
	// slot) is stale and may be disconnected instead of waited for.
	TakeOver bool
}

// PreflightOptions tune Preflight.
type PreflightOptions struct {
	// CheckTable is the mapping's check of each outbox table (as for Open).
	CheckTable TableCheck
	// RelayPID is the process of a relay running on this configuration
	// (0: none), so that what it holds (its replica id) is not a conflict.
	RelayPID int
}

// Config is one kind's configuration section (source.<kind>).
type Config interface {
	// SetDefaults fills the zero fields with their defaults.
	SetDefaults()
	// Validate names the field at fault (without the source.<kind>
	// prefix).
	Validate() error
	// OutboxTables lists the configured outbox tables, for logs.
	OutboxTables() []string
	// NewSource returns the source; nothing connects yet.
	NewSource(log zerolog.Logger) Source
}

// ErrEndOfRange is returned by a Reader bounded to a range (replay) once it
// has handed out the last transaction of the range: the relay then stops as
// on a clean shutdown.
var ErrEndOfRange = errors.New("end of the requested range")

// PositionStatus is what the server says about a position.
type PositionStatus struct {
	// Current is the server's position now, in checkpoint form.
	Current string
	// BehindBytes is the log between the position and Current (-1 if the
	// server does not tell).
	BehindBytes int64
	// Notes are facts an operator should see (e.g. the oldest position the
	// server still has, a slot's state).
	Notes []string
}
