package mysql

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/testcert"
	"github.com/outboxrelay/outboxrelay/internal/testdb"

	"github.com/outboxrelay/outboxrelay/source"
)

func TestValidateTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  func(*Config)
		want string // "" valid
	}{
		{"default preferred", func(c *Config) {}, ""},
		{"ca implies verify-identity", func(c *Config) { c.TLS.CAFile = "ca.pem" }, ""},
		{"bad mode", func(c *Config) { c.TLS.Mode = "REQUIRED" }, `tls.mode: "REQUIRED" is not one of`},
		{"ca with required", func(c *Config) { c.TLS.Mode, c.TLS.CAFile = TLSRequired, "ca.pem" }, "tls.ca_file is set but tls.mode required does not verify"},
		{"ca with disabled", func(c *Config) { c.TLS.Mode, c.TLS.CAFile = TLSDisabled, "ca.pem" }, "tls.mode is disabled but tls.ca_file"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, "tls.cert_file and tls.key_file"},
		{"password twice", func(c *Config) { c.Password, c.PasswordFile = "pw", "/run/secrets/pw" }, "password and password_file are both set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{User: "relay", ServerID: 7, Tables: []string{"shop.outbox"}}
			tt.cfg(&c)
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
	c := Config{TLS: TLSConfig{CAFile: "ca.pem"}}
	c.SetDefaults()
	if c.TLS.Mode != TLSVerifyIdentity {
		t.Errorf("mode with ca_file = %s, want verify-identity", c.TLS.Mode)
	}
}

func TestGreetingCaps(t *testing.T) {
	t.Parallel()
	// A MariaDB 10.11 greeting, cut after the lower capability flags.
	g := append([]byte{0x5b, 0, 0, 0, 10}, "5.5.5-10.11.6-MariaDB\x00"...)
	g = append(g, 1, 2, 3, 4 /* id */, 1, 2, 3, 4, 5, 6, 7, 8 /* auth */, 0 /* filler */, 0xfe, 0xff /* caps */)
	for n := 0; n < len(g); n++ {
		if _, ok := greetingCaps(g[:n]); ok {
			t.Fatalf("parsed a greeting cut at %d bytes", n)
		}
	}
	caps, ok := greetingCaps(g)
	if !ok || caps != 0xfffe {
		t.Fatalf("caps = %#x, %v", caps, ok)
	}
	if _, ok := greetingCaps([]byte{7, 0, 0, 0, 0xff, 0x15, 0x04, '#'}); ok {
		t.Fatal("parsed an error packet as a greeting")
	}
}

// tlsReader opens a Reader with cfg on db and returns the outbox row it
// reads after one insert, or Open's error.
func tlsReader(t *testing.T, db *testdb.MySQL, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Addr, cfg.ServerID, cfg.Tables, cfg.Heartbeat = db.Addr, testdb.ServerID(), []string{db.DB + ".outbox"}, time.Second
	r, err := Open(ctx, cfg, zerolog.Nop(), "")
	if err != nil {
		return err
	}
	defer r.Close()
	id := fmt.Sprintf("e-%d", time.Now().UnixNano())
	db.Exec(t, fmt.Sprintf("INSERT INTO outbox (id, payload) VALUES ('%s', 'over TLS')", id))
	for {
		tx, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		for _, row := range tx.Rows {
			if v := row.Values[row.Table.Index("id")]; fmt.Sprint(v) == id || fmt.Sprintf("%s", v) == id {
				return nil
			}
		}
	}
}

// TestIntegrationTLS runs the source against a MariaDB that requires TLS
// (require_secure_transport=ON): every TLS mode reads the binlog (so the
// binlog connection is encrypted as well as the metadata one); a wrong CA,
// a wrong name, a wrong password and a plaintext connection each fail at
// once, permanently, naming the setting to change.
func TestIntegrationTLS(t *testing.T) {
	t.Parallel()
	_, admin, files := testdb.PrivateMariaDBTLS(t)
	admin.Exec(t, "CREATE TABLE outbox (id VARCHAR(64) PRIMARY KEY, payload TEXT)",
		"CREATE USER 'relay'@'%' IDENTIFIED BY 'relay-pw'", "GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'relay'@'%'",
		"CREATE USER 'x509'@'%' IDENTIFIED BY 'x509-pw' REQUIRE X509", "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'x509'@'%'", "GRANT REFERENCES ON outbox TO 'x509'@'%'")
	dir := t.TempDir()
	otherCA := testcert.WriteFile(t, dir, "other-ca.pem", testcert.NewCA(t, "someone-else").PEM)
	pwFile := testcert.WriteFile(t, dir, "pw", []byte("relay-pw\n"))
	relay := func(tls TLSConfig) Config { return Config{User: "relay", Password: "relay-pw", TLS: tls} }

	good := []struct {
		name string
		cfg  Config
	}{
		{"preferred", relay(TLSConfig{})},
		{"required", relay(TLSConfig{Mode: TLSRequired})},
		{"verify-ca", relay(TLSConfig{Mode: TLSVerifyCA, CAFile: files.CA})},
		{"verify-identity", relay(TLSConfig{CAFile: files.CA})},
		{"verify-identity server_name", relay(TLSConfig{CAFile: files.CA, ServerName: "localhost"})},
		{"password_file", Config{User: "relay", PasswordFile: pwFile, TLS: TLSConfig{CAFile: files.CA}}},
		{"client certificate", Config{User: "x509", Password: "x509-pw", TLS: TLSConfig{CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tlsReader(t, admin, tt.cfg); err != nil {
				t.Fatalf("Open: %v", err)
			}
		})
	}

	bad := []struct {
		name string
		cfg  Config
		want []string // in the error text
	}{
		{"wrong CA", relay(TLSConfig{CAFile: otherCA}), []string{"not trusted", "source.mysql.tls.ca_file"}},
		{"wrong name", relay(TLSConfig{CAFile: files.CA, ServerName: "db.example"}), []string{"does not name the host", "source.mysql.tls.server_name"}},
		{"wrong password", Config{User: "relay", Password: "not-the-password", TLS: TLSConfig{CAFile: files.CA}}, []string{"Access denied", "source.mysql.password"}},
		{"plaintext", relay(TLSConfig{Mode: TLSDisabled}), []string{"not encrypted", "source.mysql.tls.mode"}},
		{"no client certificate", Config{User: "x509", Password: "x509-pw", TLS: TLSConfig{CAFile: files.CA}}, []string{"source.mysql.tls.cert_file"}},
		{"missing password file", Config{User: "relay", PasswordFile: filepath.Join(dir, "nope")}, []string{"source.mysql.password_file"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := tlsReader(t, admin, tt.cfg)
			if err == nil {
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
			if tt.cfg.Password != "" && strings.Contains(err.Error(), tt.cfg.Password) {
				t.Errorf("error shows the password")
			}
		})
	}
}

// TestIntegrationTLSPlaintextServer: preferred (the default) falls back to
// plaintext on a server without TLS, in one connection; required refuses it.
func TestIntegrationTLSPlaintextServer(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, "CREATE TABLE outbox (id VARCHAR(64) PRIMARY KEY, payload TEXT)")
	if err := tlsReader(t, db, Config{User: db.User, Password: db.Password}); err != nil {
		t.Fatalf("preferred: %v", err)
	}
	err := tlsReader(t, db, Config{User: db.User, Password: db.Password, TLS: TLSConfig{Mode: TLSRequired}})
	if err == nil || !source.IsPermanent(err) || !strings.Contains(err.Error(), "does not offer TLS") {
		t.Fatalf("required on a plaintext server: %v, want a permanent error saying the server does not offer TLS", err)
	}
}
