package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
)

// The preflight (`outboxrelay check`) against correctly configured and
// misconfigured servers: each misconfiguration must fail exactly its own
// check, and a correct set-up must pass every check.

// runCheck runs `outboxrelay check --json` on yaml and returns the exit
// code and the checks.
func runCheck(t *testing.T, yaml string) (int, []preflight.Check) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, errOut := runCLI(ctx, "check", "--config", p, "--json")
	var res struct {
		OK     bool              `json:"ok"`
		Checks []preflight.Check `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("check --json: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	logChecks(t, res.Checks)
	if res.OK != (code == 0) {
		t.Errorf("ok=%v but exit code %d", res.OK, code)
	}
	return code, res.Checks
}

func failing(checks []preflight.Check) []string {
	var names []string
	for _, c := range checks {
		if !c.OK {
			names = append(names, c.Name)
		}
	}
	sort.Strings(names)
	return names
}

func checkNamed(t *testing.T, checks []preflight.Check, name string) preflight.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s in %+v", name, checks)
	return preflight.Check{}
}

func logChecks(t *testing.T, checks []preflight.Check) {
	t.Helper()
	for _, c := range checks {
		t.Logf("ok=%-5v warn=%-5v %-32s %s | fix: %s", c.OK, c.Warning, c.Name, c.Detail, c.Fix)
	}
}

// mariaUser creates a user with the given global privileges on the
// server of db and returns db as seen by that user. Tests of the
// documented grants add the table one (GRANT REFERENCES) themselves.
func mariaUser(t *testing.T, db *testdb.MySQL, privs string) *testdb.MySQL {
	t.Helper()
	name := fmt.Sprintf("chk_%d", testdb.ServerID())
	admin := *db
	admin.Exec(t, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY 'check-secret'", name),
		fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", privs, name))
	t.Cleanup(func() {
		c, err := client.ConnectWithTimeout(admin.Addr, admin.User, admin.Password, "", 10*time.Second)
		if err == nil {
			_, _ = c.Execute(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", name))
			c.Close()
		}
	})
	u := *db
	u.User, u.Password = name, "check-secret"
	return &u
}

// TestIntegrationCheckMariaDB: a server set up as documented, a user with
// exactly the documented grants, and a stored checkpoint pass every check.
func TestIntegrationCheckMariaDB(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema)
	user := mariaUser(t, db, "REPLICATION SLAVE, BINLOG MONITOR")
	db.Exec(t, fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, user.User))
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	store, _ := file.New(file.Config{Path: cpPath})
	if err := store.Save(context.Background(), checkpoint.Checkpoint{Source: "mysql", Position: db.Position(t), UpdatedAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	code, checks := runCheck(t, mysqlRelayConfig(user, broker.Addr(), cpPath, "current"))
	if code != 0 || len(failing(checks)) > 0 {
		t.Fatalf("exit %d, failing %v; want every check to pass", code, failing(checks))
	}
	if c := checkNamed(t, checks, "mysql.binlog_retention"); !strings.Contains(c.Detail, "still on the server") {
		t.Errorf("binlog retention did not compare the checkpoint: %q", c.Detail)
	}
	for _, name := range []string{"mysql.log_bin", "mysql.binlog_format", "mysql.binlog_row_image", "mysql.binlog_row_metadata", "mysql.outbox_tables", "mysql.gtid_mode",
		"mysql.server_id", "mysql.grant_replication_slave", "mysql.grant_binlog_monitor", "kafka.connect", "kafka.topics", "kafka.max_message_bytes", "checkpoint"} {
		checkNamed(t, checks, name)
	}

	// The text form: one line per check with its mark.
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(mysqlRelayConfig(user, broker.Addr(), cpPath, "current")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(context.Background(), "check", "--config", p)
	if code != 0 || !strings.Contains(out, "✓ mysql.binlog_row_image") || !strings.Contains(out, "0 failing") {
		t.Errorf("text output (exit %d):\n%s", code, out)
	}
}

// TestIntegrationCheckMariaDBMisconfigured: binlog_row_image=MINIMAL and a
// user without BINLOG MONITOR fail exactly those two checks, each with
// its fix.
func TestIntegrationCheckMariaDBMisconfigured(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDBWith(t, "--binlog-row-image=MINIMAL")
	db.Exec(t, mysqlSchema)
	user := mariaUser(t, db, "REPLICATION SLAVE")
	db.Exec(t, fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, user.User))
	broker := startBroker(t, 3)
	code, checks := runCheck(t, mysqlRelayConfig(user, broker.Addr(), filepath.Join(t.TempDir(), "checkpoint.json"), "current"))
	want := []string{"mysql.binlog_row_image", "mysql.grant_binlog_monitor"}
	if got := failing(checks); code != 1 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("exit %d, failing %v; want exit 1 and exactly %v", code, got, want)
	}
	if c := checkNamed(t, checks, "mysql.binlog_row_image"); !strings.Contains(c.Fix, "binlog_row_image = 'FULL'") {
		t.Errorf("binlog_row_image fix: %q", c.Fix)
	}
	if c := checkNamed(t, checks, "mysql.grant_binlog_monitor"); c.Fix != fmt.Sprintf("GRANT BINLOG MONITOR ON *.* TO '%s'@'%%'", user.User) {
		t.Errorf("grant fix: %q", c.Fix)
	}
}

// TestIntegrationCheckMariaDBMinimalMetadata: with binlog_row_metadata
// MINIMAL the relay falls back to information_schema, which shows the
// outbox table only to a user with a privilege on it: without one the
// table check fails with the GRANT; with one every check passes, the
// metadata one with a warning.
func TestIntegrationCheckMariaDBMinimalMetadata(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDBWith(t, "--binlog-row-metadata=MINIMAL")
	db.Exec(t, mysqlSchema)
	user := mariaUser(t, db, "REPLICATION SLAVE, BINLOG MONITOR")
	broker := startBroker(t, 3)
	yaml := mysqlRelayConfig(user, broker.Addr(), filepath.Join(t.TempDir(), "checkpoint.json"), "current")
	code, checks := runCheck(t, yaml)
	if got := failing(checks); code != 1 || strings.Join(got, ",") != "mysql.outbox_tables" {
		t.Fatalf("exit %d, failing %v; want exactly mysql.outbox_tables", code, got)
	}
	grant := fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, user.User)
	if c := checkNamed(t, checks, "mysql.outbox_tables"); !strings.Contains(c.Detail, grant) {
		t.Errorf("detail %q lacks %q", c.Detail, grant)
	}
	db.Exec(t, grant)
	code, checks = runCheck(t, yaml)
	if c := checkNamed(t, checks, "mysql.binlog_row_metadata"); code != 0 || !c.Warning || !strings.Contains(c.Detail, "falls back") {
		t.Fatalf("after the grant: exit %d, failing %v, %+v", code, failing(checks), c)
	}
}

// TestIntegrationCheckPostgres: the test server (wal_level=logical), the
// superuser, publication and slot created by the relay later: every check
// passes; then with both present and a checkpoint, still.
func TestIntegrationCheckPostgres(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, postgresSchema)
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	code, checks := runCheck(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	if code != 0 {
		t.Fatalf("exit %d, failing %v; want every check to pass", code, failing(checks))
	}
	if c := checkNamed(t, checks, "postgres.slot"); !strings.Contains(c.Detail, "creates it at start") {
		t.Errorf("slot: %q", c.Detail)
	}
	db.Exec(t,
		"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	lsn := db.QueryString(t, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", db.Slot)
	store, _ := file.New(file.Config{Path: cpPath})
	if err := store.Save(context.Background(), checkpoint.Checkpoint{Source: "postgres", Position: lsn, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	code, checks = runCheck(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	if code != 0 {
		logChecks(t, checks)
		t.Fatalf("with publication, slot and checkpoint: exit %d, failing %v", code, failing(checks))
	}
	for _, name := range []string{"postgres.wal_level", "postgres.max_replication_slots", "postgres.max_wal_senders", "postgres.replication",
		"postgres.tables", "postgres.publication", "postgres.slot", "postgres.slot_wal"} {
		checkNamed(t, checks, name)
	}
	if c := checkNamed(t, checks, "postgres.slot_wal"); !strings.Contains(c.Detail, "retained") {
		t.Errorf("slot_wal: %q", c.Detail)
	}
}

// TestIntegrationCheckPostgresWalLevelReplica: a server with
// wal_level=replica fails that check alone.
func TestIntegrationCheckPostgresWalLevelReplica(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivatePostgresWith(t, "wal_level=replica")
	db.Exec(t, postgresSchema)
	broker := startBroker(t, 3)
	code, checks := runCheck(t, postgresRelayConfig(db, broker.Addr(), filepath.Join(t.TempDir(), "checkpoint.json")))
	if got := failing(checks); code != 1 || strings.Join(got, ",") != "postgres.wal_level" {
		t.Fatalf("exit %d, failing %v; want exit 1 and exactly postgres.wal_level", code, got)
	}
	if c := checkNamed(t, checks, "postgres.wal_level"); !strings.Contains(c.Fix, "wal_level = logical") {
		t.Errorf("fix: %q", c.Fix)
	}
}

// TestIntegrationCheckPostgresNoReplicationRole: a relay role without the
// REPLICATION attribute (publication and slot made by an administrator)
// fails postgres.replication alone, with the ALTER ROLE to run.
func TestIntegrationCheckPostgresNoReplicationRole(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, postgresSchema,
		"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	role := "chk_" + db.Slot[2:]
	db.Exec(t, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), db.AdminDSN)
		if err == nil {
			defer c.Close(context.Background())
			for i := 0; i < 50; i++ { // the test database may still be in use
				if _, err := c.Exec(context.Background(), "DROP ROLE IF EXISTS "+role); err == nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	u, err := url.Parse(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	as := *db
	as.DSN = u.String()
	broker := startBroker(t, 3)
	code, checks := runCheck(t, postgresRelayConfig(&as, broker.Addr(), filepath.Join(t.TempDir(), "checkpoint.json")))
	if got := failing(checks); code != 1 || strings.Join(got, ",") != "postgres.replication" {
		t.Fatalf("exit %d, failing %v; want exit 1 and exactly postgres.replication", code, got)
	}
	if c := checkNamed(t, checks, "postgres.replication"); c.Fix != "ALTER ROLE "+role+" WITH REPLICATION" {
		t.Errorf("fix: %q", c.Fix)
	}
}

// TestCheckKafka: reachable brokers, topics and their max.message.bytes.
func TestCheckKafka(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{Topics: []string{"outbox.event.order"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx := context.Background()
	targets := kafka.Targets{Patterns: []*regexp.Regexp{regexp.MustCompile(`^outbox\.event\..+$`)}}

	checks := kafka.Preflight(ctx, kafka.Config{Brokers: []string{b.Addr()}}, targets)
	if len(failing(checks)) > 0 {
		logChecks(t, checks)
		t.Fatalf("failing %v", failing(checks))
	}
	if c := checkNamed(t, checks, "kafka.topics"); !strings.Contains(c.Detail, "outbox.event.order") {
		t.Errorf("topics: %q", c.Detail)
	}
	// Records larger than the topic accepts.
	checks = kafka.Preflight(ctx, kafka.Config{Brokers: []string{b.Addr()}, MaxMessageBytes: 2000000, MaxInFlightBytes: 4000000}, targets)
	if got := failing(checks); strings.Join(got, ",") != "kafka.max_message_bytes" {
		logChecks(t, checks)
		t.Fatalf("failing %v, want kafka.max_message_bytes", got)
	}
	if c := checkNamed(t, checks, "kafka.max_message_bytes"); !strings.Contains(c.Detail, "outbox.event.order (1048588)") {
		t.Errorf("detail: %q", c.Detail)
	}
	// No broker.
	b2, _ := devbroker.Start(devbroker.Options{})
	addr := b2.Addr()
	b2.Close()
	checks = kafka.Preflight(ctx, kafka.Config{Brokers: []string{addr}}, targets)
	if got := failing(checks); strings.Join(got, ",") != "kafka.connect" {
		logChecks(t, checks)
		t.Fatalf("failing %v, want kafka.connect", got)
	}
}
