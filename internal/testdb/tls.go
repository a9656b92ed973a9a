package testdb

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

// TLSFiles are the certificate files of a TLS-requiring test server, as
// scripts/lib/tls.sh makes them: the CA, and a client certificate it
// signed (CN "outboxrelay").
type TLSFiles struct {
	CA, ClientCert, ClientKey string
}

// PrivateMariaDBTLS starts a MariaDB of the test's own that requires TLS
// (scripts/mariadb.sh with MARIADB_TLS=1: require_secure_transport=ON) and
// returns a fresh database on it; the returned MySQL connects over TLS,
// verifying the server against its CA.
func PrivateMariaDBTLS(t testing.TB) (*Server, *MySQL, TLSFiles) {
	t.Helper()
	s := startServer(t, "scripts/mariadb.sh", "RELAYTEST_MARIADB_ADDR", "MARIADB_TLS=1")
	files := TLSFiles{CA: s.Env["RELAYTEST_MARIADB_TLS_CA"], ClientCert: s.Env["RELAYTEST_MARIADB_TLS_CLIENT_CERT"], ClientKey: s.Env["RELAYTEST_MARIADB_TLS_CLIENT_KEY"]}
	m := &MySQL{Addr: s.Env["RELAYTEST_MARIADB_TLS_ADDR"], User: "root", Dir: s.Dir, DB: "t_" + randomHex(6),
		TLS: &tls.Config{RootCAs: caPool(t, files.CA), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	c := m.connect(t, "")
	defer c.Close()
	if _, err := c.Execute("CREATE DATABASE " + m.DB); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s, m, files
}

// PrivatePostgresTLS starts a PostgreSQL of the test's own that requires
// TLS over TCP (scripts/postgres.sh with POSTGRES_TLS=1: hostssl lines only,
// scram-sha-256 passwords) and returns a fresh database on it; its DSN
// carries the postgres role's password, sslmode=verify-full and the CA.
func PrivatePostgresTLS(t testing.TB) (*Server, *PostgresDB, TLSFiles) {
	t.Helper()
	s := startServer(t, "scripts/postgres.sh", "RELAYTEST_POSTGRES_DSN", "POSTGRES_TLS=1")
	files := TLSFiles{CA: s.Env["RELAYTEST_POSTGRES_TLS_CA"], ClientCert: s.Env["RELAYTEST_POSTGRES_TLS_CLIENT_CERT"], ClientKey: s.Env["RELAYTEST_POSTGRES_TLS_CLIENT_KEY"]}
	db := postgresOn(t, s.Env["RELAYTEST_POSTGRES_TLS_DSN"])
	db.Dir = s.Dir
	return s, db, files
}

func caPool(t testing.TB, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("test CA: %v", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("test CA %s holds no certificate", path)
	}
	return p
}
