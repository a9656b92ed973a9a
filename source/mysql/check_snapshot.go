package mysql

import (
	"fmt"
	"strings"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// snapshotCheck checks what start: snapshot needs of a first start (or of
// a pending snapshot): the flavor's way to take it, SELECT on each outbox
// table, and a primary key on each.
func (p *prober) snapshotCheck(pos string) (preflight.Check, bool) {
	const name = "mysql.snapshot"
	pending := snapshot.IsPending(pos)
	if p.cfg.Start != "snapshot" && !pending {
		return preflight.Check{}, false
	}
	if pos != "" && !pending {
		return preflight.Pass(name, "start: snapshot does not apply: the checkpoint is at %s", pos), true
	}
	if p.flavor == gomysql.MySQLFlavor && p.cfg.SnapshotLock == "" {
		return preflight.Fail(name, ErrSnapshotMySQL.Error(), "set source.mysql.snapshot_lock: flush-tables (and GRANT RELOAD ON *.*), or use start: current"), true
	}
	filter, err := schema.NewFilter(p.cfg.Tables)
	if err != nil {
		return preflight.Fail(name, err.Error(), "correct source.mysql.tables"), true
	}
	rep, err := readOutboxTables(p.conn, filter)
	if err != nil {
		return preflight.Fail(name, err.Error(), "the relay's user must be able to read information_schema"), true
	}
	var denied, grants []string
	for _, t := range rep.tables {
		r, err := p.conn.Execute("SELECT 1 FROM " + quoteTable(t) + " LIMIT 0")
		if err != nil {
			if !isAccessDenied(err) {
				return preflight.Fail(name, fmt.Sprintf("read %s: %v", t.FullName(), err), "see the error"), true
			}
			denied = append(denied, t.FullName())
			grants = append(grants, fmt.Sprintf("GRANT SELECT ON %s TO %s", quoteTable(t), p.userText()))
			continue
		}
		r.Close()
	}
	if len(denied) > 0 {
		return preflight.Fail(name, fmt.Sprintf("start: snapshot reads the outbox tables, but %s may not SELECT from %s", p.userText(), strings.Join(denied, ", ")), strings.Join(grants, "; ")), true
	}
	if _, err := primaryKeys(p.conn, rep.tables); err != nil {
		return preflight.Fail(name, err.Error(), "add a primary key to the table, or use start: current"), true
	}
	how := "START TRANSACTION WITH CONSISTENT SNAPSHOT (no lock)"
	if p.flavor == gomysql.MySQLFlavor {
		how = "FLUSH TABLES WITH READ LOCK for its start (needs RELOAD, not verified here: it would take the lock)"
	}
	what := "the first start"
	if pending {
		what = "the pending snapshot (taken again at the next start)"
	}
	return preflight.Pass(name, "%s reads %d outbox table(s) in primary-key order, in %s; %s may SELECT from each", what, len(rep.tables), how, p.userText()), true
}
