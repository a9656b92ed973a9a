package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/sourcetest"
)

// fakeScanner emits pieces of the given sizes, then fails with err (if
// set); blocked says emit is waiting.
type fakeScanner struct {
	pieces []int
	err    error
	closed atomic.Int32
}

var table = &schema.Table{Schema: "shop", Name: "outbox", Columns: []string{"id"}}

func (f *fakeScanner) Scan(ctx context.Context, emit func([]source.Row) error) error {
	n := 0
	for _, size := range f.pieces {
		rows := make([]source.Row, size)
		for i := range rows {
			rows[i] = source.Row{Table: table, Values: []any{fmt.Sprint(n)}}
			n++
		}
		if err := emit(rows); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeScanner) Close() error {
	f.closed.Add(1)
	return nil
}

func newReader(sc Scanner, stream *sourcetest.Reader, opens *atomic.Int32) *Reader {
	return New(Options{
		Scanner: sc, ID: "0/100", Pending: Pending, End: sourcetest.Pos("0/100"),
		Open: func(context.Context) (source.Reader, error) {
			opens.Add(1)
			return stream, nil
		},
		Log: zerolog.Nop(),
	})
}

// TestSnapshotPieces: the rows come in order as pieces of one
// transaction whose every inner position is the pending marker; only the
// last piece ends, at the stream's start; then the stream follows, opened
// only once the snapshot is handed out.
func TestSnapshotPieces(t *testing.T) {
	t.Parallel()
	sc := &fakeScanner{pieces: []int{3, 2048, 1}}
	stream := &sourcetest.Reader{Txs: []*source.Tx{{ID: "0/200", End: sourcetest.Pos("0/200")}}}
	var opens atomic.Int32
	r := newReader(sc, stream, &opens)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next := 0
	for i, size := range sc.pieces {
		tx, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !tx.Snapshot || tx.ID != "0/100" || len(tx.Rows) != size || tx.FirstIndex != next {
			t.Fatalf("piece %d: snapshot %v id %s, %d rows from %d; want %d rows from %d", i, tx.Snapshot, tx.ID, len(tx.Rows), tx.FirstIndex, size, next)
		}
		if got := tx.Rows[0].Values[0]; got != fmt.Sprint(next) {
			t.Fatalf("piece %d starts with row %v, want %d", i, got, next)
		}
		if tx.Start == nil || tx.Start.String() != Pending || tx.Start.After(next+size).String() != Pending {
			t.Fatalf("piece %d: positions inside the snapshot must all be %q (restart from scratch), got start %v", i, Pending, tx.Start)
		}
		if last := i == len(sc.pieces)-1; (tx.End != nil) != last {
			t.Fatalf("piece %d: End %v; want it on the last piece only", i, tx.End)
		} else if last && tx.End.String() != "0/100" {
			t.Fatalf("last piece ends at %s, want the stream's start 0/100", tx.End)
		}
		if opens.Load() != 0 {
			t.Fatal("the stream opened before the snapshot was handed out")
		}
		next += size
	}
	if err := r.Ack(ctx, Marker(Pending).After(5)); err != nil {
		t.Fatal(err)
	}
	tx, err := r.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Snapshot || tx.ID != "0/200" || opens.Load() != 1 {
		t.Fatalf("after the snapshot: %+v, opens %d; want the stream's transaction", tx, opens.Load())
	}
	if err := r.Ack(ctx, sourcetest.Pos("0/200")); err != nil {
		t.Fatal(err)
	}
	if got := stream.Acks(); len(got) != 1 || got[0] != "0/200" {
		t.Fatalf("stream acked %v; want only its own position (none of the snapshot's)", got)
	}
	if sc.closed.Load() != 1 {
		t.Fatalf("scanner closed %d times, want once", sc.closed.Load())
	}
}

// TestSnapshotEmpty: empty tables still end the snapshot, so the
// checkpoint moves to the stream's start.
func TestSnapshotEmpty(t *testing.T) {
	t.Parallel()
	var opens atomic.Int32
	r := newReader(&fakeScanner{}, &sourcetest.Reader{}, &opens)
	defer r.Close()
	tx, err := r.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tx.Rows) != 0 || tx.Start != nil || tx.End == nil || tx.End.String() != "0/100" {
		t.Fatalf("empty snapshot: %+v; want one rows-less transaction ending at 0/100", tx)
	}
}

// TestSnapshotFailure: a scan that fails ends Next with its error, and the
// stream never opens.
func TestSnapshotFailure(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection lost")
	var opens atomic.Int32
	sc := &fakeScanner{pieces: []int{5}, err: boom}
	r := newReader(sc, &sourcetest.Reader{}, &opens)
	ctx := context.Background()
	if _, err := r.Next(ctx); err != nil { // the held piece is handed out only with the next or the end
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
	} else if _, err := r.Next(ctx); !errors.Is(err, boom) {
		t.Fatalf("Next after a failed scan: %v, want %v", err, boom)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if opens.Load() != 0 || sc.closed.Load() != 1 {
		t.Fatalf("opens %d, scanner closed %d; want 0 and 1", opens.Load(), sc.closed.Load())
	}
}

// TestSnapshotCloseMidway: Close while the scan waits for Next stops it.
func TestSnapshotCloseMidway(t *testing.T) {
	t.Parallel()
	var opens atomic.Int32
	sc := &fakeScanner{pieces: []int{1, 1, 1, 1}}
	r := newReader(sc, &sourcetest.Reader{}, &opens)
	if _, err := r.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the scan")
	}
	if sc.closed.Load() != 1 {
		t.Fatalf("scanner closed %d times", sc.closed.Load())
	}
}

func TestIsPending(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{"snapshot": true, "snapshot@0/1": true, "0/16B3748": false, "snapshots": false, "": false, "mysql-bin.000001:4": false} {
		if IsPending(s) != want {
			t.Errorf("IsPending(%q) = %v", s, !want)
		}
	}
}
