package mysql

// The binlog's grammar in MySQL's formats — compressed transaction
// payloads, tagged GTIDs, transaction_length, XA, savepoints — on events
// encoded in MySQL's documented formats (binlog_test.go), not on a live
// server: no MySQL server can run where these tests run. MariaDB's forms of
// the same rules run against a real server in internal/e2e.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/outboxrelay/outboxrelay/source"
)

// txOut is one transaction as the reader handed it out, pieces joined.
type txOut struct {
	id    string
	ids   []string // outbox ids, in order
	first int      // index of the first row handed out
	end   Position
}

func joinPieces(t *testing.T, txs []*source.Tx) []txOut {
	t.Helper()
	var out []txOut
	var cur *txOut
	for _, tx := range txs {
		if cur == nil {
			cur = &txOut{id: tx.ID, first: tx.FirstIndex}
		}
		if tx.ID != cur.id {
			t.Fatalf("piece of %s inside transaction %s", tx.ID, cur.id)
		}
		if want := cur.first + len(cur.ids); tx.FirstIndex != want && len(tx.Rows) > 0 {
			t.Fatalf("transaction %s: piece starts at index %d, want %d", tx.ID, tx.FirstIndex, want)
		}
		if len(tx.Rows) > pieceRows {
			t.Fatalf("transaction %s: piece of %d rows, more than %d", tx.ID, len(tx.Rows), pieceRows)
		}
		for _, r := range tx.Rows {
			cur.ids = append(cur.ids, r.Values[0].(string))
		}
		if tx.End != nil {
			cur.end = tx.End.(Position)
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("transaction %s handed out without its end", cur.id)
	}
	return out
}

func idsOf(rows [][]string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r[0]
	}
	return out
}

func at(off uint32) string { return txID(testFile, off) }

func TestEncoderRoundTrip(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	b.gtidTx(9, "orders", func() {})
	b.add(replication.XA_PREPARE_LOG_EVENT, xaPrepareBody(true, "x1", "b"))
	inner := [][]byte{frame(replication.QUERY_EVENT, queryBody("BEGIN"), 0, 1), frame(replication.XID_EVENT, xidBody(3), 0, 1)}
	b.add(replication.TRANSACTION_PAYLOAD_EVENT, payloadBody(t, inner))
	r, src := testReader(t, b, Position{File: testFile, Offset: 4, gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"})
	_ = r
	var evs []*replication.BinlogEvent
	for range len(b.events) + 1 {
		ev, err := src.next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if got := evs[2].Event.(*replication.PreviousGTIDsEvent).GTIDSets; got != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5" {
		t.Errorf("Previous_gtids decoded as %q", got)
	}
	g := evs[3].Event.(*replication.GtidTaggedLogEvent)
	if g.GNO != 9 || g.Tag.String() != "orders" || g.TransactionLength != uint64(len(b.events[2].data)) || string(g.SID) != string(testSID[:]) {
		t.Errorf("tagged GTID decoded as gno %d tag %q length %d (want %d)", g.GNO, g.Tag, g.TransactionLength, len(b.events[2].data))
	}
	xa, err := parseXAPrepare(evs[4].Event.(*replication.GenericEvent).Data)
	if err != nil || !xa.onePhase || xa.xid != "7831.62.1" {
		t.Errorf("XA_PREPARE decoded as %+v, %v", xa, err)
	}
	p := evs[5].Event.(*replication.TransactionPayloadEvent)
	if len(p.Events) != 2 || p.Events[1].Header.LogPos != evs[5].Header.LogPos {
		t.Errorf("payload decoded as %d events", len(p.Events))
	}
}

// TestReaderCompressedPayload: with binlog_transaction_compression=ON a
// transaction is one TRANSACTION_PAYLOAD_EVENT after its GTID event; its
// rows are published and it ends at the payload's end.
func TestReaderCompressedPayload(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	rows := rowsOf("z", 0, 120)
	var inner [][]byte
	inner = append(inner, frame(replication.QUERY_EVENT, queryBody("BEGIN"), 0, b.ts))
	for start := 0; start < len(rows); start += 50 {
		inner = append(inner, frame(replication.TABLE_MAP_EVENT, tableMapBody(101, "outbox", outboxCol), 0, b.ts))
		inner = append(inner, frame(replication.WRITE_ROWS_EVENTv2, writeRowsBody(101, rows[start:min(start+50, len(rows))]), 0, b.ts))
	}
	inner = append(inner, frame(replication.XID_EVENT, xidBody(1), 0, b.ts))
	t1 := b.gtidTx(6, "", func() { b.add(replication.TRANSACTION_PAYLOAD_EVENT, payloadBody(t, inner)) })
	end1 := b.off
	t2 := b.dml(7, rowsOf("p", 0, 2))
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4, gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 2 {
		t.Fatalf("got %d transactions, want 2", len(got))
	}
	if got[0].id != at(t1) || !slices.Equal(got[0].ids, idsOf(rows)) {
		t.Errorf("compressed transaction: %s with %d rows, want %s with 120", got[0].id, len(got[0].ids), at(t1))
	}
	if got[0].end.Offset != end1 || got[0].end.GTID() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6" {
		t.Errorf("compressed transaction ends at %s, want offset %d with GTID 1-6", got[0].end, end1)
	}
	if got[1].id != at(t2) || len(got[1].ids) != 2 || got[1].end.GTID() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7" {
		t.Errorf("next transaction: %+v", got[1])
	}
}

