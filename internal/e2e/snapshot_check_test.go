package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationMySQLSnapshotGrants: `outboxrelay check` with start:
// snapshot fails for a user with the streaming grants only, naming the
// GRANT SELECT to run; with it, check passes, and a relay as that user
// (no RELOAD, no other privilege) takes the snapshot.
func TestIntegrationMySQLSnapshotGrants(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT CONCAT('pre-', LPAD(seq, 7, '0')), 'order', 'k', 'Created', '{"n":1}' FROM seq_1_to_300`)
	u := mariaUser(t, db, "REPLICATION SLAVE, BINLOG MONITOR")
	db.Exec(t, fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, u.User))
	broker := startBroker(t, 1)
	yaml := mysqlRelayConfig(u, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "snapshot")

	_, checks := runCheck(t, yaml)
	c := checkNamed(t, checks, "mysql.snapshot")
	if c.OK || !strings.Contains(c.Fix, "GRANT SELECT ON `"+db.DB+"`.`outbox`") {
		t.Fatalf("mysql.snapshot without SELECT: ok=%v fix %q; want a failure naming GRANT SELECT on the table", c.OK, c.Fix)
	}

	db.Exec(t, fmt.Sprintf("GRANT SELECT ON %s.outbox TO '%s'@'%%'", db.DB, u.User))
	_, checks = runCheck(t, yaml)
	if c := checkNamed(t, checks, "mysql.snapshot"); !c.OK {
		t.Fatalf("mysql.snapshot with SELECT: %s (fix %s)", c.Detail, c.Fix)
	}
	relay := startRelay(t, yaml)
	recs := collect(t, broker, 300, time.Minute)
	relay.stop(t)
	if len(recs) != 300 {
		t.Fatalf("%d records, want 300", len(recs))
	}
}

// TestIntegrationPostgresSnapshotCheck: check with start: snapshot reports
// the snapshot check (the test role owns the tables: it passes).
func TestIntegrationPostgresSnapshotCheck(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 1)
	yaml := postgresRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "start: snapshot")
	_, checks := runCheck(t, yaml)
	if c := checkNamed(t, checks, "postgres.snapshot"); !c.OK || !strings.Contains(c.Detail, "first start") {
		t.Fatalf("postgres.snapshot: ok=%v %s", c.OK, c.Detail)
	}
}

// TestIntegrationPostgresSnapshotExistingSlot: with start: snapshot but a
// slot that exists already (and no checkpoint), the slot holds the start:
// the relay says so and streams from it, taking no snapshot — rows from
// before the slot are not sent, rows after it are.
func TestIntegrationPostgresSnapshotExistingSlot(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT 'old-' || g, 'order', 'k', 'T', '{}' FROM generate_series(1, 50) g`)
	db.Exec(t, "CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT 'new-' || g, 'order', 'k', 'T', '{}' FROM generate_series(1, 5) g`)
	broker := startBroker(t, 1)
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "start: snapshot"))
	relay.waitLog(t, "start: snapshot applies only when the relay creates its slot")
	recs := collect(t, broker, 5, time.Minute)
	relay.stop(t)
	checkTotal(t, broker, 5)
	for _, r := range recs {
		if id, _ := r.Header("id"); !strings.HasPrefix(id, "new-") {
			t.Errorf("record %s: want only rows committed after the slot", id)
		}
	}
	if strings.Contains(relay.logs.String(), "snapshot of the outbox tables started") {
		t.Fatal("took a snapshot over an existing slot")
	}
}

// TestIntegrationMySQLSnapshotNoPrimaryKey: an outbox table without a
// primary key stops start: snapshot with the fix.
func TestIntegrationMySQLSnapshotNoPrimaryKey(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, strings.Replace(mysqlSchema, "NOT NULL PRIMARY KEY", "NOT NULL", 1))
	err := runRelayExpectingError(t, mysqlRelayConfig(db, freeAddr(t), filepath.Join(t.TempDir(), "cp.json"), "snapshot"))
	if !strings.Contains(err.Error(), "has no primary key") || !strings.Contains(err.Error(), "ADD PRIMARY KEY") {
		t.Fatalf("error %v; want it to name the missing primary key and the fix", err)
	}
}
