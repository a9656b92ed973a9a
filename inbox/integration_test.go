package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/inbox"
)

func TestIntegrationDuplicateSkipped(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f, in := newFixture(t, b, inbox.Config{})
			ctx := context.Background()
			msg := event("orders", "e-1", "42", "binlog.000001:100", 0)
			for i, want := range []inbox.Result{inbox.Applied, inbox.Duplicate, inbox.Duplicate} {
				got, err := in.Process(ctx, f.db, msg)
				if err != nil || got != want {
					t.Fatalf("delivery %d: Process = %v, %v; want %v", i+1, got, err, want)
				}
			}
			// Same id on another topic, partition, offset: still the same event.
			moved := event("orders-copy", "e-1", "42", "binlog.000001:100", 0)
			moved.Partition, moved.Offset = 2, 99
			if got, err := in.Process(ctx, f.db, moved); err != nil || got != inbox.Duplicate {
				t.Fatalf("moved copy: Process = %v, %v; want duplicate", got, err)
			}
			if got, err := in.Process(ctx, f.db, event("orders", "e-2", "42", "binlog.000001:200", 0)); err != nil || got != inbox.Applied {
				t.Fatalf("next event: Process = %v, %v; want applied", got, err)
			}
			if n := f.count(t, "SELECT count(*) FROM effects"); n != 2 {
				t.Fatalf("effects = %d, want 2 (one per event)", n)
			}
			if n := f.count(t, "SELECT count(*) FROM inbox"); n != 2 {
				t.Fatalf("inbox rows = %d, want 2", n)
			}
		})
	}
}

func TestIntegrationStaleRejected(t *testing.T) {
	t.Parallel()
	// One aggregate per log kind; each step is one delivery, in order.
	steps := []struct {
		id, topic, key, pos string
		idx                 int
		want                inbox.Result
	}{
		{"m1", "a", "7", "binlog.000002:500", 1, inbox.Applied},
		{"m2", "a", "7", "binlog.000002:400", 0, inbox.Stale},   // older transaction
		{"m3", "a", "7", "binlog.000002:500", 0, inbox.Stale},   // same transaction, earlier row
		{"m4", "a", "7", "binlog.000002:500", 1, inbox.Stale},   // same version, other id (pruned replay)
		{"m5", "a", "7", "binlog.000002:500", 2, inbox.Applied}, // same transaction, later row
		{"m6", "a", "7", "binlog.000001:900", 0, inbox.Stale},   // older file, larger offset
		{"m7", "a", "7", "binlog.000003:4@0-1-9", 0, inbox.Applied},
		{"m8", "a", "8", "binlog.000001:4", 0, inbox.Applied}, // another aggregate has its own order
		{"m9", "b", "7", "0/16B3748", 0, inbox.Applied},       // another topic is another log
		{"m10", "b", "7", "0/16B3740", 5, inbox.Stale},
		{"m11", "b", "7", "1/0", 0, inbox.Applied},
		{"m2", "a", "7", "binlog.000002:400", 0, inbox.Duplicate}, // the stale one again
		{"m12", "a", "", "binlog.000001:4", 0, inbox.Applied},     // no key: no aggregate, no check
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f, in := newFixture(t, b, inbox.Config{CheckVersion: true})
			ctx := context.Background()
			applied := 0
			for _, s := range steps {
				got, err := in.Process(ctx, f.db, event(s.topic, s.id, s.key, s.pos, s.idx))
				if err != nil || got != s.want {
					t.Fatalf("%s at %s#%d: Process = %v, %v; want %v", s.id, s.pos, s.idx, got, err, s.want)
				}
				if got == inbox.Applied {
					applied++
				}
			}
			if n := f.count(t, "SELECT count(*) FROM effects"); n != applied {
				t.Fatalf("effects = %d, want %d", n, applied)
			}
			// A position of another log in the same scope cannot be
			// ordered: an error, and nothing recorded.
			_, err := in.Process(ctx, f.db, event("a", "x1", "7", "0/1", 0))
			if !errors.Is(err, inbox.ErrIncomparable) {
				t.Fatalf("mixed logs: %v, want ErrIncomparable", err)
			}
			// Without version headers the check cannot run: a bad record.
			_, err = in.Process(ctx, f.db, record("a", "7", "id", "x2"))
			if !errors.Is(err, inbox.ErrBadRecord) {
				t.Fatalf("no headers: %v, want ErrBadRecord", err)
			}
			if n := f.count(t, "SELECT count(*) FROM inbox WHERE event_id IN (?, ?)", "x1", "x2"); n != 0 {
				t.Fatalf("failed events left %d inbox rows", n)
			}
		})
	}
}

func TestIntegrationFuncErrorRollsBack(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fail := true
			f, in := newFixtureFunc(t, b, inbox.Config{CheckVersion: true}, func(f *fixture) inbox.Func {
				return func(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
					// The effect is written, then the function fails: both
					// the effect and the inbox row must roll back.
					if err := f.apply(ctx, tx, ev); err != nil {
						return err
					}
					if fail {
						return boom
					}
					return nil
				}
			})
			ctx := context.Background()
			msg := event("t", "e-1", "k", "0/10", 0)
			if _, err := in.Process(ctx, f.db, msg); !errors.Is(err, boom) {
				t.Fatalf("Process = %v, want the function's error", err)
			}
			for table, want := range map[string]int{"inbox": 0, "effects": 0, "inbox_version": 0} {
				// The version row may exist only as a placeholder.
				q := "SELECT count(*) FROM " + table
				if table == "inbox_version" {
					q += " WHERE source_index >= 0"
				}
				if n := f.count(t, q); n != want {
					t.Fatalf("%s has %d rows after the failure, want %d", table, n, want)
				}
			}
			fail = false
			if got, err := in.Process(ctx, f.db, msg); err != nil || got != inbox.Applied {
				t.Fatalf("retry: Process = %v, %v; want applied", got, err)
			}
			if n := f.count(t, "SELECT count(*) FROM effects"); n != 1 {
				t.Fatalf("effects = %d, want 1", n)
			}
		})
	}
}

