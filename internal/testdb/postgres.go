package testdb

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresDB is a private database on the test PostgreSQL server, with its
// own replication slot and publication names (slots are server-wide).
type PostgresDB struct {
	DSN         string // the test database, as a URL
	AdminDSN    string // the server's maintenance database
	DB          string
	Slot        string // a slot name no other test uses
	Publication string
	Dir         string // server directory (for kill/restart tests)
}

// Postgres creates a fresh database for t; when t ends it drops the
// database and every replication slot on it.
func Postgres(t testing.TB) *PostgresDB {
	t.Helper()
	return postgresOn(t, Require(t, "RELAYTEST_POSTGRES_DSN", "scripts/postgres.sh"))
}

// postgresOn creates the test's database on the server at admin.
func postgresOn(t testing.TB, admin string) *PostgresDB {
	t.Helper()
	suffix := randomHex(6)
	p := &PostgresDB{
		AdminDSN:    admin,
		DB:          "t_" + suffix,
		Slot:        "s_" + suffix,
		Publication: "p_" + suffix,
		Dir:         os.Getenv("RELAYTEST_POSTGRES_DIR"),
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("RELAYTEST_POSTGRES_DSN is not a URL: %v", err)
	}
	u.Path = "/" + p.DB
	p.DSN = u.String()

	c := p.dial(t, admin)
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), "CREATE DATABASE "+p.DB); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() { p.drop() })
	return p
}

func (p *PostgresDB) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.AdminDSN)
	if err != nil {
		return
	}
	defer c.Close(ctx)
	// A database with logical slots cannot be dropped; an active slot
	// cannot be dropped until its walsender is gone.
	for i := 0; i < 50; i++ {
		_, _ = c.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, p.DB)
		_, err := c.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, p.DB)
		var left int
		_ = c.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, p.DB).Scan(&left)
		if err == nil && left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+p.DB+" WITH (FORCE)")
}

func (p *PostgresDB) dial(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	return c
}

// Conn opens a connection to the test's database; closed when t ends.
func (p *PostgresDB) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	c := p.dial(t, p.DSN)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs statements on a fresh connection to the test's database,
// failing t on error.
func (p *PostgresDB) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	c := p.dial(t, p.DSN)
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// QueryString runs a one-value query on the test's database (NULL → "").
func (p *PostgresDB) QueryString(t testing.TB, q string, args ...any) string {
	t.Helper()
	c := p.dial(t, p.DSN)
	defer c.Close(context.Background())
	var s *string
	if err := c.QueryRow(context.Background(), q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// SlotFlush returns the test slot's confirmed_flush_lsn ("" if no slot).
func (p *PostgresDB) SlotFlush(t testing.TB) string {
	t.Helper()
	c := p.dial(t, p.DSN)
	defer c.Close(context.Background())
	var s *string
	err := c.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, p.Slot).Scan(&s)
	if err == pgx.ErrNoRows || s == nil {
		return ""
	}
	if err != nil {
		t.Fatalf("read slot: %v", err)
	}
	return strings.TrimSpace(*s)
}
