package postgres

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	c := Config{DSN: "postgres://relay:s3cret@db:5432/shop", Tables: []string{"public.outbox"}}
	c.SetDefaults()
	if c.Slot != "outboxrelay" || c.Publication != "outboxrelay" || c.Create != CreateAuto || c.StatusInterval != 10*time.Second || c.Heartbeat != 0 || c.ConnectTimeout != 10*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// Messages only: no tables needed.
	m := Config{DSN: "host=db user=relay", MessagePrefixes: []string{"outbox"}}
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no dsn", func(c *Config) { c.DSN = "" }, "dsn: required"},
		{"bad dsn", func(c *Config) { c.DSN = "postgres://relay:s3cret@db:notaport/shop" }, "dsn: not a valid"},
		{"bad kv dsn", func(c *Config) { c.DSN = "host=db password=s3cret port=x" }, "dsn: not a valid"},
		{"bad slot", func(c *Config) { c.Slot = "My-Slot" }, "slot:"},
		{"long publication", func(c *Config) { c.Publication = strings.Repeat("p", 64) }, "publication:"},
		{"no tables", func(c *Config) { c.Tables = nil }, "tables:"},
		{"bad create", func(c *Config) { c.Create = "sometimes" }, "create:"},
		{"short status", func(c *Config) { c.StatusInterval = time.Millisecond }, "status_interval:"},
		{"short heartbeat", func(c *Config) { c.Heartbeat = time.Millisecond }, "heartbeat:"},
		{"heartbeat prefix", func(c *Config) { c.MessagePrefixes = []string{HeartbeatPrefix} }, "message_prefixes:"},
		{"empty prefix", func(c *Config) { c.MessagePrefixes = []string{""} }, "message_prefixes:"},
		{"bad start", func(c *Config) { c.Start = "earliest" }, "start:"},
		{"snapshot without create", func(c *Config) { c.Start, c.Create = StartSnapshot, CreateNever }, "start: snapshot needs create: auto"},
		{"snapshot without tables", func(c *Config) { c.Start, c.Tables, c.MessagePrefixes = StartSnapshot, nil, []string{"outbox"} }, "start: snapshot reads the outbox tables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{DSN: "postgres://relay:s3cret@db:5432/shop", Tables: []string{"public.outbox"}}
			c.SetDefaults()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestStartSnapshotValid(t *testing.T) {
	t.Parallel()
	c := Config{DSN: "postgres://relay@db:5432/shop", Tables: []string{"public.outbox"}}
	c.SetDefaults()
	if c.Start != StartCurrent {
		t.Fatalf("default start %q, want current", c.Start)
	}
	c.Start = StartSnapshot
	if err := c.Validate(); err != nil {
		t.Fatalf("start: snapshot: %v", err)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://relay:s3cret@db:5432/shop?sslmode=disable", "postgres://relay:xxxxx@db:5432/shop?sslmode=disable"},
		{"postgres://relay@db/shop", "postgres://relay@db/shop"},
		{"host=db user=relay password=s3cret dbname=shop", "host=db user=relay password=xxxxx dbname=shop"},
		{"host=db password = 'se cr\\'et' dbname=shop", "host=db password = xxxxx dbname=shop"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	err := hidePassword(errString("connect postgres://relay:s3cret@db/shop failed: s3cret"), "postgres://relay:s3cret@db/shop")
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("hidePassword left the password: %v", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
