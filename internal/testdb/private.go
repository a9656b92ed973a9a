package testdb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Server is a database server of the test's own, started by the project's
// script in a temporary directory, for tests that kill and restart it
// (which would disturb every other test on the shared server).
type Server struct {
	script string // scripts/mariadb.sh or scripts/postgres.sh
	Dir    string
	Env    map[string]string // the RELAYTEST_* exports of the script
	extra  []string          // KEY=VALUE added to the script's environment
}

// repoRoot finds the module root from the test's working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// startServer runs `script start dir`. Private servers need the same
// packages as the shared ones: where those are not running (no RELAYTEST_*
// variable), the test skips locally and fails in CI, like the others.
func startServer(t testing.TB, script, requireVar string, extra ...string) *Server {
	t.Helper()
	Require(t, requireVar, script)
	s := &Server{script: filepath.Join(repoRoot(t), script), Dir: filepath.Join(t.TempDir(), "db"), extra: extra}
	s.Start(t)
	t.Cleanup(func() { _ = exec.Command("bash", s.script, "stop", s.Dir).Run() })
	return s
}

// Start starts the server (again, on the same directory and port).
func (s *Server) Start(t testing.TB) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("bash", s.script, "start", s.Dir)
	if len(s.extra) > 0 {
		cmd.Env = append(os.Environ(), s.extra...)
	}
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s start %s: %v\n%s", s.script, s.Dir, err, errb.String())
	}
	s.Env = map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok {
			s.Env[k] = strings.Trim(v, `'"`)
		}
	}
}

// Kill kills the server with SIGKILL.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if b, err := exec.Command("bash", s.script, "kill", s.Dir).CombinedOutput(); err != nil {
		t.Fatalf("%s kill: %v\n%s", s.script, err, b)
	}
}

// PrivateMariaDB starts a MariaDB of the test's own and returns a fresh
// database on it.
func PrivateMariaDB(t testing.TB) (*Server, *MySQL) {
	t.Helper()
	return PrivateMariaDBWith(t, "")
}

// PrivateMariaDBWith is PrivateMariaDB with extra server flags (word-split,
// e.g. "--binlog-row-image=MINIMAL"), also used by Start after a Kill.
func PrivateMariaDBWith(t testing.TB, serverArgs string) (*Server, *MySQL) {
	t.Helper()
	var extra []string
	if serverArgs != "" {
		extra = []string{"MARIADB_EXTRA_ARGS=" + serverArgs}
	}
	s := startServer(t, "scripts/mariadb.sh", "RELAYTEST_MARIADB_ADDR", extra...)
	m := &MySQL{Addr: s.Env["RELAYTEST_MARIADB_ADDR"], User: "root", Dir: s.Dir, DB: "t_" + randomHex(6)}
	c := m.connect(t, "")
	defer c.Close()
	if _, err := c.Execute("CREATE DATABASE " + m.DB); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s, m
}

// PrivatePostgres starts a PostgreSQL of the test's own and returns a fresh
// database on it.
func PrivatePostgres(t testing.TB) (*Server, *PostgresDB) {
	t.Helper()
	return PrivatePostgresWith(t, "")
}

// PrivatePostgresWith is PrivatePostgres with extra postgresql.conf lines
// (e.g. "wal_level=replica"), which win over the script's defaults.
func PrivatePostgresWith(t testing.TB, conf string) (*Server, *PostgresDB) {
	t.Helper()
	var extra []string
	if conf != "" {
		extra = []string{"POSTGRES_EXTRA_CONF=" + conf}
	}
	s := startServer(t, "scripts/postgres.sh", "RELAYTEST_POSTGRES_DSN", extra...)
	db := postgresOn(t, s.Env["RELAYTEST_POSTGRES_DSN"])
	db.Dir = s.Dir
	return s, db
}
