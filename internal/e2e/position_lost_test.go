package e2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source"
)

// TestIntegrationMySQLBinlogPurged: the binlog file of the checkpoint was
// purged while the relay was down: it stops, naming the position, the files
// the server still has and the options, and never skips ahead.
func TestIntegrationMySQLBinlogPurged(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema)
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "cp.json")
	yaml := mysqlRelayConfig(db, broker.Addr(), cpPath, db.Position(t))
	relay := startRelay(t, yaml)
	db.Exec(t, schemaEvent("outbox", 0))
	collect(t, broker, 1, 30*time.Second)
	relay.stop(t)
	cp := loadCheckpoint(t, cpPath).Position
	file := strings.SplitN(cp, ":", 2)[0]

	db.Exec(t, schemaEvent("outbox", 1), "FLUSH BINARY LOGS", "FLUSH BINARY LOGS")
	newest := strings.SplitN(db.Position(t), ":", 2)[0]
	purgeTo(t, db, newest)

	err := runRelayExpectingError(t, yaml)
	var lost *source.PositionLostError
	if !errors.As(err, &lost) || !errors.Is(err, source.ErrPositionLost) || lost.Position != cp {
		t.Errorf("error %v: want a PositionLostError for %s", err, cp)
	}
	// What the operator reads: the position, what the server has, the way out.
	for _, want := range []string{cp, "binlog file " + file + " is no longer on the server", "it has " + newest, "checkpoint set", "will not skip ahead"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if got := loadCheckpoint(t, cpPath).Position; got != cp {
		t.Errorf("checkpoint moved from %s to %s", cp, got)
	}
}

// purgeTo purges the binlogs before newest. MariaDB silently keeps a file a
// replica's dump thread still reads, and the stopped relay's thread lives
// until its next heartbeat finds the socket closed: retry until it is gone.
func purgeTo(t testing.TB, db *testdb.MySQL, newest string) {
	t.Helper()
	c := db.Conn(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		testdb.Exec(t, c, "PURGE BINARY LOGS TO '"+newest+"'")
		r := testdb.Exec(t, c, "SHOW BINARY LOGS")
		oldest, _ := r.GetString(0, 0)
		if oldest == newest {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PURGE BINARY LOGS TO %s left %s", newest, oldest)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestIntegrationPostgresSlotMissing: the slot was dropped while the relay
// was down: it stops, naming the slot and the checkpoint, and does not
// create a new slot that would silently skip the transactions in between.
func TestIntegrationPostgresSlotMissing(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "cp.json")
	yaml := postgresRelayConfig(db, broker.Addr(), cpPath)
	relay := startRelay(t, yaml)
	relay.waitLog(t, "streaming replication slot")
	db.Exec(t, schemaEvent("outbox", 0))
	collect(t, broker, 1, 30*time.Second)
	relay.stop(t)
	cp := loadCheckpoint(t, cpPath).Position
	db.Exec(t, "SELECT pg_drop_replication_slot('"+db.Slot+"')")

	err := runRelayExpectingError(t, yaml)
	var lost *source.PositionLostError
	if !errors.As(err, &lost) || lost.Position != cp {
		t.Errorf("error %v: want a PositionLostError for %s", err, cp)
	}
	for _, want := range []string{db.Slot, "does not exist", cp, "will not skip ahead"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if n := db.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '"+db.Slot+"'"); n != "0" {
		t.Error("the relay created a new slot over a lost position")
	}
}
