package inbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/outboxrelay/outboxrelay/inbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// backend is one kind of consumer database. Each open gives the test a
// private database of its own, so tests running in parallel on the shared
// servers never see each other's rows.
type backend struct {
	name    string
	dialect inbox.Dialect
	open    func(t *testing.T) *sql.DB
}

var backends = []backend{
	{"mariadb", inbox.MySQL, openMariaDB},
	{"postgres", inbox.Postgres, openPostgres},
}

func openMariaDB(t *testing.T) *sql.DB {
	t.Helper()
	m := testdb.MariaDB(t)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = m.User, m.Password, "tcp", m.Addr, m.DB
	return openDB(t, "mysql", cfg.FormatDSN())
}

func openPostgres(t *testing.T) *sql.DB {
	t.Helper()
	return openDB(t, "pgx", testdb.Postgres(t).DSN)
}

func openDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	// Closed before testdb drops the database (cleanups run last-first).
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("%s: %v", driver, err)
	}
	return db
}

// fixture is a database with the inbox tables and an effects table to
// which the test's Func appends one row per application, so that an
// effect applied twice shows as two rows.
type fixture struct {
	db *sql.DB
	d  inbox.Dialect
}

func newFixture(t *testing.T, b backend, cfg inbox.Config) (*fixture, *inbox.Inbox) {
	t.Helper()
	return newFixtureFunc(t, b, cfg, nil)
}

// newFixtureFunc is newFixture with the inbox running fn(f) instead of
// f.apply (fn's Func usually calls f.apply, then misbehaves).
func newFixtureFunc(t *testing.T, b backend, cfg inbox.Config, fn func(f *fixture) inbox.Func) (*fixture, *inbox.Inbox) {
	t.Helper()
	f := &fixture{db: b.open(t), d: b.dialect}
	f.exec(t, "CREATE TABLE effects (event_id VARCHAR(64) NOT NULL, aggregate VARCHAR(64) NOT NULL)")
	cfg.Dialect = b.dialect
	apply := inbox.Func(f.apply)
	if fn != nil {
		apply = fn(f)
	}
	in, err := inbox.New(cfg, apply)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.CreateTables(context.Background(), f.db); err != nil {
		t.Fatal(err)
	}
	return f, in
}

// apply is the test's effect: one row in effects.
func (f *fixture) apply(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
	_, err := tx.ExecContext(ctx, f.q("INSERT INTO effects (event_id, aggregate) VALUES (?, ?)"), ev.ID, string(ev.Aggregate))
	return err
}

// q rewrites ? placeholders for Postgres.
func (f *fixture) q(s string) string {
	if f.d != inbox.Postgres {
		return s
	}
	out, n := make([]byte, 0, len(s)+8), 0
	for i := 0; i < len(s); i++ {
		if s[i] == '?' {
			n++
			out = fmt.Appendf(out, "$%d", n)
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

func (f *fixture) exec(t *testing.T, s string, args ...any) {
	t.Helper()
	if _, err := f.db.Exec(f.q(s), args...); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
}

func (f *fixture) count(t *testing.T, s string, args ...any) int {
	t.Helper()
	var n int
	if err := f.db.QueryRow(f.q(s), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return n
}

// event is an outboxrelay record: id, key, and version headers.
func event(topic, id, key, pos string, idx int) *sarama.ConsumerMessage {
	return record(topic, key, "id", id, "type", "Test", "outboxrelay-position", pos, "outboxrelay-index", fmt.Sprint(idx))
}
