package postgres

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/testcert"
	"github.com/outboxrelay/outboxrelay/internal/testdb"

	"github.com/outboxrelay/outboxrelay/source"
)

func TestValidateSecrets(t *testing.T) {
	t.Parallel()
	base := Config{Tables: []string{"public.outbox"}}
	tests := []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"dsn", func(c *Config) { c.DSN = "postgres://relay@db/shop" }, ""},
		{"dsn_file", func(c *Config) { c.DSNFile = "/run/secrets/dsn" }, ""},
		{"password_file", func(c *Config) { c.DSN, c.PasswordFile = "host=db user=relay dbname=shop", "/run/secrets/pw" }, ""},
		{"neither", func(c *Config) {}, "dsn: required (or dsn_file)"},
		{"both", func(c *Config) { c.DSN, c.DSNFile = "postgres://relay@db/shop", "/run/secrets/dsn" }, "dsn and dsn_file are both set"},
		{"password twice", func(c *Config) { c.DSN, c.PasswordFile = "postgres://relay:s3cret@db/shop", "/run/secrets/pw" }, "password_file is set and dsn carries a password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base
			tt.cfg(&c)
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// withQuery returns dsn with its query parameters replaced by q (and the
// password by pw when not nil).
func withQuery(t *testing.T, dsn string, pw *string, q url.Values) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if pw != nil {
		if *pw == "" {
			u.User = url.User(u.User.Username())
		} else {
			u.User = url.UserPassword(u.User.Username(), *pw)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestIntegrationTLS runs the source against a PostgreSQL that accepts TCP
// connections only over TLS (pg_hba hostssl) with passwords: the DSN's
// sslmode, sslrootcert, sslcert and sslkey reach both the normal and the
// replication connection; the DSN and the password may come from files; a
// wrong CA, a wrong password and a plaintext connection each fail at once,
// permanently, with the fix.
func TestIntegrationTLS(t *testing.T) {
	t.Parallel()
	_, db, files := testdb.PrivatePostgresTLS(t)
	db.Exec(t, testOutbox)
	dir := t.TempDir()
	otherCA := testcert.WriteFile(t, dir, "other-ca.pem", testcert.NewCA(t, "someone-else").PEM)
	u, _ := url.Parse(db.DSN)
	password, _ := u.User.Password()
	noPassword, wrong := "", "not-the-password"
	verifyFull := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {files.CA}}
	withCert := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {files.CA}, "sslcert": {files.ClientCert}, "sslkey": {files.ClientKey}}

	slot := 0
	config := func(mut func(*Config)) Config {
		slot++
		c := testConfig(db)
		c.Slot = fmt.Sprintf("%s_%d", db.Slot, slot) // slots are server-wide
		c.Publication = fmt.Sprintf("%s_%d", db.Publication, slot)
		mut(&c)
		return c
	}
	good := []struct {
		name string
		cfg  Config
		dn   string // the client certificate the walsender saw
	}{
		{"verify-full", config(func(c *Config) { c.DSN = withQuery(t, db.DSN, nil, verifyFull) }), ""},
		{"verify-ca", config(func(c *Config) {
			c.DSN = withQuery(t, db.DSN, nil, url.Values{"sslmode": {"verify-ca"}, "sslrootcert": {files.CA}})
		}), ""},
		{"require", config(func(c *Config) { c.DSN = withQuery(t, db.DSN, nil, url.Values{"sslmode": {"require"}}) }), ""},
		{"client certificate", config(func(c *Config) { c.DSN = withQuery(t, db.DSN, nil, withCert) }), "/CN=outboxrelay"},
		{"dsn_file", config(func(c *Config) {
			c.DSN, c.DSNFile = "", testcert.WriteFile(t, dir, "dsn", []byte(withQuery(t, db.DSN, nil, verifyFull)+"\n"))
		}), ""},
		{"password_file", config(func(c *Config) {
			c.DSN, c.PasswordFile = withQuery(t, db.DSN, &noPassword, verifyFull), testcert.WriteFile(t, dir, "pw", []byte(password+"\n"))
		}), ""},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := openReader(t, tt.cfg, "")
			db.Exec(t, `INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ('`+tt.name+`', 'o', '1', 't', '{}')`)
			if tx := nextWithRows(t, r); len(tx.Rows) != 1 {
				t.Fatalf("rows: %d", len(tx.Rows))
			}
			// The replication connection is encrypted, with the same settings.
			got := db.QueryString(t, `SELECT s.ssl::text || ' ' || coalesce(s.client_dn, '') FROM pg_stat_ssl s
				JOIN pg_stat_replication r USING (pid) WHERE r.application_name = 'outboxrelay' AND
				r.pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1)`, tt.cfg.Slot)
			if want := strings.TrimSpace("true " + tt.dn); strings.TrimSpace(got) != want {
				t.Errorf("walsender TLS: %q, want %q", got, want)
			}
		})
	}

	bad := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"wrong CA", config(func(c *Config) {
			c.DSN = withQuery(t, db.DSN, nil, url.Values{"sslmode": {"verify-full"}, "sslrootcert": {otherCA}})
		}), []string{"not trusted", "sslrootcert"}},
		{"wrong password", config(func(c *Config) { c.DSN = withQuery(t, db.DSN, &wrong, verifyFull) }), []string{"password authentication failed", "source.postgres.dsn"}},
		{"plaintext", config(func(c *Config) { c.DSN = withQuery(t, db.DSN, nil, url.Values{"sslmode": {"disable"}}) }), []string{"no encryption", "sslmode=verify-full"}},
		{"missing dsn_file", config(func(c *Config) { c.DSN, c.DSNFile = "", filepath.Join(dir, "nope") }), []string{"source.postgres.dsn_file"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			r, err := Open(ctx, tt.cfg, zerolog.Nop(), "")
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			if !source.IsPermanent(err) {
				t.Errorf("not permanent: the relay would retry it forever")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q", w)
				}
			}
			if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), wrong) {
				t.Errorf("error shows a password")
			}
		})
	}
}
