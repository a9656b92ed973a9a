package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/outbox"
)

// TestCheckUnreachable: with nothing to connect to, check fails the
// connection checks (each with a fix), exits 1, never leaks the password,
// and --json is valid.
func TestCheckUnreachable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	cfg := strings.ReplaceAll(base, "CPPATH", filepath.Join(dir, "cp.json"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"check", "--config", path, "--json"}, nil, &out, &errb)
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d; stderr %s", code, ExitFailure, errb.String())
	}
	var res checkOutput
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	failed := map[string]string{}
	for _, c := range res.Checks {
		if !c.OK {
			failed[c.Name] = c.Fix
		}
	}
	for _, name := range []string{"mysql.connect", "kafka.connect"} {
		if fix, ok := failed[name]; !ok || fix == "" {
			t.Errorf("%s: failed=%v fix=%q", name, ok, fix)
		}
	}
	if _, ok := failed["checkpoint"]; ok || res.OK {
		t.Errorf("checkpoint in a writable directory must pass; ok=%v", res.OK)
	}
	if strings.Contains(out.String(), "hunter2") {
		t.Error("the output leaks the password")
	}

	out.Reset()
	if code := Main(context.Background(), []string{"check", "--config", path}, nil, &out, &errb); code != ExitFailure ||
		!strings.Contains(out.String(), "✗ mysql.connect") || !strings.Contains(out.String(), "fix: ") {
		t.Errorf("text output (exit %d):\n%s", code, out.String())
	}
	if code := Main(context.Background(), []string{"check"}, nil, &out, &errb); code != ExitUsage {
		t.Errorf("check without --config: exit %d", code)
	}
}

// TestCheckCheckpointDirectory: a checkpoint path whose directory is
// missing fails with the mkdir to run.
func TestCheckCheckpointDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	cfg := strings.ReplaceAll(base, "CPPATH", filepath.Join(dir, "missing", "cp.json"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	Main(context.Background(), []string{"check", "--config", path, "--json"}, nil, &out, &errb)
	var res checkOutput
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if c := res.Checks[1]; c.Name != "checkpoint" || c.OK || !strings.Contains(c.Fix, "mkdir -p "+filepath.Join(dir, "missing")) {
		t.Errorf("checkpoint check: %+v", c)
	}
}

func TestKafkaTargets(t *testing.T) {
	t.Parallel()
	c := outbox.Config{}
	c.Topic = "events.${aggregatetype}.v1"
	c.OnBadRow = outbox.PolicyDeadLetter
	c.DeadLetterTopic = "outbox.dlq"
	c.Tables = map[string]outbox.Mapping{"shop.audit": {Topic: "audit"}}
	tg := kafkaTargets(c)
	if strings.Join(tg.Topics, ",") != "audit,outbox.dlq" {
		t.Errorf("fixed topics %v", tg.Topics)
	}
	if len(tg.Patterns) != 1 {
		t.Fatalf("patterns %v", tg.Patterns)
	}
	p := tg.Patterns[0]
	for s, want := range map[string]bool{"events.order.v1": true, "events.a.b.v1": true, "events..v1": false, "eventsXorder.v1": false, "events.order.v2": false} {
		if p.MatchString(s) != want {
			t.Errorf("%s matches %q: %v, want %v", p, s, !want, want)
		}
	}
}
