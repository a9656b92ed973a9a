package inbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Execer is what CreateTables and Prune need of a database: *sql.DB,
// *sql.Conn and *sql.Tx have it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// DDL returns the CREATE statements of the inbox's tables (IF NOT EXISTS),
// for migrations that a service runs itself. The version table is included
// even without CheckVersion, so that turning it on later needs no
// migration.
func (in *Inbox) DDL() []string { return append([]string(nil), in.sql.ddl...) }

// CreateTables runs DDL on db.
func (in *Inbox) CreateTables(ctx context.Context, db Execer) error {
	for _, s := range in.sql.ddl {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("inbox: create tables: %w", err)
		}
	}
	return nil
}

// DefaultPruneBatch is the number of rows Prune deletes per statement when
// batch is 0.
const DefaultPruneBatch = 1000

// Prune deletes inbox rows received more than olderThan ago, batch rows per
// statement (so that no statement holds many locks for long), and returns
// how many it deleted. The version table is never pruned: it has one row per
// aggregate and is what still rejects a very old redelivery once its inbox
// row is gone.
//
// Choose olderThan longer than any redelivery can come late: the topic's
// retention when a consumer group may be reset to the earliest offset, and
// the window of any `outboxrelay replay`. A redelivery after its row is
// pruned is applied again unless CheckVersion is on.
func (in *Inbox) Prune(ctx context.Context, db Execer, olderThan time.Duration, batch int) (int64, error) {
	if olderThan < 0 {
		return 0, errors.New("inbox: Prune: olderThan must not be negative")
	}
	if batch <= 0 {
		batch = DefaultPruneBatch
	}
	var arg any = olderThan.Microseconds()
	if in.cfg.Dialect == Postgres {
		arg = olderThan.Seconds()
	}
	var total int64
	for {
		res, err := db.ExecContext(ctx, in.sql.prune, arg, batch)
		if err != nil {
			return total, fmt.Errorf("inbox: prune %s: %w", in.cfg.Table, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("inbox: prune %s: %w", in.cfg.Table, err)
		}
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}
