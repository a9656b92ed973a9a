package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testcert"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/preflight"
)

// The relay against parts that require TLS and authentication: a MariaDB
// with require_secure_transport, and a broker with TLS and SCRAM, every
// secret from a file. Then each kind of mistake, through the binary's
// entry point: the relay stops at once with exit code 1 and the fix.

const (
	relayDBPassword    = "db-secret-4711"
	relayKafkaPassword = "kafka-secret-0815"
)

// securedSetup is a TLS MariaDB with a relay user, a TLS+SCRAM broker, and
// the files the relay's config points at.
type securedSetup struct {
	db      *testdb.MySQL
	files   testdb.TLSFiles
	broker  *devbroker.Broker
	kafkaCA string // the broker's CA certificate file
	dir     string
}

func newSecuredSetup(t *testing.T) *securedSetup {
	t.Helper()
	_, db, files := testdb.PrivateMariaDBTLS(t)
	db.Exec(t, mysqlSchema, mysqlNoise,
		"CREATE USER 'relay'@'%' IDENTIFIED BY '"+relayDBPassword+"'",
		"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'relay'@'%'",
		"GRANT SELECT ON "+db.DB+".* TO 'relay'@'%'")
	ca := testcert.NewCA(t, "kafka-test-ca")
	b, err := devbroker.Start(devbroker.Options{Partitions: 3, TLS: ca.ServerTLS(t),
		Users: []devbroker.User{{Mechanism: devbroker.ScramSHA512, Name: "outboxrelay", Password: relayKafkaPassword}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	dir := t.TempDir()
	s := &securedSetup{db: db, files: files, broker: b, dir: dir, kafkaCA: testcert.WriteFile(t, dir, "kafka-ca.pem", ca.PEM)}
	// As Kubernetes mounts secrets: one file each, with a newline.
	testcert.WriteFile(t, dir, "db-password", []byte(relayDBPassword+"\n"))
	testcert.WriteFile(t, dir, "kafka-password", []byte(relayKafkaPassword+"\n"))
	return s
}

// yaml is the relay's config; edit changes lines of it ("key: value" →
// replacement) to make mistakes.
func (s *securedSetup) yaml(edit map[string]string) string {
	y := fmt.Sprintf(`source:
  type: mysql
  mysql:
    addr: %s
    user: relay
    password_file: %s
    server_id: %d
    tables: [%s.outbox]
    heartbeat: 1s
    tls:
      mode: verify-identity
      ca_file: %s
outbox:
  topic: "outbox.event.${aggregatetype}"
kafka:
  brokers: [%s]
  linger: 2ms
  tls:
    enabled: true
    ca_file: %s
  sasl:
    mechanism: SCRAM-SHA-512
    user: outboxrelay
    password_file: %s
checkpoint:
  file:
    path: %s
relay:
  checkpoint_interval: 50ms
  shutdown_timeout: 20s
`, s.db.Addr, filepath.Join(s.dir, "db-password"), testdb.ServerID(), s.db.DB, s.files.CA,
		s.broker.Addr(), s.kafkaCA, filepath.Join(s.dir, "kafka-password"), filepath.Join(s.dir, "checkpoint.json"))
	for from, to := range edit {
		if !strings.Contains(y, from) {
			panic("no " + from + " in the config")
		}
		y = strings.Replace(y, from, to, 1)
	}
	return y
}

// TestIntegrationTLSEndToEnd: rows written to a TLS-only MariaDB reach a
// TLS+SCRAM broker, with every secret read from a file.
func TestIntegrationTLSEndToEnd(t *testing.T) {
	t.Parallel()
	s := newSecuredSetup(t)
	rr := startRelay(t, s.yaml(map[string]string{"    heartbeat: 1s\n": fmt.Sprintf("    heartbeat: 1s\n    start: %q\n", s.db.Position(t))}))
	c := s.db.Conn(t)
	for i := range 5 {
		if _, err := c.Execute("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, 'order', ?, 'OrderCreated', '{}')",
			fmt.Sprintf("tls-%d", i), fmt.Sprintf("%d", i%2)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []string
	err := devbroker.ConsumeWith(ctx, []string{s.broker.Addr()}, `^outbox\.event\.order$`, func(r devbroker.Record) error {
		id, _ := r.Header("id")
		got = append(got, id)
		if len(got) == 5 {
			return devbroker.ErrStop
		}
		return nil
	}, s.broker.ClientOpts()...)
	if err != nil {
		t.Fatalf("consume: %v (got %v)\n%s", err, got, rr.logs.String())
	}
	logs := rr.logs.String()
	for _, secret := range []string{relayDBPassword, relayKafkaPassword} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs show a password")
		}
	}
}

// TestIntegrationTLSMistakes: each mistake stops `outboxrelay run` at once
// with exit code 1 and a last log line naming the setting to change, never
// a "transient failure" retried forever; `check` fails exactly the check
// concerned, with that fix, and its JSON never holds a secret.
func TestIntegrationTLSMistakes(t *testing.T) {
	t.Parallel()
	s := newSecuredSetup(t)
	otherCA := testcert.WriteFile(t, s.dir, "other-ca.pem", testcert.NewCA(t, "someone-else").PEM)
	wrongPW := testcert.WriteFile(t, s.dir, "wrong-password", []byte("not-the-password\n"))
	tests := []struct {
		name  string
		edit  map[string]string
		check string // the failing check
		want  string // in the error and the check's text
	}{
		{"kafka wrong password", map[string]string{filepath.Join(s.dir, "kafka-password"): wrongPW}, "kafka.sasl", "kafka.sasl.password"},
		{"kafka wrong CA", map[string]string{"    ca_file: " + s.kafkaCA: "    ca_file: " + otherCA}, "kafka.tls", "kafka.tls.ca_file"},
		{"kafka plaintext to TLS", map[string]string{"  tls:\n    enabled: true\n    ca_file: " + s.kafkaCA + "\n": ""}, "kafka.tls", "kafka.tls.enabled: true"},
		{"mysql wrong password", map[string]string{filepath.Join(s.dir, "db-password"): wrongPW}, "mysql.connect", "source.mysql.password"},
		{"mysql wrong CA", map[string]string{"      ca_file: " + s.files.CA: "      ca_file: " + otherCA}, "mysql.tls", "source.mysql.tls.ca_file"},
		{"mysql plaintext to TLS", map[string]string{"      mode: verify-identity\n      ca_file: " + s.files.CA: "      mode: disabled"}, "mysql.connect", "source.mysql.tls.mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// Each run its own checkpoint: a relay locks it.
			tt.edit[filepath.Join(s.dir, "checkpoint.json")] = filepath.Join(dir, "checkpoint.json")
			p := filepath.Join(dir, "relay.yaml")
			if err := os.WriteFile(p, []byte(s.yaml(tt.edit)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			var stdout, stderr bytes.Buffer
			code := cli.Main(ctx, []string{"run", "--config", p}, nil, &stdout, &stderr)
			took := time.Since(start)
			logs := stderr.String()
			if code != cli.ExitFailure {
				t.Fatalf("run: exit %d after %v, want %d\n%s", code, took, cli.ExitFailure, logs)
			}
			lines := strings.Split(strings.TrimSpace(logs), "\n")
			last := lines[len(lines)-1]
			t.Logf("run: exit %d after %v: %s", code, took.Round(time.Millisecond), last)
			if !strings.Contains(last, tt.want) {
				t.Errorf("last log line does not name %s", tt.want)
			}
			if strings.Contains(logs, "transient failure") {
				t.Errorf("the relay retried a permanent failure:\n%s", logs)
			}

			code, out, _ := runCLI(ctx, "check", "--config", p, "--json")
			var res struct {
				Checks []preflight.Check `json:"checks"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("check --json: %v\n%s", err, out)
			}
			if got := failing(res.Checks); code != cli.ExitFailure || strings.Join(got, ",") != tt.check {
				logChecks(t, res.Checks)
				t.Fatalf("check: exit %d, failing %v; want exactly %s", code, got, tt.check)
			}
			if c := checkNamed(t, res.Checks, tt.check); !strings.Contains(c.Detail+" "+c.Fix, tt.want) {
				t.Errorf("%s does not name %s: %s | %s", tt.check, tt.want, c.Detail, c.Fix)
			}
			for _, secret := range []string{relayDBPassword, relayKafkaPassword, "not-the-password"} {
				if strings.Contains(out+logs, secret) {
					t.Errorf("run's log or check --json shows a password")
				}
			}
		})
	}
}

// TestIntegrationTLSCheck: the secured setup passes every check, with the
// handshakes and the authentication reported apart.
func TestIntegrationTLSCheck(t *testing.T) {
	t.Parallel()
	s := newSecuredSetup(t)
	code, checks := runCheck(t, s.yaml(nil))
	if code != 0 || len(failing(checks)) > 0 {
		t.Fatalf("exit %d, failing %v", code, failing(checks))
	}
	for name, want := range map[string]string{"mysql.tls": "verified", "kafka.tls": "verified against " + s.kafkaCA, "kafka.sasl": "authenticated as outboxrelay with SCRAM-SHA-512"} {
		if c := checkNamed(t, checks, name); c.Warning || !strings.Contains(c.Detail, want) {
			t.Errorf("%s: %q (warning %v), want %q", name, c.Detail, c.Warning, want)
		}
	}
}
