package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationMariaDBGrammar: savepoints (released before a large part,
// rolled back, nested), XA (commit, rollback after prepare, one phase,
// committed later from another session), several tables per transaction,
// and transactions that also change a MyISAM table (the binlog then holds
// ROLLBACK TO and the rows it discarded), from `start: current`: every
// committed outbox row arrives exactly once, in order per key, and no
// rolled-back or uncommitted one.
func TestIntegrationMariaDBGrammar(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise, mysqlNonTx)
	broker := startBroker(t, 4)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, mysqlRelayConfig(db, broker.Addr(), cpPath, "current"))
	relay.waitLog(t, "streaming binlog")

	p := makeGrammarPlan(21, "gm", db.DB, 130, true)
	p.write(t, mysqlGrammarDialect(t, db), 0, len(p.Txns))
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}

// TestIntegrationPostgresGrammar: the same shapes on Postgres: savepoints
// and two-phase transactions (PREPARE TRANSACTION, COMMIT / ROLLBACK
// PREPARED, committed later from another session).
func TestIntegrationPostgresGrammar(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 4)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	relay.waitLog(t, "streaming replication slot")

	p := makeGrammarPlan(22, "gp", db.DB, 130, false)
	p.write(t, postgresGrammarDialect(t, db), 0, len(p.Txns))
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}

// TestIntegrationMariaDBXAAcrossRestart: an XA transaction prepared while
// one relay runs and committed after that relay stopped and another
// started from its checkpoint is published at its commit — the checkpoint
// moved past the prepare, but lists it — and one rolled back is not.
func TestIntegrationMariaDBXAAcrossRestart(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 2)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := mysqlRelayConfig(db, broker.Addr(), cpPath, "current")
	first := startRelay(t, yaml)
	first.waitLog(t, "streaming binlog")

	d := mysqlGrammarDialect(t, db)
	keep := txn{End: endXAPrepare, GID: db.DB + "-keep", Steps: []step{{kind: stInsert, events: []event{
		{ID: "xa-k1", AggType: "order", AggID: "xa", Type: "T", Seq: 1, Payload: `{"k":1}`},
		{ID: "xa-k2", AggType: "order", AggID: "xa", Type: "T", Seq: 2, Payload: `{"k":2}`}}}}}
	drop := txn{End: endXAPrepare, GID: db.DB + "-drop", Steps: []step{{kind: stInsert, events: []event{
		{ID: "xa-d1", AggType: "order", AggID: "xd", Type: "T", Payload: `{"d":1}`}}}}}
	after := event{ID: "after-1", AggType: "order", AggID: "plain", Type: "T", Seq: 1, Payload: `{"a":1}`}
	plain := event{ID: "plain-1", AggType: "order", AggID: "plain0", Type: "T", Seq: 1, Payload: `{"p":1}`}
	(plan{Txns: []txn{keep, drop, {Events: []event{plain}}}}).write(t, d, 0, 3)
	collect(t, broker, 1, time.Minute) // the plain one: the checkpoint passes both prepares
	first.stop(t)
	cp := loadCheckpoint(t, cpPath).Position
	if !strings.Contains(cp, ";xa=") {
		t.Fatalf("checkpoint %s does not list the prepared XA transactions", cp)
	}

	second := startRelay(t, yaml)
	second.waitLog(t, "streaming binlog")
	(plan{Txns: []txn{{End: endCommitPrepared, GID: db.DB + "-keep"}, {End: endRollbackPrepared, GID: db.DB + "-drop"}, {Events: []event{after}}}}).write(t, d, 0, 3)
	collect(t, broker, 4, time.Minute)
	second.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), []event{plain, keep.Steps[0].events[0], keep.Steps[0].events[1], after})
}

// TestIntegrationMariaDBNonTransactionalOutbox: an outbox table whose
// engine does not roll back (MyISAM) is refused at start with the fix: its
// rows would be written before, and whatever, their transaction does.
func TestIntegrationMariaDBNonTransactionalOutbox(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, strings.Replace(mysqlSchema, ")\n)", "))", 1)+" ENGINE=MyISAM")
	broker := startBroker(t, 1)
	err := runRelayExpectingError(t, mysqlRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "current"))
	for _, want := range []string{db.DB + ".outbox (MyISAM)", "not transactional", "ENGINE=InnoDB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
