package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// fakeDB is an outbox table and a log: each committed row gets the next
// log position; the durable checkpoint is set by the test.
type fakeDB struct {
	mu      sync.Mutex
	rows    map[int]bool // key → old enough to delete
	logEnd  int          // position after the last commit
	durable int          // -1: no checkpoint
	deleted []int
	rounds  int   // Position calls
	check   error // CheckTable's answer, once
}

func (f *fakeDB) insert(key int, old bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows[key] = old
	f.logEnd++
}

func (f *fakeDB) setDurable(p int) { f.mu.Lock(); f.durable = p; f.mu.Unlock() }

func (f *fakeDB) has(key int) bool { f.mu.Lock(); defer f.mu.Unlock(); _, ok := f.rows[key]; return ok }

func (f *fakeDB) OpenTables(context.Context) (source.TableConn, error) { return f, nil }
func (f *fakeDB) Tables(context.Context) ([]string, error)             { return []string{"s.outbox"}, nil }
func (f *fakeDB) CheckTable(context.Context, source.TableSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.check
	f.check = nil
	return err
}
func (f *fakeDB) Close() error { return nil }
func (f *fakeDB) Position(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rounds++
	return strconv.Itoa(f.logEnd), nil
}

func (f *fakeDB) OldKeys(_ context.Context, _ source.TableSpec, _ time.Duration, limit int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := 0; k < 1000 && len(keys) < limit; k++ {
		if old, ok := f.rows[k]; ok && old {
			keys = append(keys, strconv.Itoa(k))
		}
	}
	return keys, nil
}

func (f *fakeDB) Delete(_ context.Context, _ source.TableSpec, keys []string, _ time.Duration) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, s := range keys {
		k, _ := strconv.Atoi(s)
		if old, ok := f.rows[k]; ok && old {
			delete(f.rows, k)
			f.deleted = append(f.deleted, k)
			n++
		}
	}
	return n, nil
}

func (f *fakeDB) OldestAge(context.Context, source.TableSpec) (time.Duration, bool, error) {
	return 0, false, nil
}

func (f *fakeDB) Rows(context.Context, source.TableSpec, source.Selection, *string, int) ([]source.Row, string, error) {
	return nil, "", nil
}

func (f *fakeDB) Count(context.Context, source.TableSpec, source.Selection) (source.RangeInfo, error) {
	return source.RangeInfo{}, nil
}

func (f *fakeDB) durablePos(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.durable < 0 {
		return "", checkpoint.ErrNotFound
	}
	return strconv.Itoa(f.durable), nil
}

func compareInts(a, b string) (int, error) {
	x, _ := strconv.Atoi(a)
	y, _ := strconv.Atoi(b)
	switch {
	case x < y:
		return -1, nil
	case x > y:
		return 1, nil
	}
	return 0, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCleanupDeletesOnlyCoveredRows: nothing is deleted while the
// checkpoint is missing or behind the position read after the keys; once
// it passes, exactly the rows seen then go; a row committed later with a
// smaller key (not in the round's set) stays until a later round's
// position is covered too; young rows stay.
func TestCleanupDeletesOnlyCoveredRows(t *testing.T) {
	t.Parallel()
	f := &fakeDB{rows: map[int]bool{}, durable: -1}
	for k := 10; k < 15; k++ {
		f.insert(k, true)
	}
	f.insert(20, false) // young
	var cfg outbox.Cleanup
	cfg.SetDefaults()
	cfg.BatchSize, cfg.Interval = 2, 100*time.Millisecond
	c := New(Options{Config: cfg, IDColumn: func(string) string { return "id" }, Tables: f, Compare: compareInts, Durable: f.durablePos, Poll: 2 * time.Millisecond}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the first round's position", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.rounds >= 1 })
	time.Sleep(50 * time.Millisecond)
	if !f.has(10) {
		t.Fatal("a row was deleted without any checkpoint")
	}
	f.mu.Lock()
	p0 := f.logEnd
	f.mu.Unlock()
	f.setDurable(p0 - 1) // behind P0: the last row is not covered
	f.insert(1, true)    // committed after T0, smaller key
	time.Sleep(50 * time.Millisecond)
	for k := 10; k < 15; k++ {
		if !f.has(k) {
			t.Fatalf("row %d deleted while the checkpoint (%d) is behind the round's position (%d)", k, p0-1, p0)
		}
	}
	f.setDurable(p0)
	waitFor(t, "the covered rows to go", func() bool { return !f.has(10) && !f.has(14) })
	time.Sleep(50 * time.Millisecond)
	if !f.has(1) {
		t.Fatal("row 1, committed after the round's position, was deleted with a checkpoint that does not cover it")
	}
	if !f.has(20) {
		t.Fatal("a row younger than the retention was deleted")
	}
	f.setDurable(p0 + 1)
	waitFor(t, "row 1 to go once covered", func() bool { return !f.has(1) })
	if !f.has(20) {
		t.Fatal("a row younger than the retention was deleted")
	}
}

// TestCleanupOutlivesPermanentErrors: a failure an operator must fix (a
// missing column or grant) does not end the cleanup: once fixed, it
// deletes.
func TestCleanupOutlivesPermanentErrors(t *testing.T) {
	t.Parallel()
	f := &fakeDB{rows: map[int]bool{}, durable: 100, check: source.Permanent(errors.New("table s.outbox has no column created_at"))}
	f.insert(1, true)
	var cfg outbox.Cleanup
	cfg.SetDefaults()
	cfg.Interval = 100 * time.Millisecond
	c := New(Options{Config: cfg, IDColumn: func(string) string { return "id" }, Tables: f, Compare: compareInts, Durable: f.durablePos,
		Poll: 2 * time.Millisecond, Retry: retry.Policy{Initial: 10 * time.Millisecond}}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "the row to go after the failure", func() bool { return !f.has(1) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestCleanupWaitsOutThePendingSnapshot: while the checkpoint says the
// initial snapshot is still being sent, nothing is covered — no row goes
// and no comparison error is logged — and once the stream's position
// passes the round's, the rows go.
func TestCleanupWaitsOutThePendingSnapshot(t *testing.T) {
	t.Parallel()
	f := &fakeDB{rows: map[int]bool{}, durable: -1}
	f.insert(10, true)
	var mu sync.Mutex
	pending := true
	durable := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if pending {
			return snapshot.Pending, nil
		}
		return strconv.Itoa(f.logEnd + 1), nil
	}
	compare := func(a, b string) (int, error) {
		if _, err := strconv.Atoi(a); err != nil {
			return 0, fmt.Errorf("not a position: %q", a)
		}
		return compareInts(a, b)
	}
	var logs syncBuffer
	var cfg outbox.Cleanup
	cfg.SetDefaults()
	cfg.BatchSize, cfg.Interval = 2, 100*time.Millisecond
	c := New(Options{Config: cfg, IDColumn: func(string) string { return "id" }, Tables: f, Compare: compare, Durable: durable, Poll: 2 * time.Millisecond}, zerolog.New(&logs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the first round's position", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.rounds >= 1 })
	time.Sleep(50 * time.Millisecond)
	if !f.has(10) {
		t.Fatal("a row was deleted while the initial snapshot was pending")
	}
	if s := logs.String(); strings.Contains(s, "cannot be compared") {
		t.Fatalf("a pending snapshot was logged as an incomparable position: %s", s)
	}
	mu.Lock()
	pending = false
	mu.Unlock()
	waitFor(t, "the row to go once the stream passed the round's position", func() bool { return !f.has(10) })
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
