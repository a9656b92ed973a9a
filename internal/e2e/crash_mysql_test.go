package e2e

import (
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationCrashMySQL kills the relay binary with SIGKILL at random
// moments and at failpoints while rows are written, including inside a
// 50,000-row transaction: 0 lost, 0 per-key order violations, and
// duplicates only of records after the checkpoint each run restarted from.
func TestIntegrationCrashMySQL(t *testing.T) {
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
	})
}
