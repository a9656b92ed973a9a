package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// firstStartTarget is a fresh database for the first-start tests.
type firstStartTarget struct {
	yaml  func(broker, cpPath string) string
	write func(t *testing.T, p plan)
	exec  func(t *testing.T, stmts ...string)
	bad   string // INSERT of a row the mapping refuses (NULL key)
	ready string // what the relay logs once it streams
	// stores: the relay stores its resolved start (MySQL); a Postgres
	// slot holds it instead.
	stores bool
}

func mysqlFirstStart(t *testing.T) firstStartTarget {
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	return firstStartTarget{
		yaml:   func(broker, cpPath string) string { return mysqlRelayConfig(db, broker, cpPath, "current") },
		write:  func(t *testing.T, p plan) { p.write(t, mysqlDialect(db.Conn(t)), 0, len(p.Txns)) },
		exec:   func(t *testing.T, stmts ...string) { db.Exec(t, stmts...) },
		bad:    `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bad-1', 'order', '', 'T', '{}')`,
		ready:  "streaming binlog",
		stores: true,
	}
}

func postgresFirstStart(t *testing.T) firstStartTarget {
	db := setupPostgres(t)
	return firstStartTarget{
		yaml:  func(broker, cpPath string) string { return postgresRelayConfig(db, broker, cpPath) },
		write: func(t *testing.T, p plan) { p.write(t, postgresDialect(db.Conn(t)), 0, len(p.Txns)) },
		exec:  func(t *testing.T, stmts ...string) { db.Exec(t, stmts...) },
		bad:   `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('bad-1', 'order', '', 'T', '{}')`,
		ready: "streaming replication slot",
	}
}

// runFirstStartBrokerDown: a relay starts for the first time (no
// checkpoint, start: current / a new slot) while the broker is down; rows
// are committed; the broker comes back: every row arrives. The start
// position was stored before the first send, so the retries resume there
// instead of resolving "current" again past those rows.
func runFirstStartBrokerDown(t *testing.T, tg firstStartTarget) {
	addr := freeAddr(t)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, tg.yaml(addr, cpPath))
	if tg.stores {
		relay.waitLog(t, "no checkpoint yet: stored the start position")
	}
	relay.waitLog(t, "transient failure") // the broker is down

	p := makePlan(31, "fs", 40, 300, 8, 3)
	tg.write(t, p)
	time.Sleep(time.Second) // a retry or two against the missing broker

	broker, err := devbroker.Start(devbroker.Options{Addr: addr, Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}

func TestIntegrationMySQLFirstStartBrokerDown(t *testing.T) {
	t.Parallel()
	runFirstStartBrokerDown(t, mysqlFirstStart(t))
}

func TestIntegrationPostgresFirstStartBrokerDown(t *testing.T) {
	t.Parallel()
	runFirstStartBrokerDown(t, postgresFirstStart(t))
}

// runFirstStartBadRow: the first run stops at a bad row (on_bad_row:
// fail); a second run stops at the same row again instead of resolving
// "current" anew and skipping it without a word.
func runFirstStartBadRow(t *testing.T, tg firstStartTarget) {
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := tg.yaml(broker.Addr(), cpPath)
	relay := startRelay(t, yaml)
	relay.waitLog(t, tg.ready)
	tg.exec(t, tg.bad)
	select {
	case err := <-relay.done:
		if err == nil || !strings.Contains(err.Error(), "bad-1") {
			t.Fatalf("first run ended with %v; want it stopped at row bad-1", err)
		}
		relay.cancel = nil
	case <-time.After(time.Minute):
		t.Fatal("the first run did not stop at the bad row")
	}
	tg.exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('good-2', 'order', 'k', 'T', '{}')`)
	err := runRelayExpectingError(t, yaml)
	if !strings.Contains(err.Error(), "bad-1") {
		t.Fatalf("second run: %v; want it stopped at bad-1 again", err)
	}
}

func TestIntegrationMySQLFirstStartBadRow(t *testing.T) {
	t.Parallel()
	runFirstStartBadRow(t, mysqlFirstStart(t))
}

func TestIntegrationPostgresFirstStartBadRow(t *testing.T) {
	t.Parallel()
	runFirstStartBadRow(t, postgresFirstStart(t))
}
