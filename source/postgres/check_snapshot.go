package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// pgSnapshot checks what start: snapshot needs of a first start (or of a
// pending snapshot): SELECT on each outbox table.
func pgSnapshot(ctx context.Context, conn *pgx.Conn, cfg *Config, tables []qualifiedTable, pos string) (preflight.Check, bool) {
	const name = "postgres.snapshot"
	pending := snapshot.IsPending(pos)
	if cfg.Start != StartSnapshot && !pending {
		return preflight.Check{}, false
	}
	if pos != "" && !pending {
		return preflight.Pass(name, "start: snapshot does not apply: the checkpoint is at %s", pos), true
	}
	var denied, grants []string
	for _, t := range tables {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1::regclass, 'SELECT')`, t.sql()).Scan(&ok); err != nil {
			return preflight.Fail(name, fmt.Sprintf("cannot tell whether the relay's role may read %s: %v", t, err), "GRANT SELECT ON "+t.sql()+" TO the relay's role"), true
		}
		if !ok {
			denied = append(denied, t.String())
			grants = append(grants, t.sql())
		}
	}
	if len(denied) > 0 {
		return preflight.Fail(name, fmt.Sprintf("start: snapshot reads the outbox tables, but the relay's role may not SELECT from %s", strings.Join(denied, ", ")),
			"GRANT SELECT ON "+strings.Join(grants, ", ")+" TO the relay's role"), true
	}
	what := "the first start"
	if pending {
		what = "the pending snapshot (taken again at the next start)"
	}
	return preflight.Pass(name, "%s reads %d outbox table(s) in the slot's exported snapshot; the relay's role may SELECT from each", what, len(tables)), true
}
