package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source"
)

const testOutbox = `CREATE TABLE outbox (
	id text PRIMARY KEY,
	aggregatetype text NOT NULL,
	aggregateid text NOT NULL,
	type text NOT NULL,
	payload json,
	bin bytea,
	created_at timestamptz NOT NULL DEFAULT now()
)`

func testConfig(db *testdb.PostgresDB) Config {
	return Config{
		DSN:            db.DSN,
		Slot:           db.Slot,
		Publication:    db.Publication,
		Tables:         []string{"public.outbox"},
		StatusInterval: 100 * time.Millisecond,
	}
}

func openReader(t *testing.T, cfg Config, from string) *Reader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Open(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)), from)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func next(t *testing.T, r *Reader) *source.Tx {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tx, err := r.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return tx
}

// nextWithRows skips rows-less transactions (quiet-outbox ends).
func nextWithRows(t *testing.T, r *Reader) *source.Tx {
	t.Helper()
	for {
		tx := next(t, r)
		if len(tx.Rows) > 0 || tx.End == nil {
			return tx
		}
	}
}

func waitFlush(t *testing.T, db *testdb.PostgresDB, atLeast pglogrepl.LSN) pglogrepl.LSN {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := ParsePosition(db.SlotFlush(t))
		if err == nil && p.LSN >= atLeast {
			return p.LSN
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot confirmed_flush_lsn %s did not reach %s", db.SlotFlush(t), atLeast)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIntegrationPostgresSetupErrors: what the relay cannot fix itself is a
// permanent error that names the SQL to run.
func TestIntegrationPostgresSetupErrors(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, testOutbox, `CREATE TABLE orders (id serial PRIMARY KEY, customer text)`)
	open := func(cfg Config, from string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := Open(ctx, cfg, zerolog.Nop(), from)
		if err == nil {
			r.Close()
		}
		return err
	}
	expect := func(name string, err error, permanent bool, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", name)
			return
		}
		if source.IsPermanent(err) != permanent {
			t.Errorf("%s: permanent=%v, want %v: %v", name, !permanent, permanent, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", name, err, w)
			}
		}
	}

	cfg := testConfig(db)
	cfg.Create = CreateNever
	expect("no publication", open(cfg, ""), true, fmt.Sprintf(`CREATE PUBLICATION "%s" FOR TABLE "public"."outbox" WITH (publish = 'insert')`, db.Publication))

	db.Exec(t, fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE orders`, db.Publication))
	expect("publication lacks the table", open(cfg, ""), true, "public.outbox", fmt.Sprintf(`ALTER PUBLICATION "%s" ADD TABLE "public"."outbox"`, db.Publication))
	db.Exec(t, fmt.Sprintf(`ALTER PUBLICATION %s ADD TABLE outbox`, db.Publication))

	expect("no slot", open(cfg, ""), true, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'pgoutput')`, db.Slot))
	expect("no slot but a checkpoint", open(cfg, "0/1000"), true, db.Slot, "does not exist", "0/1000")

	missing := cfg
	missing.Tables = []string{"public.outbox", "shop.outbox", "/nothing_.*/"}
	expect("missing table", open(missing, ""), true, "no table shop.outbox")
	none := cfg
	none.Tables = []string{"/nothing_.*/"}
	expect("no table matches", open(none, ""), true, "matches")

	bad := cfg
	bad.DSN = strings.Replace(db.DSN, "postgres@", "postgres:s3cret@", 1)
	bad.DSN = strings.Replace(bad.DSN, "/"+db.DB, "/no_such_db", 1)
	err := open(bad, "")
	expect("no database", err, true, "no_such_db")
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error leaks the password: %v", err)
	}

	// With the slot created, a checkpoint from another server (beyond the
	// WAL end) is refused.
	auto := testConfig(db)
	if err := open(auto, ""); err != nil {
		t.Fatalf("create=auto: %v", err)
	}
	expect("checkpoint beyond WAL end", open(auto, "FF/0"), true, "FF/0", "beyond the server's current WAL position")
	expect("garbage checkpoint", open(auto, "mysql-bin.000001:4"), true, "mysql-bin.000001:4")
}

