package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// start: snapshot, on the real servers. Rows written before the relay's
// first start ("pre-…", written in bulk) and rows written by concurrent
// writers while the snapshot runs ("live-…") must each arrive exactly once
// (or, after a kill during the snapshot, at least once, the duplicates
// being snapshot records only).

const snapshotRows = 100_000

type snapshotTarget struct {
	// yaml is the relay's config with start: snapshot.
	yaml func(broker, cpPath string) string
	// bulk writes n rows pre-0000001 … in a few statements.
	bulk func(t *testing.T, n int)
	// writer returns a function that commits one transaction of the
	// given rows (ids) on a connection of its own.
	writer func(t *testing.T) func(ids []string) error
	// again: the relay logs this while it takes the snapshot again.
	again string
	// compare orders positions of the source.
	compare func(a, b string) (int, error)
}

func mysqlSnapshotTarget(t *testing.T) snapshotTarget {
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema)
	return snapshotTarget{
		yaml: func(broker, cpPath string) string { return mysqlRelayConfig(db, broker, cpPath, "snapshot") },
		bulk: func(t *testing.T, n int) {
			// MariaDB's sequence engine: seq_1_to_N.
			db.Exec(t, fmt.Sprintf(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
				SELECT CONCAT('pre-', LPAD(seq, 7, '0')), 'order', CONCAT('pre-agg-', seq %% 97), 'Created', CONCAT('{"n":', seq, '}')
				FROM seq_1_to_%d`, n))
		},
		writer: func(t *testing.T) func([]string) error {
			c := db.Conn(t)
			return func(ids []string) error {
				_, err := c.Execute(liveInsert(ids))
				return err
			}
		},
		again:   "snapshot of the outbox tables started",
		compare: mysqlCompare,
	}
}

func postgresSnapshotTarget(t *testing.T) snapshotTarget {
	db := setupPostgres(t)
	return snapshotTarget{
		yaml: func(broker, cpPath string) string { return postgresRelayConfig(db, broker, cpPath, "start: snapshot") },
		bulk: func(t *testing.T, n int) {
			db.Exec(t, fmt.Sprintf(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
				SELECT 'pre-' || lpad(g::text, 7, '0'), 'order', 'pre-agg-' || (g %% 97), 'Created', ('{"n":' || g || '}')::json
				FROM generate_series(1, %d) g`, n))
		},
		writer: func(t *testing.T) func([]string) error {
			c := db.Conn(t)
			return func(ids []string) error {
				_, err := c.Exec(context.Background(), liveInsert(ids))
				return err
			}
		},
		again:   "dropped the slot it created and taking the snapshot again",
		compare: postgresCompare,
	}
}

// liveInsert is one multi-row INSERT of the writers' rows (same SQL on
// both servers).
func liveInsert(ids []string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ")
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		n, _ := strconv.Atoi(id[len(id)-7:])
		fmt.Fprintf(&b, "('%s', 'order', '%s-agg-%d', 'Created', '{\"n\":%d}')", id, id[:strings.IndexByte(id, '-')], n%13, n)
	}
	return b.String()
}

// liveWriters commit transactions of 1 to 5 rows on two connections until
// stop is closed; ids are "live<writer>-NNNNNNN" in commit order per
// writer. It returns every id committed.
type liveWriters struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	ids     []string
	stop    chan struct{}
	once    sync.Once
	err     atomic.Value
	written atomic.Int64
}

