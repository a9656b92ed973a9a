// Package e2e holds the end-to-end tests: the relay built from YAML as the
// binary builds it, against real databases started by scripts/ and an
// in-process Kafka (kfake) reached over TCP by sarama.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source/mysql"
)

const mysqlSchema = `CREATE TABLE outbox (
	id VARCHAR(64) NOT NULL PRIMARY KEY,
	aggregatetype VARCHAR(255) NOT NULL,
	aggregateid VARCHAR(255) NOT NULL,
	type VARCHAR(255) NOT NULL,
	payload LONGTEXT,
	created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)`

const mysqlNoise = `CREATE TABLE orders (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	customer VARCHAR(64) NOT NULL,
	total DECIMAL(10,2) NOT NULL DEFAULT 9.99
)`

// mysqlNonTx is a non-transactional table: a transaction that changes it
// and rolls back to a savepoint makes the server write the ROLLBACK TO, and
// the rows it discards, into the binlog.
const mysqlNonTx = `CREATE TABLE ` + nonTxNoiseTable + ` (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	note VARCHAR(64) NOT NULL
) ENGINE=MyISAM`

// mysqlGrammarDialect writes the grammar workload too (XA transactions
// prepared on sessions of their own).
func mysqlGrammarDialect(t testing.TB, db *testdb.MySQL) dialect {
	d := mysqlDialect(db.Conn(t))
	// A failed test may leave XA transactions of its own prepared: they
	// hold locks, and DROP DATABASE would wait for them.
	t.Cleanup(func() { rollbackPrepared(t, db) })
	g := mysqlGrammar(d, func(t testing.TB) (dialect, func()) {
		c := db.Conn(t)
		return mysqlDialect(c), func() { c.Close() }
	})
	d.grammar = func(t testing.TB, tx txn) { writeGrammar(t, g, tx) }
	g.dialect = d
	return d
}

// rollbackPrepared rolls back the XA transactions of db's test that are
// still prepared (their ids start with db's name).
func rollbackPrepared(t testing.TB, db *testdb.MySQL) {
	c := db.Conn(t)
	r, err := c.Execute("XA RECOVER")
	if err != nil {
		return
	}
	var gids []string
	for i := 0; i < r.RowNumber(); i++ {
		if data, _ := r.GetString(i, 3); strings.HasPrefix(data, db.DB) {
			gids = append(gids, strings.Clone(data))
		}
	}
	r.Close()
	for _, g := range gids {
		_, _ = c.Execute("XA ROLLBACK '" + g + "'")
	}
}

func mysqlDialect(c *client.Conn) dialect {
	return dialect{
		placeholder: func(int) string { return "?" },
		exec: func(q string, args ...any) error {
			_, err := c.Execute(q, args...)
			return err
		},
		noiseSQL: "INSERT INTO orders (customer) VALUES (?)",
	}
}

// mysqlRelayConfig is the relay's YAML for a test database.
func mysqlRelayConfig(db *testdb.MySQL, broker, cpPath, start string) string {
	return fmt.Sprintf(`
source:
  type: mysql
  mysql:
    addr: %s
    user: %s
    password: %q
    server_id: %d
    tables: [%s.outbox]
    start: %q
    heartbeat: 1s
`, db.Addr, db.User, db.Password, testdb.ServerID(), db.DB, start) + relaySections(broker, cpPath)
}

// relaySections is the part of a test relay's YAML that does not depend
// on the source: a fast-flushing producer and frequent checkpoints.
func relaySections(broker, cpPath string) string {
	return fmt.Sprintf(`kafka:
  brokers: [%s]
  linger: 2ms
checkpoint:
  file:
    path: %s
relay:
  checkpoint_interval: 50ms
  shutdown_timeout: 20s
`, broker, cpPath)
}

func loadCheckpoint(t testing.TB, path string) checkpoint.Checkpoint {
	t.Helper()
	s, _ := file.New(file.Config{Path: path})
	cp, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("load checkpoint: %v", err)
	}
	return cp
}

// TestIntegrationMySQLCleanRunEachRowOnce: 10,000 outbox rows in 500 transactions of
// mixed sizes across 50 aggregates, interleaved with writes to another table
// and with rolled-back transactions, arrive exactly once, mapped and in order
// per key; the final checkpoint covers the last transaction.
func TestIntegrationMySQLCleanRunEachRowOnce(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 6)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	start := db.Position(t)
	relay := startRelay(t, mysqlRelayConfig(db, broker.Addr(), cpPath, start))

	p := makePlan(1, "x1", 500, 10000, 50, 25)
	p.write(t, mysqlDialect(db.Conn(t)), 0, len(p.Txns))
	end := db.Position(t)
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)

	verifyExactlyOnce(t, collectAll(t, broker), p.Want)

	cp := loadCheckpoint(t, cpPath)
	got, err := mysql.ParsePosition(cp.Position)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mysql.ParsePosition(end)
	if c, err := got.Compare(want); err != nil || c < 0 {
		t.Fatalf("final checkpoint %s is before the end of the writes %s (%v)", cp.Position, end, err)
	}
}

