package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// schemaEvent writes one outbox row through explicit column names, so the
// statement works whatever the column order.
func schemaEvent(table string, n int) string {
	return fmt.Sprintf(`INSERT INTO %s (id, aggregatetype, aggregateid, type, payload) VALUES ('e-%02d', 'order', 'k-%02d', 'T%d', '{"n":%d}')`, table, n, n%3, n, n)
}

// checkSchemaEvents checks that events 0..n-1 arrived once each, mapped
// from the right columns whatever the layout was when they were written.
func checkSchemaEvents(t *testing.T, recs []devbroker.Record, n int) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range recs {
		id, _ := r.Header(outbox.HeaderID)
		if seen[id] {
			t.Errorf("duplicate %s", id)
		}
		seen[id] = true
		var k int
		if _, err := fmt.Sscanf(id, "e-%02d", &k); err != nil {
			t.Errorf("unexpected record %s", r)
			continue
		}
		typ, _ := r.Header(outbox.HeaderType)
		if string(r.Key) != fmt.Sprintf("k-%02d", k%3) || typ != fmt.Sprintf("T%d", k) || string(r.Value) != fmt.Sprintf(`{"n":%d}`, k) || r.Topic != "outbox.event.order" {
			t.Errorf("event %s mapped wrong: %s", id, r)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct events, want %d", len(seen), n)
	}
}

// TestIntegrationMySQLSchemaChanges: ADD COLUMN, DROP of an unused column,
// a column reorder and RENAME TABLE while the relay runs; the TABLE_MAP
// column names give every row the layout it was written with.
func TestIntegrationMySQLSchemaChanges(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	broker := startBroker(t, 2)
	cpPath := filepath.Join(t.TempDir(), "cp.json")
	yaml := strings.Replace(mysqlRelayConfig(db, broker.Addr(), cpPath, db.Position(t)),
		"tables: ["+db.DB+".outbox]", fmt.Sprintf(`tables: ["/%s\\.outbox(_v2)?/"]`, db.DB), 1)
	relay := startRelay(t, yaml)
	n := 0
	write := func(table string, k int) {
		for i := 0; i < k; i++ {
			db.Exec(t, schemaEvent(table, n))
			n++
		}
	}
	write("outbox", 3)
	db.Exec(t, "ALTER TABLE outbox ADD COLUMN tenant VARCHAR(32) NOT NULL DEFAULT 'acme' AFTER aggregateid")
	write("outbox", 3)
	db.Exec(t, "ALTER TABLE outbox DROP COLUMN created_at")
	write("outbox", 3)
	db.Exec(t, "ALTER TABLE outbox MODIFY COLUMN payload LONGTEXT FIRST") // reorder
	write("outbox", 3)
	db.Exec(t, "RENAME TABLE outbox TO outbox_v2")
	write("outbox_v2", 3)
	collect(t, broker, n, time.Minute)
	relay.stop(t)
	checkSchemaEvents(t, collectAll(t, broker), n)
}

// TestIntegrationMySQLMinimalMetadata: with binlog_row_metadata=MINIMAL the
// relay takes column names from information_schema and reloads them at each
// DDL; a relay that must read rows from before a DDL that changed the column
// count stops with a clear error; a replay across the DDL is refused.
// binlog_row_image=MINIMAL is refused at start.
func TestIntegrationMySQLMinimalMetadata(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema, "SET GLOBAL binlog_row_metadata = MINIMAL")
	broker := startBroker(t, 1)
	dir := t.TempDir()
	start := db.Position(t)
	cfg := func(cp, from string) string { return mysqlRelayConfig(db, broker.Addr(), filepath.Join(dir, cp), from) }

	relay := startRelay(t, cfg("a.json", start))
	relay.waitLog(t, "using information_schema")
	for i := 0; i < 3; i++ {
		db.Exec(t, schemaEvent("outbox", i))
	}
	db.Exec(t, "ALTER TABLE outbox ADD COLUMN tenant VARCHAR(32) NOT NULL DEFAULT 'acme' AFTER id")
	for i := 3; i < 6; i++ {
		db.Exec(t, schemaEvent("outbox", i))
	}
	collect(t, broker, 6, time.Minute)
	relay.stop(t)
	checkSchemaEvents(t, collectAll(t, broker), 6)
	if !strings.Contains(relay.logs.String(), "reloaded outbox table columns") {
		t.Error("the DDL did not reload the columns")
	}

	// A relay starting before the DDL sees today's layout for older rows.
	err := runRelayExpectingError(t, cfg("b.json", start))
	if !strings.Contains(err.Error(), "the table changed after this row was written") || !strings.Contains(err.Error(), "binlog_row_metadata=FULL") {
		t.Errorf("lagging relay: %v", err)
	}

	// replay across the DDL is refused; up to it, it works.
	cfgPath := filepath.Join(dir, "replay.yaml")
	writeFile(t, cfgPath, cfg("c.json", start))
	code, _, errOut := runCLI(t.Context(), "replay", "--config", cfgPath, "--from", start)
	// Refused at the DDL, or already at the rows before it when the DDL
	// changed the column count: either way naming the setting to change.
	if code == 0 || !strings.Contains(errOut, "binlog_row_metadata=MINIMAL") {
		t.Errorf("replay across a DDL: exit %d: %s", code, errOut)
	}

	// binlog_row_image=MINIMAL: refused at start, naming the setting.
	db.Exec(t, "SET GLOBAL binlog_row_image = MINIMAL")
	err = runRelayExpectingError(t, cfg("d.json", start))
	if !strings.Contains(err.Error(), "set binlog_row_image=FULL") {
		t.Errorf("row image MINIMAL: %v", err)
	}
}

// TestIntegrationPostgresSchemaChanges: a new Relation message after ALTER
// TABLE updates the mapping; dropping a column the mapping needs makes the
// next row bad (missing_column) under the row policy.
func TestIntegrationPostgresSchemaChanges(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	db.Exec(t,
		"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "cp.json")
	yaml := withLines(postgresRelayConfig(db, broker.Addr(), cpPath), "outbox", "on_bad_row: dead-letter\ndead_letter_topic: outbox.dlq")
	relay := startRelay(t, yaml)
	for i := 0; i < 3; i++ {
		db.Exec(t, schemaEvent("outbox", i))
	}
	db.Exec(t, "ALTER TABLE outbox ADD COLUMN tenant text NOT NULL DEFAULT 'acme'")
	for i := 3; i < 6; i++ {
		db.Exec(t, schemaEvent("outbox", i))
	}
	db.Exec(t, "ALTER TABLE outbox DROP COLUMN type")
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, payload) VALUES ('e-99', 'order', 'k', '{}')`)
	collect(t, broker, 6, time.Minute)
	dlq, err := collectDLQ(broker)
	relay.stop(t)
	checkSchemaEvents(t, collectAll(t, broker), 6)
	if err != nil || len(dlq) != 1 {
		t.Fatalf("dead letters: %d (%v), want the row written after DROP COLUMN type", len(dlq), err)
	}
	if reason, _ := dlq[0].Header(outbox.HeaderReason); reason != outbox.ReasonMissingColumn {
		t.Errorf("dead letter reason %q, want %s", reason, outbox.ReasonMissingColumn)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
