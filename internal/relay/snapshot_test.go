package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/sink/sinktest"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
	"github.com/outboxrelay/outboxrelay/source/sourcetest"
)

// snapSource starts with a snapshot of rows rows (pieces of 4), then a
// stream that ends the run; it counts the snapshots taken.
type snapSource struct {
	rows      int
	snapshots atomic.Int32
}

type rowScanner struct{ rows int }

func (s rowScanner) Scan(ctx context.Context, emit func([]source.Row) error) error {
	var piece []source.Row
	for i := 0; i < s.rows; i++ {
		piece = append(piece, source.Row{Table: outboxTable, Values: []any{fmt.Sprintf("snap.%d", i), "order", "k", "Created", "{}"}})
		if len(piece) == 4 || i == s.rows-1 {
			if err := emit(piece); err != nil {
				return err
			}
			piece = nil
		}
	}
	return nil
}

func (rowScanner) Close() error { return nil }

func (s *snapSource) Kind() string                            { return "fake" }
func (s *snapSource) Resolve(context.Context) (string, error) { return snapshot.Pending, nil }

func (s *snapSource) Open(_ context.Context, from string) (source.Reader, error) {
	stream := func(context.Context) (source.Reader, error) {
		return &sourcetest.Reader{Err: source.ErrEndOfRange}, nil
	}
	if !snapshot.IsPending(from) {
		return stream(nil)
	}
	s.snapshots.Add(1)
	return snapshot.New(snapshot.Options{Scanner: rowScanner{s.rows}, ID: "e0-", Pending: from, End: sourcetest.Pos("e0"),
		Open: stream, Log: zerolog.Nop()}), nil
}

// TestExactlyOnceSnapshotPositions: under exactly-once, the Kafka
// transactions committed while the snapshot is sent carry the position
// "snapshot" (never a count of its rows), so a commit that fails in the
// middle makes the next session take the snapshot again: every row is
// visible at least once, the rows committed before the failure twice,
// and the last committed position is the stream's start.
func TestExactlyOnceSnapshotPositions(t *testing.T) {
	t.Parallel()
	src := &snapSource{rows: 1000}
	b := &sinktest.Broker{FailCommit: func(n int) error {
		if n == 4 {
			return fmt.Errorf("commit %d refused", n)
		}
		return nil
	}}
	r := eosRelay(t, src, b, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	seen := map[string]int{}
	var positions []string
	for _, rec := range b.Committed() {
		if rec.Topic == "positions" {
			var cp checkpoint.Checkpoint
			_ = json.Unmarshal(rec.Value, &cp)
			positions = append(positions, cp.Position)
			continue
		}
		id, _ := recordHeader(rec, outbox.HeaderID)
		seen[id]++
		if v, _ := recordHeader(rec, outbox.HeaderSnapshot); v != "true" {
			t.Errorf("record %s has no %s header", id, outbox.HeaderSnapshot)
		}
	}
	for i, p := range positions {
		if p != snapshot.Pending && !(p == "e0" && i == len(positions)-1) {
			t.Fatalf("committed positions %v: want only %q until the last, the stream's start e0", positions, snapshot.Pending)
		}
	}
	if len(positions) == 0 || positions[len(positions)-1] != "e0" {
		t.Fatalf("committed positions %v: want e0 last", positions)
	}
	twice := 0
	for i := 0; i < src.rows; i++ {
		switch n := seen[fmt.Sprintf("snap.%d", i)]; {
		case n == 0:
			t.Errorf("row snap.%d lost", i)
		case n > 1:
			twice++
		}
	}
	if src.snapshots.Load() < 2 || twice == 0 {
		t.Fatalf("%d snapshots, %d rows visible twice: want the failed commit to make the next session take the snapshot again", src.snapshots.Load(), twice)
	}
	t.Logf("%d snapshots, %d rows visible twice, %d positions committed", src.snapshots.Load(), twice, len(positions))
}