// Two or more consumers handle one event at the same moment (a rebalance,
// a redelivery racing the original): it is applied once.
func TestIntegrationConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	const consumers = 6
	for _, b := range backends {
		for _, check := range []bool{false, true} {
			name := b.name
			if check {
				name += "/version"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var calls atomic.Int32
				f, in := newFixtureFunc(t, b, inbox.Config{CheckVersion: check}, func(f *fixture) inbox.Func {
					return func(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
						n := calls.Add(1)
						if err := f.apply(ctx, tx, ev); err != nil {
							return err
						}
						// Hold the claim while the others arrive; the first
						// claimer then fails, so a waiting one must take over.
						time.Sleep(300 * time.Millisecond)
						if n == 1 {
							return errors.New("first claimer fails")
						}
						return nil
					}
				})
				ctx := context.Background()
				msg := event("t", "e-1", "k", "binlog.000001:4", 0)
				results := make([]inbox.Result, consumers)
				errs := make([]error, consumers)
				var wg sync.WaitGroup
				for i := range consumers {
					wg.Go(func() { results[i], errs[i] = in.Process(ctx, f.db, msg) })
				}
				wg.Wait()
				var applied, dup, failed int
				for i := range consumers {
					switch {
					case errs[i] != nil:
						failed++
					case results[i] == inbox.Applied:
						applied++
					case results[i] == inbox.Duplicate:
						dup++
					default:
						t.Errorf("consumer %d: %v", i, results[i])
					}
				}
				if applied != 1 || failed != 1 || dup != consumers-2 {
					t.Fatalf("applied %d, failed %d, duplicate %d; want 1, 1, %d (errors %v)", applied, failed, dup, consumers-2, errs)
				}
				if calls.Load() != 2 {
					t.Fatalf("the function ran %d times, want 2 (the failed claimer and its successor)", calls.Load())
				}
				if n := f.count(t, "SELECT count(*) FROM effects"); n != 1 {
					t.Fatalf("effects = %d, want 1", n)
				}
			})
		}
	}
}

func TestIntegrationPrune(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f, in := newFixture(t, b, inbox.Config{CheckVersion: true})
			ctx := context.Background()
			for _, id := range []string{"old-1", "old-2", "old-3", "new-1"} {
				if _, err := in.Process(ctx, f.db, event("t", id, id, "0/1", 0)); err != nil {
					t.Fatal(err)
				}
			}
			back := "UPDATE inbox SET received_at = received_at - INTERVAL 2 HOUR WHERE event_id LIKE 'old-%'"
			if b.dialect == inbox.Postgres {
				back = "UPDATE inbox SET received_at = received_at - interval '2 hours' WHERE event_id LIKE 'old-%'"
			}
			f.exec(t, back)
			n, err := in.Prune(ctx, f.db, time.Hour, 2) // two batches
			if err != nil || n != 3 {
				t.Fatalf("Prune = %d, %v; want 3", n, err)
			}
			if n := f.count(t, "SELECT count(*) FROM inbox"); n != 1 {
				t.Fatalf("inbox rows left = %d, want 1", n)
			}
			// The version rows stay: an old redelivery is still rejected.
			if got, err := in.Process(ctx, f.db, event("t", "old-1", "old-1", "0/1", 0)); err != nil || got != inbox.Stale {
				t.Fatalf("redelivery after prune: %v, %v; want stale", got, err)
			}
			if _, err := in.Prune(ctx, f.db, -time.Second, 0); err == nil {
				t.Fatal("Prune with a negative age: no error")
			}
		})
	}
}

// Events of one aggregate handled concurrently, in any order: each is
// applied or stale, never an error, and the aggregate ends at the newest.
func TestIntegrationConcurrentSameAggregate(t *testing.T) {
	t.Parallel()
	const events = 8
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f, in := newFixture(t, b, inbox.Config{CheckVersion: true})
			ctx := context.Background()
			results := make([]inbox.Result, events)
			errs := make([]error, events)
			var wg sync.WaitGroup
			for i := range events {
				msg := event("t", fmt.Sprintf("e-%d", i), "agg", fmt.Sprintf("0/%X", 100+i), 0)
				wg.Go(func() { results[i], errs[i] = in.Process(ctx, f.db, msg) })
			}
			wg.Wait()
			applied := 0
			for i := range events {
				if errs[i] != nil {
					t.Fatalf("event %d: %v", i, errs[i])
				}
				if results[i] == inbox.Applied {
					applied++
				}
			}
			if n := f.count(t, "SELECT count(*) FROM effects"); n != applied || applied == 0 {
				t.Fatalf("effects = %d, applied = %d", n, applied)
			}
			var pos string
			if err := f.db.QueryRow("SELECT source_position FROM inbox_version").Scan(&pos); err != nil || pos != fmt.Sprintf("0/%X", 100+events-1) {
				t.Fatalf("last version = %q, %v; want the newest", pos, err)
			}
		})
	}
}