// TestIntegrationMySQLGracefulRestart stops the relay gracefully while rows
// are being written, writes more, starts it again from its checkpoint, and
// checks nothing is lost and nothing duplicated. `checkpoint show` prints
// the checkpoint the second run resumes from.
func TestIntegrationMySQLGracefulRestart(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	// "earliest" applies only while there is no checkpoint: the second run
	// must resume from the checkpoint, not re-read the whole binlog.
	yaml := mysqlRelayConfig(db, broker.Addr(), cpPath, "earliest")
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	p := makePlan(2, "x2", 200, 4000, 20, 10)
	d := mysqlDialect(db.Conn(t))
	half := len(p.Txns) / 2

	first := startRelay(t, yaml)
	p.write(t, d, 0, half)
	// Wait until the first run is mid-stream, then keep writing while it stops.
	collect(t, broker, p.committedBefore(half)/2, time.Minute)
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		p.write(t, d, half, half+20)
	}()
	first.stop(t)
	<-writing
	afterFirst := len(collectAll(t, broker))
	if afterFirst == 0 || afterFirst >= len(p.Want) {
		t.Fatalf("first run delivered %d of %d: not a mid-stream stop", afterFirst, len(p.Want))
	}
	cp := loadCheckpoint(t, cpPath)

	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{"checkpoint", "show", "--config", cfgPath}, nil, &out, &errb); code != 0 {
		t.Fatalf("checkpoint show: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), cp.Position) || !strings.Contains(out.String(), "mysql") {
		t.Fatalf("checkpoint show printed %q, want the stored position %s", out.String(), cp.Position)
	}

	p.write(t, d, half+20, len(p.Txns))
	second := startRelay(t, yaml)
	collect(t, broker, len(p.Want), 2*time.Minute)
	second.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)

	// The second run resumed after the first run's checkpoint.
	cp2 := loadCheckpoint(t, cpPath)
	a, _ := mysql.ParsePosition(cp.Position)
	b, _ := mysql.ParsePosition(cp2.Position)
	if c, err := a.Compare(b); err != nil || c >= 0 {
		t.Fatalf("checkpoint did not advance: %s then %s", cp.Position, cp2.Position)
	}
}

// TestIntegrationMariaDBReconnectGTID runs the relay as a user with only the
// documented grants, from the server's current position (so GTIDs are
// tracked), and kills its binlog connection repeatedly while rows are
// written: the relay reconnects from its checkpoint by GTID, nothing is
// lost or duplicated, and the password never reaches the logs.
func TestIntegrationMariaDBReconnectGTID(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	user, password := "r"+db.DB[2:], "pw-"+db.DB
	db.Exec(t,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password),
		fmt.Sprintf("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '%s'@'%%'", user),
		fmt.Sprintf("GRANT REFERENCES ON %s.outbox TO '%s'@'%%'", db.DB, user))
	t.Cleanup(func() { db.Exec(t, fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user)) })
	relayDB := *db
	relayDB.User, relayDB.Password = user, password

	broker := startBroker(t, 4)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := strings.Replace(mysqlRelayConfig(&relayDB, broker.Addr(), cpPath, "current"), "checkpoint_interval: 50ms", "checkpoint_interval: 20ms", 1)
	relay := startRelay(t, yaml)
	relay.waitLog(t, "streaming binlog")

	p := makePlan(3, "x3", 300, 3000, 30, 10)
	d := mysqlDialect(db.Conn(t))
	admin := db.Conn(t)
	kills := 0
	for i := 0; i < len(p.Txns); i += 50 {
		p.write(t, d, i, min(i+50, len(p.Txns)))
		r := testdb.Exec(t, admin, fmt.Sprintf("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '%s' AND COMMAND LIKE 'Binlog Dump%%'", user))
		for j := 0; j < r.RowNumber(); j++ {
			id, _ := r.GetInt(j, 0)
			if _, err := admin.Execute(fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
				kills++
			}
		}
		time.Sleep(300 * time.Millisecond) // let it reconnect and catch up a little
	}
	if kills < 3 {
		t.Fatalf("killed the relay's binlog connection only %d times", kills)
	}
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)

	cp := loadCheckpoint(t, cpPath)
	if !strings.Contains(cp.Position, "@") {
		t.Errorf("checkpoint %s carries no GTID set", cp.Position)
	}
	logs := relay.logs.String()
	if !strings.Contains(logs, `"gtid":true`) {
		t.Errorf("relay never streamed by GTID:\n%s", logs)
	}
	if n := strings.Count(logs, "transient failure"); n == 0 || n > kills {
		t.Errorf("logged %d outages for %d kills (want one per outage at most)", n, kills)
	}
	if strings.Contains(logs, password) {
		t.Errorf("the password appears in the logs")
	}
}
