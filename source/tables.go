package source

import (
	"context"
	"time"
)

// TableAccess is what a Source offers besides its log: plain SQL on the
// outbox tables themselves, for the outbox cleanup (outbox.cleanup) and
// `outboxrelay republish`. Every source kind implements it.
type TableAccess interface {
	// OpenTables connects one connection of its own (never the log's).
	OpenTables(ctx context.Context) (TableConn, error)
}

// TableSpec names an outbox table and the two columns cleanup and
// republish work by.
type TableSpec struct {
	// Table is "schema.table".
	Table string
	// Key is the column that identifies one row: the mapping's event id
	// column, which must be the table's primary key or alone in a unique
	// index (CheckTable).
	Key string
	// Time is the row's creation time column (outbox.cleanup.column);
	// "" when only keys select rows (republish without --since/--until).
	Time string
}

// Selection picks rows for republish. Set fields combine (AND); Keys,
// when set, lists the rows exactly.
type Selection struct {
	// FromKey and ToKey bound the key, both inclusive ("" is open), in
	// the column's own order (numbers as numbers, text by its collation).
	FromKey, ToKey string
	// Since (inclusive) and Until (exclusive) bound the Time column; the
	// zero time is open. Compared in UTC.
	Since, Until time.Time
	// Keys are explicit keys (text form).
	Keys []string
}

// TableConn is one connection to the database for work on outbox tables.
// Keys travel as their text form. Not safe for concurrent use.
type TableConn interface {
	// Tables lists the configured outbox tables that exist now
	// ("schema.table").
	Tables(ctx context.Context) ([]string, error)
	// CheckTable verifies that the key column alone identifies a row (a
	// primary key or unique index of that one column) and that the time
	// column exists; the error names the table and the fix.
	CheckTable(ctx context.Context, t TableSpec) error
	// Position is the server's log position now, in checkpoint form,
	// such that every transaction whose rows a read that returned before
	// this call could see ends at or before it (see docs/operations.md,
	// "Outbox cleanup", for why this holds on each server).
	Position(ctx context.Context) (string, error)
	// OldKeys returns up to limit keys of rows whose time is older than
	// age (by the server's clock), smallest key first.
	OldKeys(ctx context.Context, t TableSpec, age time.Duration, limit int) ([]string, error)
	// Delete deletes the rows of keys that are still older than age and
	// returns how many it deleted.
	Delete(ctx context.Context, t TableSpec, keys []string, age time.Duration) (int64, error)
	// OldestAge is the age of the table's oldest row by its time column;
	// ok is false for an empty table.
	OldestAge(ctx context.Context, t TableSpec) (age time.Duration, ok bool, err error)
	// Rows returns up to limit rows of the selection whose key is above
	// after (all when after is nil), by key, with the key of the last
	// one: the caller pages with it.
	Rows(ctx context.Context, t TableSpec, sel Selection, after *string, limit int) (rows []Row, last string, err error)
	// Count counts the selection's rows and their key and time range.
	Count(ctx context.Context, t TableSpec, sel Selection) (RangeInfo, error)
	Close() error
}

// RangeInfo describes the rows of a selection.
type RangeInfo struct {
	Rows int64
	// FirstKey and LastKey are the smallest and largest keys.
	FirstKey, LastKey string
	// OldestText and NewestText are the time column's range as the
	// server prints it (UTC).
	OldestText, NewestText string
}