// TestReaderTaggedGTID: MySQL ≥ 8.3 tagged GTIDs (uuid:tag:N) are part of
// the position, so a resume by GTID does not send them again.
func TestReaderTaggedGTID(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	b.gtidTx(1, "orders", func() {
		b.add(replication.QUERY_EVENT, queryBody("BEGIN"))
		b.insert(rowsOf("t", 0, 3))
		b.add(replication.XID_EVENT, xidBody(1))
	})
	b.gtidTx(2, "orders", func() {
		b.add(replication.QUERY_EVENT, queryBody("ALTER TABLE orders ADD COLUMN x INT"))
	})
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4, gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 2 || len(got[0].ids) != 3 {
		t.Fatalf("got %+v", got)
	}
	if want := "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:orders:1"; got[0].end.GTID() != want {
		t.Errorf("GTID set after a tagged transaction: %q, want %q", got[0].end.GTID(), want)
	}
	if want := "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:orders:1-2"; got[1].end.GTID() != want {
		t.Errorf("GTID set after a tagged DDL: %q, want %q", got[1].end.GTID(), want)
	}
}

// TestReaderTransactionLength: MySQL writes CREATE TABLE … SELECT as one
// group (a DDL statement, rows, XID) with no BEGIN; transaction_length
// says where it ends, so the statement does not end it early.
func TestReaderTransactionLength(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	t1 := b.gtidTx(1, "", func() {
		b.add(replication.QUERY_EVENT, queryBody("CREATE TABLE outbox SELECT * FROM outbox_old"))
		b.insert(rowsOf("c", 0, 4))
		b.add(replication.XID_EVENT, xidBody(1))
	})
	end1 := b.off
	b.gtidTx(2, "", func() { b.add(replication.QUERY_EVENT, queryBody("DROP TABLE outbox_old")) })
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 2 || got[0].id != at(t1) || len(got[0].ids) != 4 || got[0].end.Offset != end1 {
		t.Fatalf("got %+v; want the CREATE … SELECT group whole (4 rows, ending at %d), then the DROP", got, end1)
	}
	if got[1].end.GTID() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2" {
		t.Errorf("GTID set %q", got[1].end.GTID())
	}
}

// TestReaderSavepoints: SAVEPOINT and ROLLBACK TO end nothing; rows rolled
// back to a savepoint (the server writes them, with ROLLBACK TO, when the
// transaction also changed a non-transactional table) are never published.
func TestReaderSavepoints(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	var want []string
	b.gtidTx(1, "", func() {
		q := func(s string) { b.add(replication.QUERY_EVENT, queryBody(s)) }
		ins := func(prefix string, keep bool) {
			rows := rowsOf(prefix, 0, 2)
			b.insert(rows)
			if keep {
				want = append(want, idsOf(rows)...)
			}
		}
		q("BEGIN")
		ins("a", true)
		q("SAVEPOINT `s1`")
		ins("b", false)
		q("ROLLBACK TO `s1`")
		ins("c", true)
		q("SAVEPOINT `s2`")
		ins("d", true)
		q("SAVEPOINT `s3`")
		ins("e", false)
		q("SAVEPOINT `s4`")
		ins("f", false)
		q("ROLLBACK TO `s3`") // s4 goes with it
		ins("g", true)
		q("RELEASE SAVEPOINT `s2`")
		ins("h", true)
		b.add(replication.XID_EVENT, xidBody(1))
	})
	b.dml(2, rowsOf("n", 0, 1))
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 2 {
		t.Fatalf("savepoints ended the transaction early: %d transactions, want 2", len(got))
	}
	if !slices.Equal(got[0].ids, want) {
		t.Errorf("rows %v, want %v", got[0].ids, want)
	}
}

