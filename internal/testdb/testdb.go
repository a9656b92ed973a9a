// Package testdb gives integration tests a private database on the servers
// that scripts/mariadb.sh and scripts/postgres.sh start, found through the
// RELAYTEST_* environment variables those scripts print. Without them a test
// is skipped locally and fails in CI (CI=true), so CI can never pass by
// skipping. It must not start servers itself.
package testdb

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
)

// Require returns the environment variable, or skips (locally) / fails (CI).
func Require(t testing.TB, name, script string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: the database was not started (run the tests through scripts/test.sh, which starts it with %s)", name, script)
	}
	t.Skipf("%s not set: run through scripts/test.sh (or eval \"$(%s start DIR)\") to run integration tests", name, script)
	return ""
}

// MySQL is a private database on the test MariaDB server.
type MySQL struct {
	Addr, User, Password string
	DB                   string // the test's own database
	Dir                  string // server directory (for kill/restart tests)
	// TLS, when set, is used for the connections (a server requiring TLS).
	TLS *tls.Config
}

var serverIDs atomic.Uint32

func init() {
	var b [2]byte
	_, _ = rand.Read(b[:])
	// Distinct per test process so parallel packages do not collide.
	serverIDs.Store(10000 + uint32(os.Getpid()%50000)*64 + uint32(b[0])%64)
}

// ServerID returns a replica server_id no other reader in this process uses.
func ServerID() uint32 { return serverIDs.Add(1) }

// MariaDB creates a fresh database for t and drops it when t ends.
func MariaDB(t testing.TB) *MySQL {
	t.Helper()
	addr := Require(t, "RELAYTEST_MARIADB_ADDR", "scripts/mariadb.sh")
	m := &MySQL{
		Addr:     addr,
		User:     os.Getenv("RELAYTEST_MARIADB_USER"),
		Password: os.Getenv("RELAYTEST_MARIADB_PASSWORD"),
		Dir:      os.Getenv("RELAYTEST_MARIADB_DIR"),
		DB:       "t_" + randomHex(6),
	}
	if m.User == "" {
		m.User = "root"
	}
	c := m.connect(t, "")
	defer c.Close()
	if _, err := c.Execute("CREATE DATABASE " + m.DB); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := m.dial("")
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Execute("DROP DATABASE IF EXISTS " + m.DB)
	})
	return m
}

func (m *MySQL) dial(db string) (*client.Conn, error) {
	return client.ConnectWithTimeout(m.Addr, m.User, m.Password, db, 10*time.Second,
		func(c *client.Conn) error {
			c.SetTLSConfig(m.TLS)
			return c.SetCollation("utf8mb4_general_ci")
		})
}

func (m *MySQL) connect(t testing.TB, db string) *client.Conn {
	t.Helper()
	c, err := m.dial(db)
	if err != nil {
		t.Fatalf("connect to test MariaDB %s: %v", m.Addr, err)
	}
	return c
}

// Conn opens a connection to the test's database; closed when t ends.
func (m *MySQL) Conn(t testing.TB) *client.Conn {
	t.Helper()
	c := m.connect(t, m.DB)
	t.Cleanup(func() { c.Close() })
	return c
}

// Exec runs statements on a fresh connection, failing t on error.
func (m *MySQL) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	c := m.connect(t, m.DB)
	defer c.Close()
	for _, s := range stmts {
		if _, err := c.Execute(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// Position returns the server's binlog position now, as "file:offset".
func (m *MySQL) Position(t testing.TB) string {
	t.Helper()
	c := m.connect(t, "")
	defer c.Close()
	r, err := c.Execute("SHOW MASTER STATUS")
	if err != nil || r.RowNumber() == 0 {
		t.Fatalf("SHOW MASTER STATUS: %v", err)
	}
	f, _ := r.GetString(0, 0)
	p, _ := r.GetUint(0, 1)
	return fmt.Sprintf("%s:%d", f, p) // formats a copy before r is recycled
}

// QueryString returns the first column of the first row of q ("" for none
// or NULL).
func (m *MySQL) QueryString(t testing.TB, q string) string {
	t.Helper()
	c := m.connect(t, m.DB)
	defer c.Close()
	r, err := c.Execute(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return ""
	}
	s, _ := r.GetString(0, 0)
	return strings.Clone(s)
}

// Exec is a helper for *client.Conn statements with arguments.
func Exec(t testing.TB, c *client.Conn, q string, args ...any) *gomysql.Result {
	t.Helper()
	r, err := c.Execute(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
