package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

func testConfig(db *testdb.MySQL) Config {
	return Config{Addr: db.Addr, User: db.User, Password: db.Password, ServerID: testdb.ServerID(),
		Tables: []string{db.DB + ".outbox"}, Heartbeat: time.Second}
}

// TestIntegrationDeriveGTIDByReading runs MySQL's way of finding a start
// position's GTID set — read the file from its start, take the GTID set
// before it (MySQL's Previous_gtids; MariaDB's GTID list) and add the
// GTIDs up to the offset — on a live MariaDB, and checks every transaction
// end against the server's own BINLOG_GTID_POS. (Shared server: other
// tests write concurrently, which only makes the file longer.)
func TestIntegrationDeriveGTIDByReading(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, "CREATE TABLE outbox (id VARCHAR(64) PRIMARY KEY, aggregatetype VARCHAR(64), aggregateid VARCHAR(64), type VARCHAR(64), payload TEXT)")
	c := db.Conn(t)
	// A fresh binlog file: the derivation reads it from its start, and
	// the shared server's current one may be large.
	testdb.Exec(t, c, "FLUSH BINARY LOGS")
	for i := range 3 {
		testdb.Exec(t, c, fmt.Sprintf("INSERT INTO outbox VALUES ('a%d', 'order', 'k', 'T', '{}')", i))
	}
	start, err := ParsePosition(db.Position(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		testdb.Exec(t, c, fmt.Sprintf("INSERT INTO outbox VALUES ('b%d', 'order', 'k', 'T', '{}')", i))
	}
	cfg := testConfig(db)
	cfg.deriveGTIDByReading = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)), start.String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seen := 0
	for seen < 3 {
		tx, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tx.End == nil {
			continue
		}
		end := tx.End.(Position)
		want := db.QueryString(t, fmt.Sprintf("SELECT BINLOG_GTID_POS(%s, %d)", sqlString(end.File), end.Offset))
		if end.GTID() != want {
			t.Fatalf("derived GTID set at %s:%d is %q, the server says %q", end.File, end.Offset, end.GTID(), want)
		}
		for _, row := range tx.Rows {
			if id := row.Values[0].(string); id[0] != 'b' {
				t.Fatalf("row %s from before the start position", id)
			}
			seen++
		}
	}
}
