package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationMySQLCleanup: the cleanup deletes delivered rows older
// than the retention while the relay streams, never one whose record
// Kafka has not acknowledged, never a young one; its DELETEs produce no
// records.
func TestIntegrationMySQLCleanup(t *testing.T) {
	t.Parallel()
	runCleanup(t, mariaTableTarget(t))
}

// TestIntegrationPostgresCleanup is the same on Postgres.
func TestIntegrationPostgresCleanup(t *testing.T) {
	t.Parallel()
	runCleanup(t, postgresTableTarget(t))
}

// TestIntegrationMySQLCleanupExactlyOnce: the same under exactly-once,
// where the durable position is the one committed with the records.
func TestIntegrationMySQLCleanupExactlyOnce(t *testing.T) {
	t.Parallel()
	runCleanup(t, mariaTableTarget(t), func(yaml string) string {
		return withKafkaStore(t, yaml, "cleanup-eos-"+fmt.Sprint(time.Now().UnixNano()), "  delivery: exactly-once\n")
	})
}

func runCleanup(t *testing.T, tg tableTarget, modify ...func(string) string) {
	broker := startBroker(t, 3)
	cp := filepath.Join(t.TempDir(), "checkpoint.json")
	listen := freeAddr(t)
	base := tg.yaml(broker.Addr(), cp)
	for _, m := range modify {
		base = m(base)
	}
	yaml := withLines(base, "outbox", "cleanup:\n  enabled: true\n  retention: 30m\n  batch_size: 7\n  interval: 200ms")
	yaml = withLines(yaml, "metrics", "listen: "+listen)
	rr := startService(t, yaml)
	rr.waitLog(t, "outbox cleanup on")
	rr.waitLog(t, "streaming") // a Postgres slot exists from here on

	want := map[string]bool{"w0": true}
	tg.insert(t, "w0", "a0", "")
	collect(t, broker, 1, 30*time.Second)

	// Kafka acknowledges nothing for a while: rows old enough to delete
	// are not covered by the checkpoint, so none may go.
	stall := broker.StallProduce(5 * time.Second)
	old := map[string]bool{}
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("o%02d", i)
		tg.insert(t, id, fmt.Sprintf("a%d", i%5), tg.at(i))
		old[id], want[id] = true, true
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("y%d", i)
		tg.insert(t, id, "a1", "")
		want[id] = true
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		have := tg.ids(t)
		for id := range old {
			if !have[id] {
				t.Fatalf("row %s was deleted while Kafka had not acknowledged its record (produce stalled)", id)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	stall()

	// Once acknowledged they go, also while more old rows keep coming.
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("p%02d", i)
		tg.insert(t, id, fmt.Sprintf("a%d", i%5), tg.at(i))
		old[id], want[id] = true, true
		time.Sleep(20 * time.Millisecond)
	}
	deadline = time.Now().Add(40 * time.Second)
	for {
		have := tg.ids(t)
		left := 0
		for id := range old {
			if have[id] {
				left++
			}
		}
		for id := range want {
			if !old[id] && !have[id] {
				t.Fatalf("row %s, younger than the retention, was deleted", id)
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d old delivered rows still in the table after 40s; logs:\n%s", left, rr.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitMetric(t, "http://"+listen, "outboxrelay_cleanup_rows_deleted_total", float64(len(old)))

	// Every row was delivered once, and the DELETEs produced nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `outbox\..*`, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range recs {
		id, _ := r.Header("id")
		got[id]++
		if !want[id] || !strings.HasPrefix(r.Topic, "outbox.event.") {
			t.Errorf("unexpected record (a DELETE's?): %s", r)
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("row %s: %d records, want 1", id, got[id])
		}
	}
	rr.stop(t)
}

// TestIntegrationMySQLCleanupGrants: with the relay's documented grants
// plus SELECT but no DELETE on the outbox table, the cleanup names the
// table and the grant and deletes nothing, the relay goes on; once
// DELETE is granted it deletes — SELECT, DELETE is all it needs.
func TestIntegrationMySQLCleanupGrants(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	user := mariaUser(t, db, "REPLICATION SLAVE, BINLOG MONITOR")
	db.Exec(t, fmt.Sprintf("GRANT REFERENCES, SELECT ON %s.outbox TO '%s'@'%%'", db.DB, user.User))
	broker := startBroker(t, 3)
	cp := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := withLines(mysqlRelayConfig(user, broker.Addr(), cp, db.Position(t)), "outbox", "cleanup:\n  enabled: true\n  retention: 30m\n  interval: 200ms")
	rr := startService(t, yaml)
	c := db.Conn(t)
	for i := 0; i < 5; i++ {
		testdb.Exec(t, c, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, created_at) VALUES (?, 'order', 'a', 'created', '{}', NOW(6) - INTERVAL 1 HOUR)", fmt.Sprintf("g%d", i)).Close()
	}
	collect(t, broker, 5, 30*time.Second)
	rr.waitLog(t, "GRANT DELETE ON "+db.DB+".outbox")
	if n := db.QueryString(t, "SELECT COUNT(*) FROM outbox"); n != "5" {
		t.Fatalf("%s rows left without the DELETE grant, want 5", n)
	}
	db.Exec(t, fmt.Sprintf("GRANT DELETE ON %s.outbox TO '%s'@'%%'", db.DB, user.User))
	deadline := time.Now().Add(40 * time.Second)
	for db.QueryString(t, "SELECT COUNT(*) FROM outbox") != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("rows not deleted 40s after GRANT DELETE; logs:\n%s", rr.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(rr.logs.String(), user.Password) {
		t.Error("the logs hold the password")
	}
}
