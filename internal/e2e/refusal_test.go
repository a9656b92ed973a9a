package e2e

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationPostgresNearLimitRecordSkipped: kafka.max_message_bytes
// 4096 and on_bad_row: skip; one row whose record is about 4,075 bytes by
// a naive count (topic, key, value, headers) but over 4,096 as the
// producer frames it, then an ordinary row. The near-limit row is a bad
// row (too_large) and skipped; the ordinary one arrives exactly once; the
// relay never restarts (no "transient failure"), let alone loops.
func TestIntegrationPostgresNearLimitRecordSkipped(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := withLines(withLines(postgresRelayConfig(db, broker.Addr(), cpPath), "kafka", "max_message_bytes: 4096\nmax_in_flight_bytes: 65536"), "outbox", "on_bad_row: skip")
	relay := startRelay(t, yaml)
	relay.waitLog(t, "streaming replication slot")
	// topic 18 + key 1 + headers id/near-1, type/T, position/~10, index/0
	// (about 80 bytes with their names) + payload: about 4,075; sarama
	// adds its record overhead (21 + 10 per header) on top.
	db.Exec(t, fmt.Sprintf(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('near-1', 'order', 'k', 'T', '"%s"')`, strings.Repeat("x", 3993)))
	after := event{ID: "after-1", AggType: "order", AggID: "k", Type: "T", Seq: 1, Payload: `{"n":1}`}
	(plan{Txns: []txn{{Events: []event{after}}}}).write(t, postgresDialect(db.Conn(t)), 0, 1)
	collect(t, broker, 1, time.Minute)
	relay.waitLog(t, "bad outbox row skipped")
	time.Sleep(time.Second) // a loop, if any, would show by now
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), []event{after})
	logs := relay.logs.String()
	if n := strings.Count(logs, "transient failure"); n != 0 {
		t.Errorf("the relay restarted %d time(s) over a record too large:\n%s", n, logs)
	}
	if !strings.Contains(logs, outbox.ReasonTooLarge) {
		t.Errorf("the skip does not name reason %s", outbox.ReasonTooLarge)
	}
}

// TestIntegrationMySQLOrderAcrossRefusedRequest: the broker refuses one
// produce request (a non-retriable error, as for a corrupt batch) in the
// middle of a backlog of transactions with few keys: the session stops,
// the next one sends the refused records again, and per key the first
// copies arrive in order, nothing lost. (That the producer writes nothing
// queued behind a refused batch — which sarama otherwise lets through —
// is shown deterministically by sink/kafka TestProducerStopsAtFirstRefusal;
// here the whole path is checked.)
func TestIntegrationMySQLOrderAcrossRefusedRequest(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, mysqlRelayConfig(db, broker.Addr(), cpPath, "current"))
	relay.waitLog(t, "streaming binlog")
	p := makePlan(41, "rf", 300, 6000, 3, 0)
	d := mysqlDialect(db.Conn(t))
	p.write(t, d, 0, 30)
	collect(t, broker, p.committedBefore(30), time.Minute)
	// A backlog, answered slowly, so that batches queue in the producer
	// behind the one refused.
	broker.DelayProduce(0, 100*time.Millisecond)
	refused := broker.RefuseProduce("outbox.event.order", 87, 3) // INVALID_RECORD
	p.write(t, d, 30, len(p.Txns))
	recs := collectAtLeast(t, broker, p.Want)
	relay.stop(t)
	if !refused() {
		t.Fatal("the broker refused no request")
	}
	verifyFirstCopiesInOrder(t, recs, p.Want)
	if !strings.Contains(relay.logs.String(), "did not acknowledge") {
		t.Errorf("the refusal was not logged")
	}
}

// collectAtLeast waits until every wanted event arrived (copies allowed).
func collectAtLeast(t *testing.T, b *devbroker.Broker, want []event) []devbroker.Record {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		recs := collectAll(t, b)
		seen := map[string]bool{}
		for _, r := range recs {
			id, _ := r.Header(outbox.HeaderID)
			seen[id] = true
		}
		missing := 0
		for _, e := range want {
			if !seen[e.ID] {
				missing++
			}
		}
		if missing == 0 {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never arrived", missing, len(want))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// verifyFirstCopiesInOrder checks at-least-once delivery: every wanted
// event arrived, nothing else did, and per topic and key the first copies
// are in commit order.
func verifyFirstCopiesInOrder(t *testing.T, got []devbroker.Record, want []event) {
	t.Helper()
	byID := map[string]event{}
	for _, e := range want {
		byID[e.ID] = e
	}
	sort.SliceStable(got, func(i, j int) bool {
		if got[i].Topic != got[j].Topic {
			return got[i].Topic < got[j].Topic
		}
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	seen, last := map[string]bool{}, map[string]int{}
	dups, errs := 0, 0
	for _, r := range got {
		id, _ := r.Header(outbox.HeaderID)
		e, ok := byID[id]
		if !ok {
			t.Errorf("unexpected record %s", r)
			continue
		}
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		k := r.Topic + "/" + e.AggID
		if e.Seq <= last[k] {
			if errs++; errs <= 10 {
				t.Errorf("key %s: first copy of seq %d after the first copy of seq %d", k, e.Seq, last[k])
			}
		}
		last[k] = e.Seq
	}
	for _, e := range want {
		if !seen[e.ID] {
			t.Errorf("lost %s", e.ID)
		}
	}
	t.Logf("%d records, %d distinct, %d duplicates, %d order violations", len(got), len(seen), dups, errs)
}
