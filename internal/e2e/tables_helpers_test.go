package e2e

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// tableTarget is a database for the cleanup and republish tests: SQL on
// its outbox table and the relay's YAML.
type tableTarget struct {
	kind string
	// exec runs one statement with args (placeholders as ph gives them).
	exec func(t testing.TB, q string, args ...any)
	ph   func(i int) string
	// ids lists the ids in the outbox table.
	ids func(t testing.TB) map[string]bool
	// at renders a UTC time literal "2026-01-01 00:00:SS" for created_at.
	at   func(sec int) string
	yaml func(broker, cpPath string) string
}

func mariaTableTarget(t *testing.T) tableTarget {
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	start := db.Position(t)
	c := db.Conn(t)
	testdb.Exec(t, c, "SET time_zone = '+00:00'").Close()
	return tableTarget{
		kind: "mysql",
		exec: func(t testing.TB, q string, args ...any) { testdb.Exec(t, c, q, args...).Close() },
		ph:   func(int) string { return "?" },
		ids: func(t testing.TB) map[string]bool {
			r := testdb.Exec(t, c, "SELECT id FROM outbox")
			out := map[string]bool{}
			for i := 0; i < r.RowNumber(); i++ {
				s, _ := r.GetString(i, 0)
				out[strings.Clone(s)] = true
			}
			r.Close()
			return out
		},
		at:   func(sec int) string { return fmt.Sprintf("TIMESTAMP'2026-01-01 00:00:%02d'", sec) },
		yaml: func(broker, cpPath string) string { return mysqlRelayConfig(db, broker, cpPath, start) },
	}
}

func postgresTableTarget(t *testing.T) tableTarget {
	db := setupPostgres(t)
	c := db.Conn(t)
	return tableTarget{
		kind: "postgres",
		exec: func(t testing.TB, q string, args ...any) {
			t.Helper()
			if _, err := c.Exec(context.Background(), q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		ph: func(i int) string { return fmt.Sprintf("$%d", i) },
		ids: func(t testing.TB) map[string]bool {
			rows, err := c.Query(context.Background(), "SELECT id FROM outbox")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			out := map[string]bool{}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				out[s] = true
			}
			return out
		},
		at:   func(sec int) string { return fmt.Sprintf("TIMESTAMPTZ '2026-01-01 00:00:%02d+00'", sec) },
		yaml: func(broker, cpPath string) string { return postgresRelayConfig(db, broker, cpPath) },
	}
}

// insert writes one outbox row in a transaction of its own; createdAt is
// SQL ("" for the column's default, now).
func (tg tableTarget) insert(t testing.TB, id, agg, createdAt string) {
	t.Helper()
	cols, vals := "id, aggregatetype, aggregateid, type, payload", fmt.Sprintf("%s, %s, %s, %s, %s", tg.ph(1), tg.ph(2), tg.ph(3), tg.ph(4), tg.ph(5))
	if createdAt != "" {
		cols, vals = cols+", created_at", vals+", "+createdAt
	}
	tg.exec(t, "INSERT INTO outbox ("+cols+") VALUES ("+vals+")", id, "order", agg, "created", fmt.Sprintf(`{"id":%q}`, id))
}

// startService runs the relay as `outboxrelay run` does (the Service,
// with the cleanup, and the checkpoint's lock).
func startService(t testing.TB, yaml string) *runningRelay {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	svc, err := cli.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := svc.Store.Lock()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningRelay{cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() {
		err := svc.Run(ctx)
		unlock()
		svc.Store.Close()
		rr.done <- err
	}()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