// TestIntegrationPostgresReader reads inserts raw (json bytes as written,
// bytea decoded, NULL as nil), skips updates, deletes and other tables,
// splits a large transaction into pieces of one ID, picks up a changed
// layout, and moves the slot only as far as Ack says.
func TestIntegrationPostgresReader(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, testOutbox, `CREATE TABLE orders (id serial PRIMARY KEY, customer text)`)
	r := openReader(t, testConfig(db), "")
	start := r.start
	if start == 0 {
		t.Fatal("start LSN is 0")
	}
	conn := db.Conn(t)
	ctx := context.Background()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	payload := `{"b": 1,  "a" : "Zoë ☃"}`
	exec("BEGIN")
	exec("INSERT INTO orders (customer) VALUES ('x')")
	exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, bin) VALUES ('e1', 'order', '42', 'Created', $1, $2)`, payload, []byte{0, 1, 0xfe, 0xff})
	exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES ('e2', 'order', '42', 'Updated')`)
	exec(`UPDATE outbox SET type = 'x' WHERE id = 'e1'`)
	exec(`DELETE FROM outbox WHERE id = 'e2'`)
	exec("COMMIT")

	tx := nextWithRows(t, r)
	if len(tx.Rows) != 2 || tx.End == nil || tx.FirstIndex != 0 || tx.CommitTime.IsZero() {
		t.Fatalf("tx %+v", tx)
	}
	row := tx.Rows[0]
	col := func(row source.Row, name string) any { return row.Values[row.Table.Index(name)] }
	if row.Table.FullName() != "public.outbox" || string(col(row, "id").([]byte)) != "e1" ||
		string(col(row, "payload").([]byte)) != payload || !bytes.Equal(col(row, "bin").([]byte), []byte{0, 1, 0xfe, 0xff}) {
		t.Fatalf("row 0: %q", row.Values)
	}
	if col(tx.Rows[1], "payload") != nil || col(tx.Rows[1], "bin") != nil {
		t.Fatalf("row 1: NULLs not nil: %q", tx.Rows[1].Values)
	}
	if tx.Rows[1].Table != row.Table {
		t.Error("rows of one layout have different *schema.Table")
	}
	end1 := tx.End.(Position).LSN

	// Nothing acknowledged: the slot must not move past the start, however
	// many status updates go out.
	time.Sleep(400 * time.Millisecond)
	if p, _ := ParsePosition(db.SlotFlush(t)); p.LSN != start {
		t.Fatalf("slot flush %s moved without an Ack (start %s)", p, start)
	}
	if err := r.Ack(ctx, tx.End); err != nil {
		t.Fatal(err)
	}
	if got := waitFlush(t, db, end1); got != end1 {
		t.Fatalf("slot flush %s, want exactly the acked %s", got, end1)
	}

	// A large transaction arrives in pieces of one ID.
	exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
		SELECT 'big-' || g, 'order', 'a' || (g % 7), 'Created', ('{"g":' || g || '}')::json FROM generate_series(1, 5000) g`)
	var pieces []*source.Tx
	for {
		tx := nextWithRows(t, r)
		pieces = append(pieces, tx)
		if tx.End != nil {
			break
		}
	}
	if len(pieces) != 3 || len(pieces[0].Rows) != pieceRows || len(pieces[1].Rows) != pieceRows || len(pieces[2].Rows) != 5000-2*pieceRows {
		t.Fatalf("pieces: %d", len(pieces))
	}
	for i, p := range pieces {
		if p.ID != pieces[0].ID || p.FirstIndex != i*pieceRows {
			t.Fatalf("piece %d: ID %s FirstIndex %d", i, p.ID, p.FirstIndex)
		}
	}
	if got := string(pieces[2].Rows[len(pieces[2].Rows)-1].Values[0].([]byte)); got != "big-5000" {
		t.Fatalf("last row %s", got)
	}

	// A new column: a new *schema.Table.
	exec(`ALTER TABLE outbox ADD COLUMN tenant text`)
	exec(`INSERT INTO outbox (id, aggregatetype, aggregateid, type, tenant) VALUES ('e3', 'order', '1', 'Created', 't1')`)
	tx = nextWithRows(t, r)
	if tx.Rows[0].Table == row.Table || tx.Rows[0].Table.Index("tenant") < 0 {
		t.Fatalf("layout change not seen: %v", tx.Rows[0].Table.Columns)
	}
}

// TestIntegrationPostgresBackpressure: while nobody calls Next, the reader
// keeps reporting status on time (so the server does not time it out), and
// Ack from another goroutine moves the slot even while Next is blocked.
func TestIntegrationPostgresBackpressure(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, testOutbox)
	r := openReader(t, testConfig(db), "")
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type)
		SELECT 'e' || g, 'order', 'a', 'Created' FROM generate_series(1, 3*2048) g`)
	replyTime := func() time.Time {
		var ts *time.Time
		conn := db.Conn(t)
		if err := conn.QueryRow(context.Background(), `SELECT reply_time FROM pg_stat_replication WHERE application_name = 'outboxrelay' AND pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1)`, db.Slot).Scan(&ts); err != nil {
			t.Fatalf("reply_time: %v", err)
		}
		if ts == nil {
			return time.Time{}
		}
		return *ts
	}
	tx := nextWithRows(t, r) // the first piece; the reader now blocks handing out the second
	if tx.End != nil {
		t.Fatal("want a piece")
	}
	a := replyTime()
	time.Sleep(500 * time.Millisecond)
	if b := replyTime(); !b.After(a) {
		t.Fatalf("no status update while blocked: reply_time %s then %s", a, b)
	}

	// Next and Ack on different goroutines.
	ends := make(chan source.Position, 16)
	go func() {
		defer close(ends)
		for {
			tx, err := r.Next(context.Background())
			if err != nil {
				return
			}
			if tx.End != nil {
				ends <- tx.End
				return
			}
		}
	}()
	end := <-ends
	if err := r.Ack(context.Background(), end); err != nil {
		t.Fatal(err)
	}
	waitFlush(t, db, end.(Position).LSN)
}

