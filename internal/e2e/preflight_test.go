package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// `check` and `run` judge the outbox tables alike, before streaming (and,
// for Postgres, before creating anything on the server).

// TestIntegrationMySQLMisspelledTable: a configured table that does not
// exist fails check (naming it, with the fix) and stops run at start —
// instead of streaming forever without a word.
func TestIntegrationMySQLMisspelledTable(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	broker := startBroker(t, 1)
	yaml := strings.Replace(mysqlRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "current"),
		"tables: ["+db.DB+".outbox]", "tables: ["+db.DB+".nope]", 1)
	code, checks := runCheck(t, yaml)
	c := checkNamed(t, checks, "mysql.outbox_tables")
	if code == 0 || c.OK || !strings.Contains(c.Detail, db.DB+".nope") {
		t.Errorf("check: exit %d, mysql.outbox_tables %+v; want it failing, naming %s.nope", code, c, db.DB)
	}
	err := runRelayExpectingError(t, yaml)
	if !strings.Contains(err.Error(), db.DB+".nope") || !strings.Contains(err.Error(), "GRANT REFERENCES") {
		t.Errorf("run: %v; want the missing table named, with the fix", err)
	}
}

// TestIntegrationMySQLTableLacksMappedColumn: with the documented minimal
// grants, a table without the mapping's aggregateid fails check and stops
// run at start, not at its first row.
func TestIntegrationMySQLTableLacksMappedColumn(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, `CREATE TABLE outbox (id VARCHAR(64) PRIMARY KEY, aggregatetype VARCHAR(64), type VARCHAR(64), payload TEXT)`)
	user, password := "m"+db.DB[2:], "pw-"+db.DB
	db.Exec(t,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, user))
	t.Cleanup(func() { db.Exec(t, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	relayDB := *db
	relayDB.User, relayDB.Password = user, password
	broker := startBroker(t, 1)
	yaml := mysqlRelayConfig(&relayDB, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"), "current")
	_, checks := runCheck(t, yaml)
	if c := checkNamed(t, checks, "mysql.outbox_tables"); c.OK || !strings.Contains(c.Detail, "aggregateid") {
		t.Errorf("mysql.outbox_tables %+v; want it failing on the missing aggregateid", c)
	}
	if err := runRelayExpectingError(t, yaml); !strings.Contains(err.Error(), "aggregateid") {
		t.Errorf("run: %v; want it stopped at start on the missing aggregateid", err)
	}
}

// TestIntegrationPostgresFailedStartCreatesNothing: a table the mapping
// cannot use stops run before the publication and the slot exist — a slot
// made then would only hold WAL.
func TestIntegrationPostgresFailedStartCreatesNothing(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, `CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, type text, payload json)`)
	broker := startBroker(t, 1)
	yaml := postgresRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json"))
	_, checks := runCheck(t, yaml)
	if c := checkNamed(t, checks, "postgres.tables"); c.OK || !strings.Contains(c.Detail, "aggregateid") {
		t.Errorf("postgres.tables %+v; want it failing on the missing aggregateid", c)
	}
	if err := runRelayExpectingError(t, yaml); !strings.Contains(err.Error(), "aggregateid") {
		t.Errorf("run: %v", err)
	}
	if n := db.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '"+db.Slot+"'"); n != "0" {
		t.Error("a failed start created the replication slot")
	}
	if n := db.QueryString(t, "SELECT count(*)::text FROM pg_publication WHERE pubname = '"+db.Publication+"'"); n != "0" {
		t.Error("a failed start created the publication")
	}
}

// TestIntegrationPostgresMissingDatabase: a database that does not exist
// is a mistake to fix, not an outage to wait out: run exits with the fix.
func TestIntegrationPostgresMissingDatabase(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	broker := startBroker(t, 1)
	yaml := strings.Replace(postgresRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "cp.json")), "/"+db.DB+"?", "/"+db.DB+"_nope?", 1)
	if !strings.Contains(yaml, db.DB+"_nope") {
		t.Fatalf("test set-up: no database name in the DSN %q", db.DSN)
	}
	if err := runRelayExpectingError(t, yaml); !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "source.postgres.dsn") {
		t.Errorf("run: %v; want a permanent error naming the setting", err)
	}
}

// TestIntegrationCheckNextToLiveRelay: `check` run beside the relay of the
// same configuration does not count that relay's replica id as a conflict.
func TestIntegrationCheckNextToLiveRelay(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	broker := startBroker(t, 1)
	dir := t.TempDir()
	yaml := mysqlRelayConfig(db, broker.Addr(), filepath.Join(dir, "cp.json"), "current")
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCLI(ctx, "run", "--config", cfgPath)
		done <- code
	}()
	defer func() {
		cancel()
		<-done
	}()
	// Wait until the relay's binlog connection is registered.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := testdb.Exec(t, db.Conn(t), "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
		if n, _ := r.GetInt(0, 0); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay never connected to the binlog")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	_, checks := runCheck(t, yaml)
	c := checkNamed(t, checks, "mysql.server_id")
	if !c.OK || !strings.Contains(c.Detail, "this configuration's relay") {
		t.Errorf("mysql.server_id %+v; want it passing as the running relay's own", c)
	}
	if slices.Contains(failing(checks), "mysql.server_id") {
		t.Errorf("failing: %v", failing(checks))
	}
}

// TestIntegrationMySQLPositionToolMessages: positions a server never had
// are refused, naming why; replay asks for what it needs.
func TestIntegrationMySQLPositionToolMessages(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	broker := startBroker(t, 1)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(mysqlRelayConfig(db, broker.Addr(), filepath.Join(dir, "cp.json"), "current")), 0o600); err != nil {
		t.Fatal(err)
	}
	cur := db.Position(t)
	file := strings.SplitN(cur, ":", 2)[0]
	base := file[:strings.LastIndexByte(file, '.')]
	ctx := context.Background()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "set", "--config", cfgPath, "--to", cur + "@0-1-999999999"}, "never had"},
		{[]string{"checkpoint", "set", "--config", cfgPath, "--to", base + ".999999:4"}, "does not exist on this server yet"},
		{[]string{"checkpoint", "set", "--config", cfgPath, "--to", "other-bin.000001:4"}, "not one of this server's"},
		{[]string{"replay", "--config", cfgPath, "--from", "@0-1-5"}, "needs FILE:OFFSET"},
		{[]string{"replay", "--config", cfgPath, "--from", cur, "--to", base + ".000001:4"}, "is not after --from"},
	} {
		code, out, errOut := runCLI(ctx, tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want a refusal saying %q", tt.args[:2], code, out, errOut, tt.want)
		}
	}
}
