package e2e

import (
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

func haMySQL(t *testing.T) crashTarget {
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise, mysqlNonTx)
	return crashTarget{
		yaml:           func(broker, cpPath string) string { return mysqlRelayConfig(db, broker, cpPath, "current") },
		dialect:        func(t testing.TB) dialect { return mysqlGrammarDialect(t, db) },
		serverPosition: db.Position,
		compare:        mysqlCompare,
		nonTx:          true,
		scope:          db.DB,
	}
}

func haPostgres(t *testing.T) crashTarget {
	db := setupPostgres(t)
	return crashTarget{
		yaml:    func(broker, cpPath string) string { return postgresRelayConfig(db, broker, cpPath) },
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
	}
}

// TestIntegrationStandbyKillMySQL: three instances on MariaDB, the active
// one SIGKILLed 10 times under load, then one SIGTERM: every takeover
// within the session timeout plus a few seconds (≤ 3s after SIGTERM),
// 0 lost, 0 duplicates, per-key order kept.
func TestIntegrationStandbyKillMySQL(t *testing.T) {
	t.Parallel()
	runHAKill(t, haMySQL(t))
}

// TestIntegrationStandbyKillPostgres: the same on a Postgres slot.
func TestIntegrationStandbyKillPostgres(t *testing.T) {
	t.Parallel()
	runHAKill(t, haPostgres(t))
}

// TestIntegrationStandbyPartitionMySQL: the active instance paused past
// the session timeout; resumed, it stops streaming and makes nothing
// visible.
func TestIntegrationStandbyPartitionMySQL(t *testing.T) {
	t.Parallel()
	runHAPartition(t, haMySQL(t))
}

// TestIntegrationStandbyPartitionPostgres: the same on a Postgres slot,
// which the paused instance still holds.
func TestIntegrationStandbyPartitionPostgres(t *testing.T) {
	t.Parallel()
	runHAPartition(t, haPostgres(t))
}