func startWriters(t *testing.T, tg snapshotTarget) *liveWriters {
	w := &liveWriters{stop: make(chan struct{})}
	// Before the connections close (cleanups run last first).
	t.Cleanup(func() { w.halt() })
	for k := 0; k < 2; k++ {
		exec := tg.writer(t)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			n := 0
			for i := 0; ; i++ {
				select {
				case <-w.stop:
					return
				default:
				}
				size := 1 + i%5
				ids := make([]string, size)
				for j := range ids {
					n++
					ids[j] = fmt.Sprintf("live%c-%07d", 'a'+k, n)
				}
				if err := exec(ids); err != nil {
					w.err.Store(err)
					return
				}
				w.mu.Lock()
				w.ids = append(w.ids, ids...)
				w.mu.Unlock()
				w.written.Add(int64(size))
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return w
}

func (w *liveWriters) halt() {
	w.once.Do(func() { close(w.stop) })
	w.wg.Wait()
}

// finish stops the writers and returns every id they committed.
func (w *liveWriters) finish(t *testing.T) []string {
	t.Helper()
	w.halt()
	if err, _ := w.err.Load().(error); err != nil {
		t.Fatalf("writer: %v", err)
	}
	return w.ids
}

// snapshotWant is every committed id: pre-1 … pre-n, then the writers'.
func snapshotWant(n int, live []string) []string {
	want := make([]string, 0, n+len(live))
	for i := 1; i <= n; i++ {
		want = append(want, fmt.Sprintf("pre-%07d", i))
	}
	return append(want, live...)
}

// verifySnapshotRecords checks each wanted id arrived (exactly once when
// exact), mapped by the defaults, with the snapshot header on every
// pre-… record, per-key order kept (ids grow with commit order per key),
// and returns the duplicates.
func verifySnapshotRecords(t *testing.T, recs []devbroker.Record, want []string, exact bool) (dups int) {
	t.Helper()
	wanted := make(map[string]bool, len(want))
	for _, id := range want {
		wanted[id] = true
	}
	seen := make(map[string]int, len(want))
	last := map[string]string{} // topic/partition/key → last id
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	sortRecords(recs)
	for _, r := range recs {
		id, _ := r.Header(outbox.HeaderID)
		if !wanted[id] {
			fail("unexpected record %q: %s", id, r)
			continue
		}
		seen[id]++
		snap, _ := r.Header(outbox.HeaderSnapshot)
		if seen[id] > 1 {
			dups++
			if exact {
				fail("duplicate record %q", id)
			} else if snap != "true" {
				fail("duplicate record %q is not a snapshot record: only snapshot rows may be sent twice after a kill during the snapshot", id)
			}
		}
		if strings.HasPrefix(id, "pre-") && snap != "true" {
			fail("record %s was written before the first start but has no %s: true header", id, outbox.HeaderSnapshot)
		}
		if r.Topic != "outbox.event.order" || !strings.Contains(string(r.Value), `"n":`) {
			fail("record %s mapped wrong: topic %q value %q", id, r.Topic, r.Value)
		}
		if pos, _ := r.Header(outbox.HeaderPosition); pos == "" || snapshot.IsPending(pos) {
			fail("record %s: %s header %q, want a position of the log", id, outbox.HeaderPosition, pos)
		}
		k := fmt.Sprintf("%s/%d/%s", r.Topic, r.Partition, r.Key)
		// A redone snapshot starts the key's ids again; otherwise they grow.
		if prev, ok := last[k]; ok && id <= prev && !(snap == "true" && seen[id] > 1) {
			fail("order broken for key %s: %s after %s", r.Key, id, prev)
		}
		last[k] = id
	}
	lost := 0
	for _, id := range want {
		if seen[id] == 0 {
			if lost++; lost <= 10 {
				fail("lost record %s", id)
			}
		}
	}
	if lost > 0 {
		t.Errorf("lost %d of %d records", lost, len(want))
	}
	return dups
}

func sortRecords(recs []devbroker.Record) {
	// Kafka order per partition is what a consumer sees.
	less := func(a, b devbroker.Record) bool {
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	}
	sort.SliceStable(recs, func(i, j int) bool { return less(recs[i], recs[j]) })
}

// checkSnapshotFirst: every snapshot record's version (position, index)
// is older than every streamed record's, as consumers that drop stale
// versions (the inbox package) need.
func checkSnapshotFirst(t *testing.T, recs []devbroker.Record, compare func(a, b string) (int, error)) {
	t.Helper()
	var snapMax, streamMin string
	for _, r := range recs {
		pos, _ := r.Header(outbox.HeaderPosition)
		if i := strings.IndexByte(pos, '@'); i >= 0 {
			pos = pos[:i]
		}
		snap, _ := r.Header(outbox.HeaderSnapshot)
		if snap == "true" {
			if snapMax == "" {
				snapMax = pos
			} else if c, err := compare(pos, snapMax); err != nil {
				t.Fatal(err)
			} else if c > 0 {
				snapMax = pos
			}
			continue
		}
		if streamMin == "" {
			streamMin = pos
		} else if c, err := compare(pos, streamMin); err != nil {
			t.Fatal(err)
		} else if c < 0 {
			streamMin = pos
		}
	}
	if snapMax == "" || streamMin == "" {
		t.Fatalf("snapshot records up to %q, streamed from %q: want both", snapMax, streamMin)
	}
	if c, err := compare(snapMax, streamMin); err != nil || c >= 0 {
		t.Fatalf("snapshot records' position %s is not before the first streamed record's %s (%v): consumers would drop streamed records as stale", snapMax, streamMin, err)
	}
	t.Logf("snapshot records at %s, streamed records from %s", snapMax, streamMin)
}

// runSnapshot: 100k rows exist before the first start; writers keep
// committing during the snapshot and after it; every row arrives exactly
// once. A restart then streams on without a second snapshot.
func runSnapshot(t *testing.T, tg snapshotTarget) {
	began := time.Now()
	tg.bulk(t, snapshotRows)
	t.Logf("wrote %d rows before the first start in %s", snapshotRows, time.Since(began).Round(time.Millisecond))
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := tg.yaml(broker.Addr(), cpPath)

	w := startWriters(t, tg)
	time.Sleep(100 * time.Millisecond) // some live rows go into the snapshot
	relay := startRelay(t, yaml)
	relay.waitLog(t, "snapshot of the outbox tables started")
	atStart := w.written.Load()
	waitLogWithin(t, relay, "snapshot read; the stream continues from its position", 90*time.Second)
	atEnd := w.written.Load()
	time.Sleep(time.Second) // and some after it
	live := w.finish(t)
	want := snapshotWant(snapshotRows, live)
	t.Logf("writers committed %d rows (%d before the snapshot started, %d while it was read)", len(live), atStart, atEnd-atStart)
	if atEnd == atStart {
		t.Fatal("no row was committed while the snapshot was read: the test proves nothing about concurrent writes")
	}
	recs := collect(t, broker, len(want), 2*time.Minute)
	relay.stop(t)
	verifySnapshotRecords(t, recs, want, true)
	checkTotal(t, broker, len(want))
	cp := loadCheckpoint(t, cpPath)
	if snapshot.IsPending(cp.Position) {
		t.Fatalf("checkpoint after the snapshot is still %q", cp.Position)
	}
	snapped := 0
	for _, r := range recs {
		if v, _ := r.Header(outbox.HeaderSnapshot); v == "true" {
			snapped++
		}
	}
	t.Logf("%d records, %d of them from the snapshot, checkpoint %s, in %s", len(recs), snapped, cp.Position, time.Since(began).Round(time.Millisecond))
	checkSnapshotFirst(t, recs, tg.compare)
	// Rows committed after the snapshot was taken come from the stream.
	if snapped < snapshotRows || snapped >= len(want) {
		t.Fatalf("%d snapshot records of %d: want every row written before the first start, and not the rows committed after the snapshot", snapped, len(want))
	}

	// A restart streams from the checkpoint: no second snapshot.
	relay2 := startRelay(t, yaml)
	ids := []string{"post-0000001", "post-0000002", "post-0000003"}
	if err := tg.writer(t)(ids); err != nil {
		t.Fatal(err)
	}
	more := collect(t, broker, len(want)+len(ids), time.Minute)
	relay2.stop(t)
	checkTotal(t, broker, len(want)+len(ids))
	if strings.Contains(relay2.logs.String(), "snapshot of the outbox tables started") {
		t.Fatal("the restart took a second snapshot")
	}
	verifySnapshotRecords(t, more, append(want, ids...), true)
}

func TestIntegrationPostgresSnapshot(t *testing.T) {
	t.Parallel()
	runSnapshot(t, postgresSnapshotTarget(t))
}

func TestIntegrationMySQLSnapshot(t *testing.T) {
	t.Parallel()
	runSnapshot(t, mysqlSnapshotTarget(t))
}

// runSnapshotKill: the relay (a child process) is killed with SIGKILL in
// the middle of its snapshot while writers commit; the restarted relay
// takes the snapshot again and nothing is lost. Duplicates are allowed,
// and only of snapshot records (docs/operations.md: crash during the
// snapshot) — under exactly-once too, for read_committed consumers.
func runSnapshotKill(t *testing.T, tg snapshotTarget, eos bool) {
	bin := relayBinary(t)
	tg.bulk(t, snapshotRows)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := writeConfig(t, dir, "relay.yaml", tg.yaml(broker.Addr(), cpPath))
	var env []string
	position := func() string { return readCheckpoint(t, cpPath) }
	if eos {
		const name = "snapkill"
		env = exactlyOnceEnv(name)
		position = func() string { return loadPosition(t, kafkaPositions(t, broker.Addr(), name)) }
	}

	w := startWriters(t, tg)
	c := startChild(t, bin, cfgPath, "", filepath.Join(dir, "run1.log"), env...)
	// Kill once some of the snapshot is in Kafka, well before all of it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := totalRecords(t, broker)
		if n >= 5000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay sent %d records in 30s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	cp := position()
	if !snapshot.IsPending(cp) {
		t.Fatalf("after the kill the checkpoint is %q: the kill came after the snapshot completed (make the snapshot larger)", cp)
	}
	t.Logf("killed during the snapshot: %d records produced, checkpoint %q", totalRecords(t, broker), cp)
	if !eos {
		// The position tools read a pending checkpoint and say what it means.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		code, out, errOut := runCLI(ctx, "checkpoint", "show", "--config", cfgPath)
		cancel()
		if code != 0 || !strings.Contains(out, snapshot.PendingNote) {
			t.Errorf("checkpoint show on a pending snapshot: exit %d\n%s%s", code, out, errOut)
		}
	}

	log2 := filepath.Join(dir, "run2.log")
	c2 := startChild(t, bin, cfgPath, "", log2, env...)
	running := true
	stop := func() error {
		if !running {
			return nil
		}
		running = false
		_ = c2.cmd.Process.Signal(syscall.SIGTERM)
		return <-c2.done
	}
	defer func() { _ = stop() }()
	waitFileLog(t, log2, "snapshot read; the stream continues from its position", time.Minute)
	time.Sleep(500 * time.Millisecond)
	live := w.finish(t)
	want := snapshotWant(snapshotRows, live)
	waitFileLog(t, log2, tg.again, time.Second)
	waitSeen(t, broker, want, 2*time.Minute)
	if err := stop(); err != nil {
		t.Errorf("second run: %v", err)
	}
	var recs []devbroker.Record
	if eos {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		if recs, err = devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `outbox\.event\..*`, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	} else {
		recs = collect(t, broker, totalRecords(t, broker), 2*time.Minute)
	}
	dups := verifySnapshotRecords(t, recs, want, false)
	t.Logf("%d records for %d rows: %d duplicates (snapshot records sent again after the kill)", len(recs), len(want), dups)
	if cp := position(); snapshot.IsPending(cp) {
		t.Fatalf("checkpoint after the second run is still %q", cp)
	}
}

// waitSeen consumes (read_committed) until every id of want has arrived.
func waitSeen(t *testing.T, b *devbroker.Broker, want []string, within time.Duration) {
	t.Helper()
	need := make(map[string]bool, len(want))
	for _, id := range want {
		need[id] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	err := devbroker.Consume(ctx, []string{b.Addr()}, `outbox\.event\..*`, func(r devbroker.Record) error {
		id, _ := r.Header(outbox.HeaderID)
		delete(need, id)
		if len(need) == 0 {
			return devbroker.ErrStop
		}
		return nil
	})
	if len(need) > 0 {
		t.Fatalf("%d of %d rows did not arrive within %s (%v)", len(need), len(want), within, err)
	}
}

// waitLogWithin is waitLog with a longer wait (a snapshot of 100k rows
// under the race detector, on a shared machine).
func waitLogWithin(t *testing.T, rr *runningRelay, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(rr.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("relay did not log %q within %s", s, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// totalRecords is how many records the outbox topics hold.
func totalRecords(t *testing.T, b *devbroker.Broker) int {
	n := int64(0)
	for _, off := range endOffsets(t, b.Addr()) {
		n += off
	}
	return int(n)
}

// checkTotal fails t unless the topics hold exactly n records (collect
// stops at the n it waits for: this finds any beyond them).
func checkTotal(t *testing.T, b *devbroker.Broker, n int) {
	t.Helper()
	if got := totalRecords(t, b); got != n {
		t.Errorf("the outbox topics hold %d records, want exactly %d", got, n)
	}
}

// collectNoMore returns every record visible to read_committed once n
// have arrived, failing t if there are more than n (it waits 10s for one
// more).
func collectNoMore(t *testing.T, b *devbroker.Broker, n int) []devbroker.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := devbroker.CollectN(ctx, []string{b.Addr()}, `outbox\.event\..*`, n+1)
	if err == nil || len(recs) != n {
		t.Errorf("read_committed consumers see %d records, want exactly %d (%v)", len(recs), n, err)
	}
	return recs
}

// waitFileLog waits until the log file holds s.
func waitFileLog(t *testing.T, path, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		raw, _ := os.ReadFile(path)
		b := string(raw)
		if strings.Contains(b, s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not log %q within %s:\n%s", path, s, within, tail(b, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestIntegrationPostgresSnapshotKill(t *testing.T) {
	t.Parallel()
	runSnapshotKill(t, postgresSnapshotTarget(t), false)
}

func TestIntegrationMySQLSnapshotKill(t *testing.T) {
	t.Parallel()
	runSnapshotKill(t, mysqlSnapshotTarget(t), false)
}

func TestIntegrationPostgresSnapshotKillExactlyOnce(t *testing.T) {
	t.Parallel()
	runSnapshotKill(t, postgresSnapshotTarget(t), true)
}

func TestIntegrationMySQLSnapshotKillExactlyOnce(t *testing.T) {
	t.Parallel()
	runSnapshotKill(t, mysqlSnapshotTarget(t), true)
}

// runSnapshotExactlyOnce: start: snapshot under relay.delivery:
// exactly-once (positions in Kafka, committed with the records, many of
// them "snapshot" while the snapshot runs): a read_committed consumer
// sees every row once, and the committed position moves past the
// snapshot.
func runSnapshotExactlyOnce(t *testing.T, tg snapshotTarget) {
	const rows = 20_000
	tg.bulk(t, rows)
	broker := startBroker(t, 3)
	name := "snapeos"
	yaml := withKafkaStore(t, tg.yaml(broker.Addr(), filepath.Join(t.TempDir(), "unused.json")), name,
		"  delivery: exactly-once\n  commit_max_records: 1000\n")
	w := startWriters(t, tg)
	relay := startRelay(t, yaml)
	waitLogWithin(t, relay, "snapshot read; the stream continues from its position", 90*time.Second)
	time.Sleep(500 * time.Millisecond)
	live := w.finish(t)
	want := snapshotWant(rows, live)
	collect(t, broker, len(want), 2*time.Minute)
	relay.stop(t)
	recs := collectNoMore(t, broker, len(want))
	verifySnapshotRecords(t, recs, want, true)
	cp := kafkaPosition(t, broker.Addr(), name)
	if snapshot.IsPending(cp.Position) {
		t.Fatalf("committed position after the snapshot is still %q", cp.Position)
	}
	t.Logf("%d records (%d written during the run), committed position %s", len(recs), len(live), cp.Position)
}

func TestIntegrationPostgresSnapshotExactlyOnce(t *testing.T) {
	t.Parallel()
	runSnapshotExactlyOnce(t, postgresSnapshotTarget(t))
}

func TestIntegrationMySQLSnapshotExactlyOnce(t *testing.T) {
	t.Parallel()
	runSnapshotExactlyOnce(t, mysqlSnapshotTarget(t))
}