// TestIntegrationPostgresQuotedNames: publication, schema and table names
// that need quoting work end to end, and a message-only configuration
// (no tables) streams messages.
func TestIntegrationPostgresQuotedNames(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, `CREATE SCHEMA "Shop"`, `CREATE TABLE "Shop"."Out Box" (id text PRIMARY KEY, payload text)`)
	cfg := testConfig(db)
	cfg.Publication = `Pub's "X"`
	cfg.Tables = []string{"Shop.Out Box"}
	r := openReader(t, cfg, "")
	db.Exec(t, `INSERT INTO "Shop"."Out Box" VALUES ('q1', 'hello')`)
	tx := nextWithRows(t, r)
	if tx.Rows[0].Table.FullName() != "Shop.Out Box" || string(tx.Rows[0].Values[1].([]byte)) != "hello" {
		t.Fatalf("row %s %q", tx.Rows[0].Table.FullName(), tx.Rows[0].Values)
	}

	msgOnly := testConfig(db)
	msgOnly.Slot += "_m"
	msgOnly.Publication += "_m"
	msgOnly.Tables = nil
	msgOnly.MessagePrefixes = []string{"ev"}
	m := openReader(t, msgOnly, "")
	db.Exec(t, `INSERT INTO "Shop"."Out Box" VALUES ('q2', 'not relayed')`,
		`SELECT pg_logical_emit_message(true, 'ev', '{"id":"m1","payload":{"a":1}}')`)
	tx = nextWithRows(t, m)
	if len(tx.Rows) != 1 || tx.Rows[0].Table.FullName() != "message.ev" || string(tx.Rows[0].Values[1].([]byte)) != `{"a":1}` {
		t.Fatalf("message row: %+v", tx.Rows)
	}
}