// TestReaderSavepointLargeTransaction: rows after a savepoint that outgrow
// the buffer are not held: the transaction is read to its end, then again
// from its start, and only the rows that survive go out, in pieces.
func TestReaderSavepointLargeTransaction(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	var want []string
	t1 := b.gtidTx(1, "", func() {
		q := func(s string) { b.add(replication.QUERY_EVENT, queryBody(s)) }
		head := rowsOf("head", 0, 3000)
		b.insert(head)
		want = append(want, idsOf(head)...)
		q("SAVEPOINT `big`")
		b.insert(rowsOf("gone", 0, 5000))
		q("ROLLBACK TO `big`")
		mid := rowsOf("mid", 0, 10)
		b.insert(mid)
		want = append(want, idsOf(mid)...)
		q("SAVEPOINT `later`")
		tail := rowsOf("tail", 0, 4000)
		b.insert(tail)
		want = append(want, idsOf(tail)...)
		b.add(replication.XID_EVENT, xidBody(1))
	})
	t2 := b.dml(2, rowsOf("n", 0, 1))
	r, src := testReader(t, b, Position{File: testFile, Offset: 4})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 2 || got[0].id != at(t1) || got[1].id != at(t2) {
		t.Fatalf("got %d transactions %+v", len(got), got)
	}
	if !slices.Equal(got[0].ids, want) {
		t.Errorf("got %d rows, want %d (first difference at %d)", len(got[0].ids), len(want), firstDiff(got[0].ids, want))
	}
	if !slices.Contains(src.seeks, t1) {
		t.Errorf("the transaction was not read again from its start (seeks %v)", src.seeks)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// xaGroup writes MySQL's form of an XA transaction's first phase: GTID,
// XA START, rows, XA END, XA_PREPARE.
func (b *binlog) xaGroup(gno int64, xid string, rows [][]string, onePhase bool) uint32 {
	return b.gtidTx(gno, "", func() {
		b.add(replication.QUERY_EVENT, queryBody(fmt.Sprintf("XA START X'%x',X'',1", xid)))
		b.insert(rows)
		b.add(replication.QUERY_EVENT, queryBody(fmt.Sprintf("XA END X'%x',X'',1", xid)))
		b.add(replication.XA_PREPARE_LOG_EVENT, xaPrepareBody(onePhase, xid, ""))
	})
}

func (b *binlog) xaEnd(gno int64, verb, xid string) uint32 {
	return b.gtidTx(gno, "", func() {
		b.add(replication.QUERY_EVENT, queryBody(fmt.Sprintf("XA %s X'%x',X'',1", verb, xid)))
	})
}

// TestReaderXA: an XA transaction publishes at its XA COMMIT (which may
// come after other transactions), as the commit's transaction; XA ROLLBACK
// publishes nothing; XA COMMIT … ONE PHASE publishes at once.
func TestReaderXA(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	p1 := b.xaGroup(1, "x1", rowsOf("x1", 0, 3), false)
	b.dml(2, rowsOf("plain", 0, 1))
	b.xaGroup(3, "x2", rowsOf("x2", 0, 2), false)
	c1 := b.xaEnd(4, "COMMIT", "x1")
	b.xaEnd(5, "ROLLBACK", "x2")
	o3 := b.xaGroup(6, "x3", rowsOf("x3", 0, 2), true)
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	got := joinPieces(t, readAll(t, r))
	var published []string
	for _, tx := range got {
		published = append(published, tx.ids...)
		switch tx.id {
		case at(c1):
			if !slices.Equal(tx.ids, []string{"x1-0", "x1-1", "x1-2"}) {
				t.Errorf("XA COMMIT published %v", tx.ids)
			}
		case at(o3):
			if len(tx.ids) != 2 {
				t.Errorf("ONE PHASE commit published %v", tx.ids)
			}
		case at(p1):
			if len(tx.ids) > 0 || len(tx.end.XA) != 1 || tx.end.XA[0].XID != "7831..1" || tx.end.XA[0].Offset != p1 {
				t.Errorf("XA PREPARE: rows %v, end %s; want no rows and x1 prepared at %d", tx.ids, tx.end, p1)
			}
		}
	}
	want := []string{"plain-0", "x1-0", "x1-1", "x1-2", "x3-0", "x3-1"}
	if !slices.Equal(published, want) {
		t.Errorf("published %v, want %v", published, want)
	}
	if last := got[len(got)-1].end; len(last.XA) != 0 || last.GTID() != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6" {
		t.Errorf("final position %s: want no prepared XA left and GTIDs 1-6", last)
	}
}

// TestReaderXAAfterRestart: a relay that resumes after an XA PREPARE (its
// position lists the prepared transaction) reads the prepared events again
// at the XA COMMIT, publishes them, and goes on after the commit.
func TestReaderXAAfterRestart(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	p1 := b.xaGroup(1, "x1", rowsOf("x1", 0, 3000), false) // large: never kept in memory anyway
	b.dml(2, rowsOf("plain", 0, 1))
	c1 := b.xaEnd(3, "COMMIT", "x1")
	b.dml(4, rowsOf("after", 0, 1))
	// Run once to learn the position after the plain transaction.
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	first := joinPieces(t, readAll(t, r))
	resume := first[1].end // after "plain": x1 prepared, not committed
	if len(resume.XA) != 1 || resume.XA[0].Offset != p1 {
		t.Fatalf("position after the prepare: %s", resume)
	}
	restarted, err := ParsePosition(resume.String())
	if err != nil {
		t.Fatal(err)
	}
	r2, src := testReader(t, b, restarted)
	got := joinPieces(t, readAll(t, r2))
	if len(got) != 2 || got[0].id != at(c1) || len(got[0].ids) != 3000 || got[1].ids[0] != "after-0" {
		t.Fatalf("after restart: %d transactions; want the XA COMMIT with 3000 rows, then 'after'", len(got))
	}
	if !slices.Contains(src.seeks, p1) {
		t.Errorf("did not read the prepared events again (seeks %v)", src.seeks)
	}
	if len(got[0].end.XA) != 0 {
		t.Errorf("XA COMMIT's end still lists prepared %v", got[0].end.XA)
	}
}

// TestReaderResumeInsideTransaction: a position at a transaction's first
// event with N rows delivered resumes with row N.
func TestReaderResumeInsideTransaction(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	b.dml(1, rowsOf("a", 0, 1))
	t2 := b.dml(2, rowsOf("big", 0, 5000))
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	all := joinPieces(t, readAll(t, r))
	start := all[0].end.WithRows(3000) // == the big transaction's start
	if start.Offset != t2 {
		t.Fatalf("end of the first transaction %d is not the start of the second %d", start.Offset, t2)
	}
	r2, _ := testReader(t, b, start)
	got := joinPieces(t, readAll(t, r2))
	if len(got) != 1 || got[0].first != 3000 || len(got[0].ids) != 2000 || got[0].ids[0] != "big-3000" {
		t.Fatalf("resumed with %+v", got)
	}
}

// TestReaderStatementDML: a statement-based INSERT into an outbox table
// cannot be decoded: the reader stops there with the fix, never skips it.
func TestReaderStatementDML(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "")
	b.gtidTx(1, "", func() {
		b.add(replication.QUERY_EVENT, queryBody("BEGIN"))
		b.add(replication.QUERY_EVENT, queryBody("INSERT INTO outbox VALUES ('s', 'order', '1', 'T', '{}')"))
		b.add(replication.XID_EVENT, xidBody(1))
	})
	r, _ := testReader(t, b, Position{File: testFile, Offset: 4})
	_, err := r.Next(t.Context())
	if err == nil || !strings.Contains(err.Error(), "binlog_format=ROW") {
		t.Fatalf("Next: %v; want the statement-based change refused with the fix", err)
	}
}

// TestReaderDerivesGTIDSet: a position without a GTID set on a GTID server
// gets the set from the file's Previous_gtids and the GTIDs before it.
func TestReaderDerivesGTIDSet(t *testing.T) {
	t.Parallel()
	b := newBinlog(t, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	b.dml(6, rowsOf("a", 0, 1))
	b.dml(7, rowsOf("b", 0, 1))
	t3 := b.dml(8, rowsOf("c", 0, 1))
	r, _ := testReader(t, b, Position{File: testFile, Offset: t3})
	got := joinPieces(t, readAll(t, r))
	if len(got) != 1 || got[0].ids[0] != "c-0" {
		t.Fatalf("got %+v, want only the transaction at the start", got)
	}
	if want := "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-8"; got[0].end.GTID() != want {
		t.Errorf("GTID set %q, want %q", got[0].end.GTID(), want)
	}
	r2, _ := testReader(t, b, Position{File: testFile, Offset: t3 + 1})
	if _, err := r2.Next(t.Context()); err == nil || !strings.Contains(err.Error(), "not at the start of a binlog event") {
		t.Errorf("a position inside an event: %v", err)
	}
}
