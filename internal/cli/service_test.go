package cli

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/config"
)

const pipelinesYAML = `
pipelines:
  - name: a
    source:
      type: mysql
      mysql: {addr: "127.0.0.1:1", user: relay, password: pw, server_id: 11, tables: [s1.outbox]}
  - name: b
    source:
      type: postgres
      postgres: {dsn: "postgres://relay@127.0.0.1:1/shop", tables: [public.outbox]}
kafka:
  brokers: [127.0.0.1:1]
checkpoint:
  type: kafka
relay:
  name: orders
  delivery: exactly-once
  ha:
    enabled: true
metrics:
  listen: 127.0.0.1:0
`

// TestServicePipelines: a config with pipelines wires one relay and one
// store per pipeline, each store keyed by the pipeline's relay name (so
// each its own position and transactional id), under one lease.
func TestServicePipelines(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]byte(pipelinesYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewService(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Relays) != 2 || len(s.Stores) != 2 || s.lease == nil || s.Metrics == nil {
		t.Fatalf("relays %d, stores %d, lease %v, metrics %v", len(s.Relays), len(s.Stores), s.lease != nil, s.Metrics != nil)
	}
	for i, want := range []string{"key orders.a", "key orders.b"} {
		if w := s.Stores[i].Where(); !strings.HasSuffix(w, want) {
			t.Errorf("pipeline %d's store is %s, want %s", i, w, want)
		}
	}
	// A standby in the group is ready, whatever it streams.
	s.Metrics.Member(true, "")
	s.Metrics.Active("a", true)
	if ok, why := s.Metrics.Ready(time.Now()); !ok {
		t.Fatalf("in the group, streaming a: not ready (%s)", why)
	}
}

// TestServiceOnePipeline: one pipeline without relay.ha is a plain relay
// under its pipeline's name, measured as one (not ready until it
// streams).
func TestServiceOnePipeline(t *testing.T) {
	t.Parallel()
	y := pipelinesYAML[:strings.Index(pipelinesYAML, "  - name: b")] + pipelinesYAML[strings.Index(pipelinesYAML, "kafka:"):]
	y = strings.Replace(y, "enabled: true", "enabled: false", 1)
	cfg, err := config.Parse([]byte(y), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewService(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Relays) != 1 || s.lease != nil || !strings.HasSuffix(s.Store.Where(), "key orders.a") {
		t.Fatalf("relays %d, lease %v, store %s", len(s.Relays), s.lease != nil, s.Store.Where())
	}
	if ok, why := s.Metrics.Ready(time.Now()); ok || !strings.Contains(why, "not connected") {
		t.Fatalf("one pipeline not streaming: ready %v (%s), want not ready, not connected", ok, why)
	}
}

// TestOtherCommandsRefusePipelines: only run knows pipelines.
func TestOtherCommandsRefusePipelines(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/relay.yaml"
	if err := os.WriteFile(path, []byte(pipelinesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	code := Main(context.Background(), []string{"checkpoint", "show", "--config", path}, nil, &out, &errb)
	if code == ExitOK || !strings.Contains(errb.String(), "pipelines: checkpoint show works on one pipeline") {
		t.Fatalf("checkpoint show on a pipelines config: exit %d, stderr %q", code, errb.String())
	}
}
