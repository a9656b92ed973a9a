package e2e

import (
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationCrashMySQLExactlyOnce is the crash harness with
// relay.delivery exactly-once and the position in Kafka, killing also
// between produce and commit, with the commit's EndTxn in flight, and
// right after it: a read_committed consumer sees 0 lost, 0 duplicates,
// 0 per-key order violations.
func TestIntegrationCrashMySQLExactlyOnce(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise, mysqlNonTx)
	runCrashHarness(t, crashTarget{
		yaml: func(broker, cpPath string) string {
			return mysqlRelayConfig(db, broker, cpPath, "current")
		},
		dialect:        func(t testing.TB) dialect { return mysqlGrammarDialect(t, db) },
		serverPosition: db.Position,
		compare:        mysqlCompare,
		nonTx:          true,
		scope:          db.DB,
		eos:            true,
	})
}

// TestIntegrationCrashPostgresExactlyOnce: the same on a Postgres slot,
// which is never confirmed beyond the position committed in Kafka.
func TestIntegrationCrashPostgresExactlyOnce(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	rep := runCrashHarness(t, crashTarget{
		yaml: func(broker, cp string) string {
			return postgresRelayConfig(db, broker, cp)
		},
		dialect: func(t testing.TB) dialect { return postgresGrammarDialect(t, db) },
		serverPosition: func(t testing.TB) string {
			return db.QueryString(t, "SELECT pg_current_wal_lsn()::text")
		},
		compare: postgresCompare,
		scope:   db.DB,
		prepare: func(t testing.TB) {
			db.Exec(t,
				"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
				"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
		},
		eos: true,
	})
	checkSlotBehind(t, db, rep.final)
}
