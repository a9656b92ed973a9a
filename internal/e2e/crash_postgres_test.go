package e2e

import (
	"testing"
)

// TestIntegrationCrashPostgres is the crash harness on a Postgres slot: 0
// lost, 0 per-key order violations, duplicates only after the checkpoint
// each run restarted from, and the slot never confirmed beyond the
// checkpoint.
func TestIntegrationCrashPostgres(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	var cpPath string
	runCrashHarness(t, crashTarget{
		yaml: func(broker, cp string) string {
			cpPath = cp
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
	})
	checkSlotBehindCheckpoint(t, db, cpPath)
}
