package kafka

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testcert"
	"github.com/outboxrelay/outboxrelay/sink"
)

func TestValidateSecurity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
		want []string // substrings of the error; none: valid
	}{
		{name: "off"},
		{name: "tls with CA", tls: TLSConfig{Enabled: true, CAFile: "ca.pem"}},
		{name: "CA without tls", tls: TLSConfig{CAFile: "ca.pem"}, want: []string{"tls.ca_file is set but tls.enabled is false"}},
		{name: "cert without key", tls: TLSConfig{Enabled: true, CertFile: "c.pem"}, want: []string{"tls.cert_file and tls.key_file"}},
		{name: "insecure with CA", tls: TLSConfig{Enabled: true, CAFile: "ca.pem", InsecureSkipVerify: true}, want: []string{"tls.insecure_skip_verify and tls.ca_file"}},
		{name: "scram", sasl: SASLConfig{Mechanism: "SCRAM-SHA-512", User: "relay", PasswordFile: "/run/secrets/pw"}},
		{name: "password and file", sasl: SASLConfig{Mechanism: "PLAIN", User: "relay", Password: "x", PasswordFile: "/run/secrets/pw"},
			want: []string{"sasl.password and sasl.password_file are both set"}},
		{name: "token and file", sasl: SASLConfig{Mechanism: "OAUTHBEARER", Token: "t", TokenFile: "/t"}, want: []string{"sasl.token and sasl.token_file are both set"}},
		{name: "no user", sasl: SASLConfig{Mechanism: "PLAIN", Password: "x"}, want: []string{"sasl.user: required"}},
		{name: "no password", sasl: SASLConfig{Mechanism: "SCRAM-SHA-256", User: "u"}, want: []string{"sasl.password or sasl.password_file: required"}},
		{name: "no token", sasl: SASLConfig{Mechanism: "OAUTHBEARER"}, want: []string{"sasl.token or sasl.token_file: required"}},
		{name: "credentials without mechanism", sasl: SASLConfig{User: "u", Password: "p"}, want: []string{"sasl.mechanism: required"}},
		{name: "unknown mechanism", sasl: SASLConfig{Mechanism: "GSSAPI", User: "u"}, want: []string{`"GSSAPI" is not one of`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{Brokers: []string{"b:9092"}, TLS: tt.tls, SASL: tt.sasl}
			c.SetDefaults()
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate passed, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.sasl.Password != "" && strings.Contains(err.Error(), tt.sasl.Password+" ") {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

func TestReadSecretTrimsOneNewline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for in, want := range map[string]string{"s3cret\n": "s3cret", "s3cret\r\n": "s3cret", "s3cret": "s3cret", "a b \n\n": "a b \n"} {
		p := testcert.WriteFile(t, dir, "pw", []byte(in))
		got, err := readSecret("k", p)
		if err != nil || got != want {
			t.Errorf("readSecret(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := readSecret("kafka.sasl.password_file", filepath.Join(dir, "missing"))
	var se *SecurityError
	if !errors.As(err, &se) || se.Setting != "kafka.sasl.password_file" {
		t.Fatalf("missing file: %v, want a SecurityError naming the key", err)
	}
}

// TestTokenFileIsReadAtEveryAuthentication: a token rotated in its file is
// what the next broker connection presents.
func TestTokenFileIsReadAtEveryAuthentication(t *testing.T) {
	t.Parallel()
	p := testcert.WriteFile(t, t.TempDir(), "token", []byte("first\n"))
	tp := tokenProvider{file: p}
	for _, want := range []string{"first", "second"} {
		if want == "second" {
			testcert.WriteFile(t, filepath.Dir(p), "token", []byte("second\n"))
		}
		tok, err := tp.Token()
		if err != nil || tok.Token != want {
			t.Fatalf("Token() = %+v, %v; want %q", tok, err, want)
		}
	}
	testcert.WriteFile(t, filepath.Dir(p), "token", nil)
	if _, err := tp.Token(); err == nil {
		t.Fatal("an empty token file was accepted")
	}
}

// securedBroker is a dev broker with TLS (certificate from ca) and one user
// per SASL mechanism.
func securedBroker(t *testing.T, ca *testcert.CA) *devbroker.Broker {
	t.Helper()
	b, err := devbroker.Start(devbroker.Options{TLS: ca.ServerTLS(t), Users: []devbroker.User{
		{Mechanism: devbroker.Plain, Name: "plain-user", Password: "plain-pw"},
		{Mechanism: devbroker.ScramSHA256, Name: "scram256-user", Password: "scram256-pw"},
		{Mechanism: devbroker.ScramSHA512, Name: "scram512-user", Password: "scram512-pw"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestSecurityOnDevBroker connects the sink to a broker with TLS and SASL:
// every mechanism with the right credentials produces; a wrong password, a
// wrong CA and plaintext to the TLS port each fail at once, permanently,
// naming the setting to change.
func TestSecurityOnDevBroker(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "relay-test-ca")
	dir := t.TempDir()
	caFile := testcert.WriteFile(t, dir, "ca.pem", ca.PEM)
	otherCA := testcert.WriteFile(t, dir, "other-ca.pem", testcert.NewCA(t, "someone-else").PEM)
	pwFile := testcert.WriteFile(t, dir, "pw", []byte("scram512-pw\n"))
	b := securedBroker(t, ca)
	tlsOn := TLSConfig{Enabled: true, CAFile: caFile}

	good := []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
	}{
		{"PLAIN", tlsOn, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}},
		{"SCRAM-SHA-256", tlsOn, SASLConfig{Mechanism: "SCRAM-SHA-256", User: "scram256-user", Password: "scram256-pw"}},
		{"SCRAM-SHA-512 password_file", tlsOn, SASLConfig{Mechanism: "SCRAM-SHA-512", User: "scram512-user", PasswordFile: pwFile}},
		{"server_name", TLSConfig{Enabled: true, CAFile: caFile, ServerName: "localhost"}, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			produceOne(t, Config{Brokers: []string{b.Addr()}, TLS: tt.tls, SASL: tt.sasl})
		})
	}

	bad := []struct {
		name    string
		tls     TLSConfig
		sasl    SASLConfig
		setting string
	}{
		{"wrong SCRAM password", tlsOn, SASLConfig{Mechanism: "SCRAM-SHA-512", User: "scram512-user", Password: "not-the-password"}, "kafka.sasl.password"},
		{"wrong PLAIN password", tlsOn, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "not-the-password"}, "kafka.sasl.password"},
		{"unknown SCRAM user", tlsOn, SASLConfig{Mechanism: "SCRAM-SHA-256", User: "nobody", Password: "not-the-password"}, "kafka.sasl.password"},
		{"wrong CA", TLSConfig{Enabled: true, CAFile: otherCA}, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}, "kafka.tls.ca_file"},
		{"system roots", TLSConfig{Enabled: true}, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}, "kafka.tls.ca_file"},
		{"wrong server name", TLSConfig{Enabled: true, CAFile: caFile, ServerName: "kafka.example"}, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}, "kafka.tls.server_name"},
		{"plaintext to TLS", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", User: "plain-user", Password: "plain-pw"}, "kafka.tls.enabled"},
		{"missing CA file", TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")}, SASLConfig{}, "kafka.tls.ca_file"},
		{"missing password file", tlsOn, SASLConfig{Mechanism: "SCRAM-SHA-512", User: "scram512-user", PasswordFile: filepath.Join(dir, "nope")}, "kafka.sasl.password_file"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			p, err := New(Config{Brokers: []string{b.Addr()}, TLS: tt.tls, SASL: tt.sasl}, zerolog.Nop())
			if err == nil {
				p.Close()
				t.Fatal("connected")
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			var perm *sink.PermanentError
			if !errors.As(err, &perm) {
				t.Errorf("error is not permanent: the relay would retry it forever")
			}
			var se *SecurityError
			if !errors.As(err, &se) || se.Setting != tt.setting {
				t.Fatalf("error %v: want a SecurityError naming %s", err, tt.setting)
			}
			if !strings.Contains(err.Error(), tt.setting) {
				t.Errorf("the text does not name %s", tt.setting)
			}
			if tt.sasl.Password != "" && strings.Contains(err.Error(), tt.sasl.Password) {
				t.Errorf("the error text shows the password")
			}
		})
	}
}

// produceOne sends one record through a new Producer and waits for its
// acknowledgement.
func produceOne(t *testing.T, cfg Config) {
	t.Helper()
	p, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	var ackErr error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Send(ctx, sink.Record{Topic: "secured", Key: []byte("k"), Value: []byte("v")}, func(err error) { ackErr = err; wg.Done() }); err != nil {
		t.Fatalf("Send: %v", err)
	}
	wg.Wait()
	if ackErr != nil {
		t.Fatalf("ack: %v", ackErr)
	}
}

// TestPreflightSecurity: `check` reports the handshake (kafka.tls) and the
// authentication (kafka.sasl) as separate checks, each failing with its fix.
func TestPreflightSecurity(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "relay-test-ca")
	dir := t.TempDir()
	caFile := testcert.WriteFile(t, dir, "ca.pem", ca.PEM)
	otherCA := testcert.WriteFile(t, dir, "other-ca.pem", testcert.NewCA(t, "someone-else").PEM)
	b := securedBroker(t, ca)
	scram := SASLConfig{Mechanism: "SCRAM-SHA-256", User: "scram256-user", Password: "scram256-pw"}
	tests := []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
		want map[string]bool // check → ok
		fix  string          // in the failing check's fix
	}{
		{"good", TLSConfig{Enabled: true, CAFile: caFile}, scram, map[string]bool{"kafka.tls": true, "kafka.sasl": true, "kafka.connect": true}, ""},
		{"wrong CA", TLSConfig{Enabled: true, CAFile: otherCA}, scram, map[string]bool{"kafka.tls": false}, "kafka.tls.ca_file"},
		{"wrong password", TLSConfig{Enabled: true, CAFile: caFile}, SASLConfig{Mechanism: "SCRAM-SHA-256", User: "scram256-user", Password: "wrong"},
			map[string]bool{"kafka.tls": true, "kafka.sasl": false}, "kafka.sasl.password"},
		{"plaintext to TLS", TLSConfig{}, scram, map[string]bool{"kafka.tls": false}, "kafka.tls.enabled: true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checks := Preflight(context.Background(), Config{Brokers: []string{b.Addr()}, TLS: tt.tls, SASL: tt.sasl}, Targets{})
			got := map[string]bool{}
			for _, c := range checks {
				t.Logf("%s ok=%v %s | fix: %s", c.Name, c.OK, c.Detail, c.Fix)
				if _, ok := tt.want[c.Name]; ok {
					got[c.Name] = c.OK
				}
				if !c.OK && !strings.Contains(c.Fix, tt.fix) {
					t.Errorf("%s: fix %q does not mention %s", c.Name, c.Fix, tt.fix)
				}
				if strings.Contains(c.Detail+c.Fix, tt.sasl.Password) {
					t.Errorf("%s shows the password", c.Name)
				}
			}
			for name, ok := range tt.want {
				if g, present := got[name]; !present || g != ok {
					t.Errorf("%s: ok=%v present=%v, want ok=%v", name, g, present, ok)
				}
			}
		})
	}
}

// TestTLSToPlaintextBroker: TLS spoken to a plaintext listener is found out
// by probing the port, and is permanent too.
func TestTLSToPlaintextBroker(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	start := time.Now()
	p, err := New(Config{Brokers: []string{b.Addr()}, TLS: TLSConfig{Enabled: true}}, zerolog.Nop())
	if err == nil {
		p.Close()
		t.Fatal("connected")
	}
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	var perm *sink.PermanentError
	var se *SecurityError
	if !errors.As(err, &perm) || !errors.As(err, &se) || se.Setting != "kafka.tls.enabled" || !strings.Contains(se.Problem, "speaks plaintext") {
		t.Fatalf("error %v: want a permanent SecurityError saying the broker speaks plaintext", err)
	}
}
