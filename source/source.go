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

	"github.com/outboxrelay/outboxrelay/schema"
)

// Position is a point in one source's log. Its String form is stable and
// round-trips through the source's own parser, so it can be stored in a
// checkpoint and typed by an operator.
type Position interface {
	String() string
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
	// Start is where the transaction can be read again from: the position
	// right before it. A reader opened there, told how many of its rows
	// were delivered, hands out only the rest (a position inside a
	// committed transaction). Nil if the source cannot do that.
	Start Position
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
	Close() error
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
