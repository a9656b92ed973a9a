package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/inbox"
	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// The "position lost" runbook of docs/operations.md, end to end: the
// relay fails closed, the cleanup (retention 1s) has deleted what was
// delivered but none of the gap's rows, the operator fixes the new
// position, republishes the gap from the table and sets the position;
// every row arrives.

// TestIntegrationMySQLRunbookRepublishGap: the binlog after the
// checkpoint was purged.
func TestIntegrationMySQLRunbookRepublishGap(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema)
	c := db.Conn(t)
	start := db.Position(t)
	runRunbook(t, runbookTarget{
		yaml: func(broker, cp string) string { return mysqlRelayConfig(db, broker, cp, start) },
		insert: func(t testing.TB, id string) {
			testdb.Exec(t, c, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, 'order', 'a', 'created', '{}')", id).Close()
		},
		count: func(t testing.TB) string { return db.QueryString(t, "SELECT COUNT(*) FROM outbox") },
		lose: func(t testing.TB) {
			db.Exec(t, "FLUSH BINARY LOGS", "FLUSH BINARY LOGS")
			purgeTo(t, db, strings.SplitN(db.Position(t), ":", 2)[0])
		},
		lost:   "is no longer on the server",
		newPos: func(t testing.TB) string { return db.Position(t) },
	})
}

// TestIntegrationPostgresRunbookRepublishGap: the slot was lost.
func TestIntegrationPostgresRunbookRepublishGap(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	runRunbook(t, runbookTarget{
		yaml: func(broker, cp string) string { return postgresRelayConfig(db, broker, cp) },
		insert: func(t testing.TB, id string) {
			db.Exec(t, fmt.Sprintf("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('%s', 'order', 'a', 'created', '{}')", id))
		},
		count: func(t testing.TB) string { return db.QueryString(t, "SELECT count(*)::text FROM outbox") },
		lose: func(t testing.TB) {
			db.Exec(t, "SELECT pg_drop_replication_slot('"+db.Slot+"')")
		},
		lost: "does not exist",
		newPos: func(t testing.TB) string {
			return db.QueryString(t, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", db.Slot)
		},
	})
}

type runbookTarget struct {
	yaml   func(broker, cpPath string) string
	insert func(t testing.TB, id string)
	count  func(t testing.TB) string
	lose   func(t testing.TB) // lose the log after the checkpoint (relay stopped)
	lost   string             // what the relay's error says then
	newPos func(t testing.TB) string
}

func runRunbook(t *testing.T, tg runbookTarget) {
	broker := startBroker(t, 3)
	dir := t.TempDir()
	cp := filepath.Join(dir, "checkpoint.json")
	yaml := withLines(tg.yaml(broker.Addr(), cp), "outbox", "cleanup:\n  enabled: true\n  retention: 1s\n  interval: 200ms")
	cfgPath := writeConfig(t, dir, "relay.yaml", yaml)
	ctx := context.Background()

	// Delivered rows go once older than the retention.
	rr := startService(t, yaml)
	rr.waitLog(t, "streaming")
	for i := 0; i < 5; i++ {
		tg.insert(t, fmt.Sprintf("b%d", i))
	}
	collect(t, broker, 5, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for tg.count(t) != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("delivered rows not cleaned up; logs:\n%s", rr.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rr.stop(t)
	lostCP := loadCheckpoint(t, cp)
	saved := lostCP.UpdatedAt

	// The gap: rows the log will not have.
	for i := 0; i < 8; i++ {
		tg.insert(t, fmt.Sprintf("g%d", i))
	}
	tg.lose(t)
	time.Sleep(1500 * time.Millisecond) // the gap's rows are older than the retention

	// 1. It fails closed; its cleanup, running meanwhile, deletes none of
	// them (the checkpoint does not cover them).
	code, _, errOut := runCLI(ctx, "run", "--config", cfgPath)
	if code != cli.ExitFailure || !strings.Contains(errOut, tg.lost) {
		t.Fatalf("run over a lost position: exit %d, %s", code, errOut)
	}
	if n := tg.count(t); n != "8" {
		t.Fatalf("%s rows left of the gap's 8 after the failed start", n)
	}
	// 2. The new position first, 3. republish the gap, 4. set the position.
	pos := tg.newPos(t)
	since := saved.Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	if code, out, errOut := runCLI(ctx, "republish", "--config", cfgPath, "--since", since, "--position", lostCP.Position); code != 0 || !strings.Contains(out, "republished 8 records") {
		t.Fatalf("republish --since %s: exit %d\n%s%s", since, code, out, errOut)
	}
	if code, out, errOut := runCLI(ctx, "checkpoint", "set", "--config", cfgPath, "--to", pos); code != 0 {
		t.Fatalf("checkpoint set --to %s: exit %d\n%s%s", pos, code, out, errOut)
	}
	rr = startService(t, yaml)
	rr.waitLog(t, "streaming")
	for i := 0; i < 3; i++ {
		tg.insert(t, fmt.Sprintf("a%d", i))
	}

	want := map[string]bool{}
	for _, p := range []struct {
		prefix string
		n      int
	}{{"b", 5}, {"g", 8}, {"a", 3}} {
		for i := 0; i < p.n; i++ {
			want[fmt.Sprintf("%s%d", p.prefix, i)] = true
		}
	}
	deadline = time.Now().Add(40 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		recs, err := devbroker.CollectUntilIdle(cctx, []string{broker.Addr()}, `outbox\..*`, 1500*time.Millisecond)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		republished := 0
		versions := map[byte][]version{}
		for _, r := range recs {
			id, _ := r.Header("id")
			got[id] = true
			versions[id[0]] = append(versions[id[0]], recordVersion(t, r))
			if v, _ := r.Header(cli.HeaderRepublish); v == "true" {
				republished++
				if id[0] != 'g' {
					t.Errorf("republished %s, which is not in the gap", id)
				}
			}
		}
		var missing []string
		for id := range want {
			if !got[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			if republished != 8 {
				t.Errorf("%d republished records, want the gap's 8", republished)
			}
			// Version order (what inbox's CheckVersion compares): before
			// the gap < the gap (stamped with the lost position) < after.
			for _, pair := range [][2]byte{{'b', 'g'}, {'g', 'a'}} {
				for _, lo := range versions[pair[0]] {
					for _, hi := range versions[pair[1]] {
						if !lo.less(t, hi) {
							t.Fatalf("%c record at %v is not before %c record at %v", pair[0], lo, pair[1], hi)
						}
					}
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows never delivered: %v", missing)
		}
	}
	rr.stop(t)
}

// version is a record's place in the log as consumers compare it.
type version struct {
	pos   string
	index int64
}

func recordVersion(t testing.TB, r devbroker.Record) version {
	t.Helper()
	pos, ok := r.Header(outbox.HeaderPosition)
	idx, ok2 := r.Header(outbox.HeaderIndex)
	if !ok || !ok2 {
		t.Fatalf("record without position headers: %s", r)
	}
	n, err := strconv.ParseInt(idx, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return version{pos, n}
}

func (v version) less(t testing.TB, w version) bool {
	c, err := inbox.ComparePositions(v.pos, w.pos)
	if err != nil {
		t.Fatal(err)
	}
	return c < 0 || c == 0 && v.index < w.index
}