// TestIntegrationPostgresPartitioned: inserts into a partitioned outbox
// table arrive under the root table's name (publish_via_partition_root).
func TestIntegrationPostgresPartitioned(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, `CREATE TABLE pout (id text, payload text, day date NOT NULL) PARTITION BY RANGE (day)`,
		`CREATE TABLE pout_2024 PARTITION OF pout FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`)
	cfg := testConfig(db)
	cfg.Tables = []string{"public.pout"}
	r := openReader(t, cfg, "")
	db.Exec(t, `INSERT INTO pout VALUES ('a', 'x', '2024-05-01')`)
	tx := nextWithRows(t, r)
	if tx.Rows[0].Table.FullName() != "public.pout" || string(tx.Rows[0].Values[0].([]byte)) != "a" {
		t.Fatalf("row %s %q", tx.Rows[0].Table.FullName(), tx.Rows[0].Values)
	}
}

// TestIntegrationPostgresResumeInsideTransaction: a position inside a
// committed transaction (its final_lsn plus the rows delivered) re-reads
// that transaction and hands out only the rest, with their indexes; the
// slot confirmed at that point still sends it; a point inside a
// transaction the stream does not start with is refused.
func TestIntegrationPostgresResumeInsideTransaction(t *testing.T) {
	t.Parallel()
	db := testdb.Postgres(t)
	db.Exec(t, testOutbox)
	cfg := testConfig(db)
	r := openReader(t, cfg, "")
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES ('before', 'order', 'a', 'Created')`)
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type)
		SELECT 'big-' || g, 'order', 'a', 'Created' FROM generate_series(0, 4999) g`)
	first := nextWithRows(t, r)
	if first.Start == nil {
		t.Fatal("a transaction with rows has no Start")
	}
	var big []*source.Tx
	for {
		tx := nextWithRows(t, r)
		big = append(big, tx)
		if tx.End != nil {
			break
		}
	}
	start := big[0].Start
	if start == nil || start.String() != big[0].ID {
		t.Fatalf("Start %v, want the transaction's final_lsn %s", start, big[0].ID)
	}
	// The relay confirms the point inside the big transaction.
	inside := start.After(3000)
	ctx := context.Background()
	if err := r.Ack(ctx, inside); err != nil {
		t.Fatal(err)
	}
	waitFlush(t, db, start.(Position).LSN)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := openReader(t, cfg, inside.String())
	var got []string
	firstIndex := -1
	for {
		tx := nextWithRows(t, r2)
		if tx.ID != big[0].ID {
			t.Fatalf("resumed at %s: transaction %s, want %s", inside, tx.ID, big[0].ID)
		}
		if firstIndex < 0 {
			firstIndex = tx.FirstIndex
		}
		for _, row := range tx.Rows {
			got = append(got, string(row.Values[0].([]byte)))
		}
		if tx.End != nil {
			if tx.End.String() != big[len(big)-1].End.String() {
				t.Errorf("end %s, want %s", tx.End, big[len(big)-1].End)
			}
			break
		}
	}
	if firstIndex != 3000 || len(got) != 2000 || got[0] != "big-3000" || got[1999] != "big-4999" {
		t.Fatalf("resumed: first index %d, %d rows, %s … %s; want 3000, 2000 rows, big-3000 … big-4999", firstIndex, len(got), got[0], got[len(got)-1])
	}
	_ = r2.Close()

	// A point inside a transaction that does not start the stream there.
	bogus := Position{LSN: start.(Position).LSN + 8, Rows: 1}
	r3 := openReader(t, cfg, bogus.String())
	nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES ('after', 'order', 'a', 'Created')`)
	_, err := r3.Next(nctx)
	if !errors.Is(err, source.ErrPositionLost) || !strings.Contains(err.Error(), bogus.String()) {
		t.Fatalf("resume inside a transaction that is not there: %v; want a lost position naming %s", err, bogus)
	}
}
