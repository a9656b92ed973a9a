package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source/postgres"
)

// The outbox layout of mysql_test.go with Postgres types. The payload is
// json, not jsonb: jsonb would normalise the bytes the relay must keep.
const postgresSchema = `CREATE TABLE outbox (
	id text PRIMARY KEY,
	aggregatetype text NOT NULL,
	aggregateid text NOT NULL,
	type text NOT NULL,
	payload json,
	created_at timestamptz NOT NULL DEFAULT now()
)`

const postgresNoise = `CREATE TABLE orders (
	id bigserial PRIMARY KEY,
	customer text NOT NULL,
	total numeric(10,2) NOT NULL DEFAULT 9.99
)`

// postgresGrammarDialect writes the grammar workload too. Prepared
// transactions a failed test leaves behind are rolled back at its end:
// they would hold DROP DATABASE.
func postgresGrammarDialect(t testing.TB, db *testdb.PostgresDB) dialect {
	t.Cleanup(func() {
		c := db.Conn(t)
		rows, err := c.Query(context.Background(), "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
		if err != nil {
			return
		}
		gids, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, g := range gids {
			_, _ = c.Exec(context.Background(), "ROLLBACK PREPARED '"+strings.ReplaceAll(g, "'", "''")+"'")
		}
	})
	d := postgresDialect(db.Conn(t))
	g := postgresGrammar(d)
	d.grammar = func(t testing.TB, tx txn) { writeGrammar(t, g, tx) }
	return d
}

func postgresDialect(c *pgx.Conn) dialect {
	return dialect{
		placeholder: func(i int) string { return fmt.Sprintf("$%d", i) },
		exec: func(q string, args ...any) error {
			_, err := c.Exec(context.Background(), q, args...)
			return err
		},
		noiseSQL: "INSERT INTO orders (customer) VALUES ($1)",
	}
}

// postgresRelayConfig is the relay's YAML for a test database; extra lines
// go under source.postgres.
func postgresRelayConfig(db *testdb.PostgresDB, broker, cpPath string, extra ...string) string {
	more := ""
	for _, e := range extra {
		more += "    " + e + "\n"
	}
	return fmt.Sprintf(`
source:
  type: postgres
  postgres:
    dsn: %q
    slot: %s
    publication: %s
    tables: [public.outbox]
    status_interval: 1s
%s`, db.DSN, db.Slot, db.Publication, more) + relaySections(broker, cpPath)
}

func setupPostgres(t *testing.T) *testdb.PostgresDB {
	t.Helper()
	db := testdb.Postgres(t)
	db.Exec(t, postgresSchema, postgresNoise)
	return db
}

func lsn(t testing.TB, s string) postgres.Position {
	t.Helper()
	p, err := postgres.ParsePosition(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkSlotBehindCheckpoint asserts the invariant a restart relies on: the
// slot never confirmed more than the durable checkpoint.
func checkSlotBehindCheckpoint(t *testing.T, db *testdb.PostgresDB, cpPath string) postgres.Position {
	t.Helper()
	cp := loadCheckpoint(t, cpPath)
	if cp.Source != "postgres" {
		t.Fatalf("checkpoint source %q", cp.Source)
	}
	return checkSlotBehind(t, db, cp.Position)
}

// checkSlotBehind checks that the slot never confirmed past the stored
// position.
func checkSlotBehind(t *testing.T, db *testdb.PostgresDB, stored string) postgres.Position {
	t.Helper()
	pos := lsn(t, stored)
	if flush := lsn(t, db.SlotFlush(t)); flush.Compare(pos) > 0 {
		t.Fatalf("slot confirmed_flush_lsn %s is beyond the checkpoint %s", flush, pos)
	}
	return pos
}

// TestIntegrationPostgresCleanRunEachRowOnce: 10,000 outbox rows in 500 transactions
// of mixed sizes across 50 aggregates, interleaved with writes to another
// table and with rolled-back transactions, arrive exactly once, mapped and
// in order per key.
func TestIntegrationPostgresCleanRunEachRowOnce(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 6)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	relay.waitLog(t, "streaming replication slot") // the slot exists from here on
	startFlush := lsn(t, db.SlotFlush(t))

	p := makePlan(1, "p1", 500, 10000, 50, 25)
	p.write(t, postgresDialect(db.Conn(t)), 0, len(p.Txns))
	end := lsn(t, db.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	collect(t, broker, len(p.Want), 2*time.Minute)
	relay.stop(t)

	recs := collectAll(t, broker)
	verifyExactlyOnce(t, recs, p.Want)
	// What holds while other tests write to the same server: the final
	// checkpoint covers this test's last transaction (the newest position
	// a record carries), and is no further than the server's WAL now. It
	// may pass `end`: on a quiet outbox it follows the server's keepalive
	// WAL end, which other tests' writes move.
	last := startFlush
	for _, r := range recs {
		h, _ := r.Header(outbox.HeaderPosition)
		if p := lsn(t, h); p.Compare(last) > 0 {
			last = p
		}
	}
	cp := checkSlotBehindCheckpoint(t, db, cpPath)
	now := lsn(t, db.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	if cp.Compare(last) < 0 || cp.Compare(now) > 0 || last.Compare(end) > 0 {
		t.Fatalf("final checkpoint %s: want at or after the last transaction's commit %s (written before %s) and not beyond the server's WAL %s", cp, last, end, now)
	}
}

// writeBulk writes the plan's transactions with INSERT … SELECT (even
// ones) and COPY (odd ones), plus noise rows.
func writeBulk(t *testing.T, c *pgx.Conn, p plan, from, to int) error {
	ctx := context.Background()
	for i := from; i < to; i++ {
		tx := p.Txns[i]
		dbtx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := dbtx.Exec(ctx, "INSERT INTO orders (customer) SELECT 'bulk' FROM generate_series(1, 50)"); err != nil {
			return err
		}
		if i%2 == 0 {
			cols := make([][]string, 5)
			for _, e := range tx.Events {
				for j, v := range []string{e.ID, e.AggType, e.AggID, e.Type, e.Payload} {
					cols[j] = append(cols[j], v)
				}
			}
			_, err = dbtx.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
				SELECT id, at, ai, ty, pl::json FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(id, at, ai, ty, pl, n) ORDER BY n`,
				cols[0], cols[1], cols[2], cols[3], cols[4])
		} else {
			rows := make([][]any, len(tx.Events))
			for j, e := range tx.Events {
				rows[j] = []any{e.ID, e.AggType, e.AggID, e.Type, e.Payload}
			}
			_, err = dbtx.CopyFrom(ctx, pgx.Identifier{"outbox"}, []string{"id", "aggregatetype", "aggregateid", "type", "payload"}, pgx.CopyFromRows(rows))
		}
		if err != nil {
			_ = dbtx.Rollback(ctx)
			return fmt.Errorf("transaction %d: %w", i, err)
		}
		if err := dbtx.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// TestIntegrationPostgresBulkRestart: multi-row INSERT … SELECT and COPY
// transactions (several larger than one piece) with a graceful restart in
// the middle: every row arrives once.
func TestIntegrationPostgresBulkRestart(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 4)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := postgresRelayConfig(db, broker.Addr(), cpPath)
	p := makePlan(4, "p4", 12, 24000, 20, 0)
	conn := db.Conn(t)

	first := startRelay(t, yaml)
	first.waitLog(t, "streaming replication slot")
	if err := writeBulk(t, conn, p, 0, 5); err != nil {
		t.Fatal(err)
	}
	collect(t, broker, p.committedBefore(5)/2, time.Minute)
	writing := make(chan error, 1)
	go func() { writing <- writeBulk(t, db.Conn(t), p, 5, 8) }()
	first.stop(t)
	if err := <-writing; err != nil {
		t.Fatal(err)
	}
	afterFirst := len(collectAll(t, broker))
	if afterFirst == 0 || afterFirst >= len(p.Want) {
		t.Fatalf("first run delivered %d of %d: not a mid-stream stop", afterFirst, len(p.Want))
	}
	checkSlotBehindCheckpoint(t, db, cpPath)

	if err := writeBulk(t, conn, p, 8, len(p.Txns)); err != nil {
		t.Fatal(err)
	}
	second := startRelay(t, yaml)
	collect(t, broker, len(p.Want), 2*time.Minute)
	second.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
	checkSlotBehindCheckpoint(t, db, cpPath)
}

// TestIntegrationPostgresStopInsideTransaction stops the relay gracefully
// while it is sending a transaction handed out in pieces (a small in-flight
// cap keeps it there): it finishes that transaction before it stops, so the
// restart sends none of it again.
func TestIntegrationPostgresStopInsideTransaction(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 2)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := strings.Replace(postgresRelayConfig(db, broker.Addr(), cpPath), "  linger: 2ms\n",
		"  linger: 5ms\n  max_message_bytes: 2000\n  max_in_flight_bytes: 2300\n", 1)
	p := makePlan(9, "p9", 1, 3000, 5, 0) // one transaction of two pieces
	conn := db.Conn(t)

	first := startRelay(t, yaml)
	first.waitLog(t, "streaming replication slot")
	if err := writeBulk(t, conn, p, 0, 1); err != nil {
		t.Fatal(err)
	}
	collect(t, broker, 200, time.Minute)
	first.stop(t)
	if !strings.Contains(first.logs.String(), "finishing the open transaction") {
		t.Fatalf("the stop did not land inside the transaction; logs:\n%s", first.logs.String())
	}
	if n := len(collectAll(t, broker)); n != len(p.Want) {
		t.Fatalf("the stopped relay delivered %d of the transaction's %d records", n, len(p.Want))
	}

	// After a restart, one more event arrives and nothing of the first
	// transaction again.
	solo := event{ID: "p9-solo", AggType: "order", AggID: "solo", Type: "Created", Seq: 1, Payload: `{"solo":true}`}
	if _, err := conn.Exec(context.Background(), `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`,
		solo.ID, solo.AggType, solo.AggID, solo.Type, solo.Payload); err != nil {
		t.Fatal(err)
	}
	second := startRelay(t, yaml)
	collect(t, broker, len(p.Want)+1, time.Minute)
	second.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), append(p.Want, solo))
}

// runRelayExpectingError runs a relay that must stop on its own with an
// error, and returns it.
func runRelayExpectingError(t *testing.T, yaml string) error {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, store, err := cli.Build(cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("the relay kept retrying instead of stopping with an error")
	}
	if err == nil {
		t.Fatal("the relay stopped without an error")
	}
	return err
}

// TestIntegrationPostgresCheckpointResume: a restart resumes exactly at the
// checkpoint; a checkpoint older than the slot's confirmed_flush_lsn is
// refused with an error naming both positions, never skipped over.
func TestIntegrationPostgresCheckpointResume(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := postgresRelayConfig(db, broker.Addr(), cpPath)
	p := makePlan(5, "p5", 120, 1200, 10, 6)
	d := postgresDialect(db.Conn(t))
	a, b := len(p.Txns)/3, 2*len(p.Txns)/3

	first := startRelay(t, yaml)
	first.waitLog(t, "streaming replication slot")
	p.write(t, d, 0, a)
	collect(t, broker, p.committedBefore(a), time.Minute)
	first.stop(t)
	oldCP, err := os.ReadFile(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	old := checkSlotBehindCheckpoint(t, db, cpPath)

	p.write(t, d, a, b)
	second := startRelay(t, yaml)
	collect(t, broker, p.committedBefore(b), time.Minute)
	second.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want[:p.committedBefore(b)])
	newCP, err := os.ReadFile(cpPath)
	if err != nil {
		t.Fatal(err)
	}
	checkSlotBehindCheckpoint(t, db, cpPath)
	flush := lsn(t, db.SlotFlush(t))
	if flush.Compare(old) <= 0 {
		t.Fatalf("slot flush %s did not move past the old checkpoint %s", flush, old)
	}

	// The old checkpoint: the WAL between it and the slot's flush is gone.
	if err := os.WriteFile(cpPath, oldCP, 0o600); err != nil {
		t.Fatal(err)
	}
	err = runRelayExpectingError(t, yaml)
	t.Logf("refused as it should be: %v", err)
	for _, want := range []string{old.String(), flush.String(), "confirmed_flush_lsn", db.Slot} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}

	// Back on its own checkpoint, the relay carries on exactly.
	if err := os.WriteFile(cpPath, newCP, 0o600); err != nil {
		t.Fatal(err)
	}
	p.write(t, d, b, len(p.Txns))
	third := startRelay(t, yaml)
	collect(t, broker, len(p.Want), time.Minute)
	third.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}

// TestIntegrationPostgresQuietOutbox: with nothing written to the outbox,
// ~50 MB written to another table must not pile up behind the slot: its
// confirmed_flush_lsn follows the WAL (through the server's keepalives and
// rows-less checkpoints, not through timeouts).
func TestIntegrationPostgresQuietOutbox(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 1)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	relay.waitLog(t, "streaming replication slot")
	if got := db.QueryString(t, "SHOW wal_sender_timeout"); got != "1min" {
		t.Logf("note: wal_sender_timeout is %s", got)
	}

	conn := db.Conn(t)
	ctx := context.Background()
	// lag is how far the slot's confirmed_flush_lsn trails the WAL, and how
	// far it trails what the walsender has decoded and sent (the part the
	// relay answers for).
	lag := func() (total, behindSent int64) {
		if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
				coalesce(pg_wal_lsn_diff(r.sent_lsn, s.confirmed_flush_lsn)::bigint, 0)
			FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $1`, db.Slot).Scan(&total, &behindSent); err != nil {
			t.Fatal(err)
		}
		return total, behindSent
	}
	const mb = 1 << 20
	var maxLag, maxBehindSent int64
	startWAL := lsn(t, db.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	// ~1 MB of WAL per transaction, at a steady pace (a 2-core machine
	// writes 50 MB in a quarter second, faster than any status cycle).
	for i := 0; i < 50; i++ {
		if _, err := conn.Exec(ctx, `INSERT INTO orders (customer) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 1000) g`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		total, behindSent := lag()
		maxLag, maxBehindSent = max(maxLag, total), max(maxBehindSent, behindSent)
	}
	end := lsn(t, db.QueryString(t, "SELECT pg_current_wal_lsn()::text"))
	written := end.LSN - startWAL.LSN
	if written < 45*mb {
		t.Fatalf("wrote only %d MB of WAL", written/mb)
	}
	began := time.Now()
	for lsn(t, db.SlotFlush(t)).Compare(end) < 0 {
		if time.Since(began) > 20*time.Second {
			t.Fatalf("slot confirmed_flush_lsn %s did not reach the end of the writes %s within 20s", db.SlotFlush(t), end)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d MB of WAL: while writing, the slot trailed the WAL by at most %.1f MB and the walsender's sent position by at most %.1f MB; caught up %s after the writes",
		written/mb, float64(maxLag)/mb, float64(maxBehindSent)/mb, time.Since(began).Round(time.Millisecond))
	// Without the quiet-outbox rule the slot would trail by everything
	// written. What the relay answers for is the distance to what the
	// walsender already sent; the rest is decoding the server has not done yet.
	if maxLag > 16*mb {
		t.Errorf("the slot fell behind while %d MB were written (%d MB behind the WAL, %d MB behind the walsender): the quiet outbox holds WAL back",
			written/mb, maxLag/mb, maxBehindSent/mb)
	}
	// The relay still relays after the rows-less checkpoints, and the
	// noise produced no records.
	e := event{ID: "after-quiet", AggType: "order", AggID: "a1", Type: "Created", Seq: 1, Payload: `{"n":1}`}
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`, e.ID, e.AggType, e.AggID, e.Type, e.Payload); err != nil {
		t.Fatal(err)
	}
	collect(t, broker, 1, 30*time.Second)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), []event{e})
	cp := checkSlotBehindCheckpoint(t, db, cpPath)
	if cp.Compare(end) < 0 {
		t.Fatalf("checkpoint %s behind the end of the writes %s", cp, end)
	}
}

// TestIntegrationPostgresLogicalMessages: transactional logical decoding
// messages with the configured prefix are outbox events, mapped like rows;
// rolled-back, non-transactional and other-prefix messages are not.
func TestIntegrationPostgresLogicalMessages(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath, "message_prefixes: [outbox]", "heartbeat: 200ms"))
	relay.waitLog(t, "streaming replication slot")

	p := makePlan(6, "p6", 60, 600, 10, 6)
	c := db.Conn(t)
	ctx := context.Background()
	must := func(q string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	envelope := func(e event) string {
		return fmt.Sprintf(`{"id":%q, "aggregatetype":%q, "aggregateid":%q, "type":%q, "payload":%s}`, e.ID, e.AggType, e.AggID, e.Type, e.Payload)
	}
	for i, tx := range p.Txns {
		must("BEGIN")
		for j, e := range tx.Events {
			if (i+j)%3 == 0 { // some events as table rows, in the same transaction
				must(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ($1, $2, $3, $4, $5)`, e.ID, e.AggType, e.AggID, e.Type, e.Payload)
			} else {
				must(`SELECT pg_logical_emit_message(true, 'outbox', $1::text)`, envelope(e))
			}
		}
		nt := event{ID: fmt.Sprintf("nt-%d", i), AggType: "order", AggID: "agg-0", Type: "Stray", Payload: "{}"}
		must(`SELECT pg_logical_emit_message(false, 'outbox', $1::text)`, envelope(nt))
		must(`SELECT pg_logical_emit_message(true, 'other', $1::text)`, envelope(nt))
		if tx.Rollback {
			must("ROLLBACK")
		} else {
			must("COMMIT")
		}
	}
	collect(t, broker, len(p.Want), time.Minute)

	// Idle now: the heartbeat's messages still move the slot forward.
	idle := lsn(t, db.SlotFlush(t))
	deadline := time.Now().Add(10 * time.Second)
	for lsn(t, db.SlotFlush(t)).Compare(idle) <= 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slot stayed at %s on an idle database with a 200ms heartbeat", idle)
		}
		time.Sleep(50 * time.Millisecond)
	}
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
	checkSlotBehindCheckpoint(t, db, cpPath)
}

// TestIntegrationPostgresReconnect terminates the relay's walsender
// repeatedly while rows are written: the relay reconnects from its
// checkpoint and nothing is lost or duplicated.
func TestIntegrationPostgresReconnect(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 4)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	yaml := strings.Replace(postgresRelayConfig(db, broker.Addr(), cpPath), "checkpoint_interval: 50ms", "checkpoint_interval: 20ms", 1)
	relay := startRelay(t, yaml)
	relay.waitLog(t, "streaming replication slot")

	p := makePlan(8, "p8", 300, 3000, 30, 10)
	d := postgresDialect(db.Conn(t))
	admin := db.Conn(t)
	kills := 0
	for i := 0; i < len(p.Txns); i += 50 {
		p.write(t, d, i, min(i+50, len(p.Txns)))
		var n int
		if err := admin.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, db.Slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		kills += n
		time.Sleep(300 * time.Millisecond) // let it reconnect and catch up a little
	}
	if kills < 3 {
		t.Fatalf("terminated the relay's walsender only %d times", kills)
	}
	collect(t, broker, len(p.Want), time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
	checkSlotBehindCheckpoint(t, db, cpPath)
	if n := strings.Count(relay.logs.String(), "transient failure"); n == 0 {
		t.Errorf("no outage logged for %d kills", kills)
	}
}

// TestIntegrationPostgresSecondRelay: a second relay on the same slot is
// told the slot is held, logs that once and keeps retrying, while the first
// keeps relaying.
func TestIntegrationPostgresSecondRelay(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	first := startRelay(t, postgresRelayConfig(db, broker.Addr(), filepath.Join(dir, "first.json")))
	first.waitLog(t, "streaming replication slot")
	second := startRelay(t, postgresRelayConfig(db, broker.Addr(), filepath.Join(dir, "second.json")))

	p := makePlan(7, "p7", 100, 1000, 10, 5)
	d := postgresDialect(db.Conn(t))
	p.write(t, d, 0, len(p.Txns)/2)
	second.waitLog(t, "active for PID")
	time.Sleep(3 * time.Second) // several retries
	p.write(t, d, len(p.Txns)/2, len(p.Txns))
	collect(t, broker, len(p.Want), time.Minute)

	logs := second.logs.String()
	if n := strings.Count(logs, "active for PID"); n != 1 {
		t.Errorf("second relay logged the held slot %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "another relay") || strings.Contains(logs, "streaming replication slot") {
		t.Errorf("second relay logs:\n%s", logs)
	}
	second.stop(t)
	first.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}
