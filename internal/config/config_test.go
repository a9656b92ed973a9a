package config

import (
	"strings"
	"testing"
	"time"
)

const valid = `
source:
  type: mysql
  mysql:
    addr: 127.0.0.1:3307
    user: relay
    password: s3cret
    server_id: 4242
    tables: [shop.outbox, "/shop\\.outbox_.*/"]
kafka:
  brokers: [127.0.0.1:9092]
checkpoint:
  file:
    path: /tmp/cp.json
`

func TestParseValidAndDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(valid), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source.MySQL.Start != "current" || c.Outbox.Topic != "outbox.event.${aggregatetype}" || c.Kafka.Compression != "lz4" || c.Log.Format != "json" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"unknown key", valid + "\nbogus: 1\n", nil, []string{"bogus"}},
		{"unknown nested key", strings.Replace(valid, "server_id: 4242", "server_id: 4242\n    serverid: 1", 1), nil, []string{"serverid"}},
		{"missing server_id", strings.Replace(valid, "server_id: 4242", "", 1), nil, []string{"source.mysql.server_id: required"}},
		{"bad regex", strings.Replace(valid, `/shop\\.outbox_.*/`, `/shop(/`, 1), nil, []string{"source.mysql.tables", "bad regular expression"}},
		{"bad compression", valid, []string{"OUTBOXRELAY_KAFKA_COMPRESSION=brotli"}, []string{"kafka.compression"}},
		{"unknown env", valid, []string{"OUTBOXRELAY_KAFKA_BROKER=x"}, []string{"OUTBOXRELAY_KAFKA_BROKER", "no such config key"}},
		{"bad env int", valid, []string{"OUTBOXRELAY_SOURCE_MYSQL_SERVER_ID=abc"}, []string{"source.mysql.server_id", "OUTBOXRELAY_SOURCE_MYSQL_SERVER_ID"}},
		{"bad duration", valid, []string{"OUTBOXRELAY_RELAY_SHUTDOWN_TIMEOUT=soon"}, []string{"relay.shutdown_timeout"}},
		{"missing source type", strings.Replace(valid, "type: mysql", "", 1), nil, []string{"source.type: required"}},
		{"ha without the kafka store", valid, []string{"OUTBOXRELAY_RELAY_HA_ENABLED=true", "OUTBOXRELAY_RELAY_NAME=r"}, []string{"relay.ha.enabled", "checkpoint.type: kafka", "relay.delivery: exactly-once"}},
		{"ha at-least-once", valid, []string{"OUTBOXRELAY_RELAY_HA_ENABLED=true", "OUTBOXRELAY_RELAY_NAME=r", "OUTBOXRELAY_CHECKPOINT_TYPE=kafka"}, []string{"relay.ha.enabled: needs relay.delivery: exactly-once"}},
		{"ha heartbeat", valid, []string{"OUTBOXRELAY_RELAY_HA_ENABLED=true", "OUTBOXRELAY_RELAY_NAME=r", "OUTBOXRELAY_CHECKPOINT_TYPE=kafka", "OUTBOXRELAY_RELAY_DELIVERY=exactly-once", "OUTBOXRELAY_RELAY_HA_HEARTBEAT_INTERVAL=5s"}, []string{"relay.ha.heartbeat_interval"}},
		{"empty file", "", nil, []string{"source.type: required", "kafka.brokers: required", "checkpoint.file.path: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

// TestParseHA: standby instances with their defaults.
func TestParseHA(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(valid), []string{"OUTBOXRELAY_RELAY_HA_ENABLED=true", "OUTBOXRELAY_RELAY_NAME=orders", "OUTBOXRELAY_CHECKPOINT_TYPE=kafka", "OUTBOXRELAY_RELAY_DELIVERY=exactly-once"})
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Relay.HA; !h.Enabled || h.Topic != "outboxrelay.lease.orders" || h.SessionTimeout != 10*time.Second || h.HeartbeatInterval != time.Second {
		t.Fatalf("relay.ha: %+v", h)
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(valid), []string{
		"OUTBOXRELAY_SOURCE_MYSQL_PASSWORD=fromenv",
		"OUTBOXRELAY_SOURCE_MYSQL_SERVER_ID=7",
		"OUTBOXRELAY_KAFKA_BROKERS=a:1, b:2",
		"OUTBOXRELAY_RELAY_SHUTDOWN_TIMEOUT=5s",
		"OUTBOXRELAY_OUTBOX_COLUMNS_AGGREGATE_ID=agg",
		"UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source.MySQL.Password != "fromenv" || c.Source.MySQL.ServerID != 7 || len(c.Kafka.Brokers) != 2 || c.Kafka.Brokers[1] != "b:2" ||
		c.Relay.ShutdownTimeout != 5*time.Second || c.Outbox.Columns.AggregateID != "agg" {
		t.Fatalf("overrides not applied: %+v", c)
	}
}

const validPostgres = `
source:
  type: postgres
  postgres:
    dsn: postgres://relay:s3cret@db:5432/shop
    tables: [public.outbox]
    message_prefixes: [outbox]
kafka:
  brokers: [127.0.0.1:9092]
checkpoint:
  file:
    path: /tmp/cp.json
`

func TestParsePostgres(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(validPostgres), []string{"OUTBOXRELAY_SOURCE_POSTGRES_HEARTBEAT=30s"})
	if err != nil {
		t.Fatal(err)
	}
	pg := c.Source.Postgres
	if pg.Slot != "outboxrelay" || pg.Publication != "outboxrelay" || pg.Create != "auto" || pg.StatusInterval != 10*time.Second || pg.Heartbeat != 30*time.Second {
		t.Fatalf("postgres defaults/env not applied: %+v", pg)
	}
	if got := c.Source.OutboxTables(); len(got) != 1 || got[0] != "public.outbox" {
		t.Fatalf("Tables() = %v", got)
	}
	for _, tt := range []struct {
		name, yaml string
		env        []string
		want       string
	}{
		{"missing dsn", strings.Replace(validPostgres, "    dsn: postgres://relay:s3cret@db:5432/shop\n", "", 1), nil, "source.postgres.dsn: required"},
		{"bad dsn", strings.Replace(validPostgres, ":5432/", ":port/", 1), nil, "source.postgres.dsn"},
		{"bad create", validPostgres, []string{"OUTBOXRELAY_SOURCE_POSTGRES_CREATE=maybe"}, "source.postgres.create"},
		{"bad slot", validPostgres, []string{"OUTBOXRELAY_SOURCE_POSTGRES_SLOT=Bad-Slot"}, "source.postgres.slot"},
		{"unknown source type", strings.Replace(validPostgres, "type: postgres", "type: oracle", 1), nil, "not one of mysql, postgres"},
	} {
		_, err := Parse([]byte(tt.yaml), tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error leaks the password: %v", tt.name, err)
		}
	}
}

func TestEnvNamesCoverKeys(t *testing.T) {
	t.Parallel()
	names := EnvNames()
	for key, env := range map[string]string{
		"source.mysql.server_id":    "OUTBOXRELAY_SOURCE_MYSQL_SERVER_ID",
		"source.postgres.dsn":       "OUTBOXRELAY_SOURCE_POSTGRES_DSN",
		"kafka.max_message_bytes":   "OUTBOXRELAY_KAFKA_MAX_MESSAGE_BYTES",
		"checkpoint.file.path":      "OUTBOXRELAY_CHECKPOINT_FILE_PATH",
		"outbox.columns.payload":    "OUTBOXRELAY_OUTBOX_COLUMNS_PAYLOAD",
		"relay.checkpoint_interval": "OUTBOXRELAY_RELAY_CHECKPOINT_INTERVAL",
	} {
		if names[key] != env {
			t.Errorf("EnvNames()[%s] = %q, want %q", key, names[key], env)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(validPostgres))
	f.Add([]byte("source: [1, 2]"))
	f.Add([]byte("kafka:\n  brokers: {a: b}"))
	// Aliases, merge keys and every kind of walk error (yamlerrors.go).
	f.Add([]byte("a: &x {b: 1}\nc: *x\nsource: {<<: [*x, *x], type: mysql}\n"))
	f.Add([]byte("source:\n  mysql:\n    password: [x]\n    server_id: -1.5\n    server_id: 1\noutbox:\n  tables: {a.b: {fields: [{column: c}]}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, nil)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned a config (%v) and the error %v", c != nil, err)
		}
		if err == nil && c.Source.Type != "mysql" && c.Source.Type != "postgres" {
			t.Fatalf("accepted a config without a known source: %+v", c)
		}
	})
}

// TestExactlyOnceLimits: the settings exactly-once combines are checked
// against each other, each error naming the key to change.
func TestExactlyOnceLimits(t *testing.T) {
	t.Parallel()
	eos := strings.Replace(valid, "checkpoint:\n  file:\n    path: /tmp/cp.json\n",
		"checkpoint:\n  type: kafka\nrelay:\n  name: orders\n  delivery: exactly-once\n", 1)
	if _, err := Parse([]byte(eos), nil); err != nil {
		t.Fatalf("the defaults must be valid together: %v", err)
	}
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"interval over half the timeout", []string{"OUTBOXRELAY_RELAY_COMMIT_INTERVAL=40s", "OUTBOXRELAY_KAFKA_TRANSACTION_TIMEOUT=60s", "OUTBOXRELAY_METRICS_STALL_TIMEOUT=5m"}, "relay.commit_interval: 40s is more than half of kafka.transaction_timeout"},
		{"stall timeout under two intervals", []string{"OUTBOXRELAY_RELAY_COMMIT_INTERVAL=10s", "OUTBOXRELAY_METRICS_STALL_TIMEOUT=15s"}, "metrics.stall_timeout: 15s is less than twice relay.commit_interval"},
		{"no file store", nil, "set checkpoint.type: kafka"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y := eos
			if tt.want == "set checkpoint.type: kafka" {
				y = strings.Replace(valid, "checkpoint:", "relay:\n  name: orders\n  delivery: exactly-once\ncheckpoint:", 1)
			}
			_, err := Parse([]byte(y), tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	// At-least-once does not tie the stall timeout to the interval.
	alo := strings.Replace(eos, "delivery: exactly-once", "delivery: at-least-once", 1)
	if _, err := Parse([]byte(alo), []string{"OUTBOXRELAY_RELAY_COMMIT_INTERVAL=10s", "OUTBOXRELAY_METRICS_STALL_TIMEOUT=15s"}); err != nil {
		t.Fatalf("at-least-once: %v", err)
	}
}
