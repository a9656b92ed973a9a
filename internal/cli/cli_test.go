package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const base = `source:
  type: mysql
  mysql:
    addr: 127.0.0.1:1
    user: relay
    password: hunter2
    server_id: 9
    tables: [shop.outbox]
kafka:
  brokers: [127.0.0.1:1]
checkpoint:
  file:
    path: CPPATH
`

// TestConfigErrorsExitNonZero runs the command line on bad configurations:
// each must exit with the usage code and name the key, before connecting
// to anything.
func TestConfigErrorsExitNonZero(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(string) string
		env     []string
		wantMsg []string
	}{
		{"unknown key", func(s string) string { return s + "surprise: true\n" }, nil, []string{"surprise"}},
		{"unknown nested key", func(s string) string { return strings.Replace(s, "    user: relay", "    user: relay\n    usr: x", 1) }, nil, []string{"usr"}},
		{"missing server_id", func(s string) string { return strings.Replace(s, "    server_id: 9\n", "", 1) }, nil, []string{"source.mysql.server_id"}},
		{"bad regex", func(s string) string { return strings.Replace(s, "[shop.outbox]", `["/shop\\.(outbox/"]`, 1) }, nil, []string{"source.mysql.tables", "regular expression"}},
		{"unknown env var", func(s string) string { return s }, []string{"OUTBOXRELAY_KAFKA_BROKRES=x"}, []string{"OUTBOXRELAY_KAFKA_BROKRES"}},
		{"bad start position", func(s string) string {
			return strings.Replace(s, "    server_id: 9", "    server_id: 9\n    start: yesterday", 1)
		}, nil, []string{"source.mysql.start"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := strings.ReplaceAll(tt.mutate(base), "CPPATH", filepath.Join(dir, "cp.json"))
			path := filepath.Join(dir, "relay.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := Main(context.Background(), []string{"run", "--config", path}, tt.env, &out, &errb)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, ExitUsage, errb.String())
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q lacks %q", errb.String(), w)
				}
			}
			if strings.Contains(errb.String(), "hunter2") {
				t.Errorf("stderr leaks the password: %s", errb.String())
			}
		})
	}
}

func TestUsageAndVersion(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), nil, nil, &out, &errb); code != ExitUsage {
		t.Fatalf("no args: exit %d", code)
	}
	if code := Main(context.Background(), []string{"run"}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "--config is required") {
		t.Fatalf("run without --config: exit %d, %q", code, errb.String())
	}
	out.Reset()
	if code := Main(context.Background(), []string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "outboxrelay ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}

func TestCheckpointShowWithoutCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	_ = os.WriteFile(path, []byte(strings.ReplaceAll(base, "CPPATH", filepath.Join(dir, "cp.json"))), 0o600)
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"checkpoint", "show", "--config", path}, nil, &out, &errb)
	if code != ExitFailure || !strings.Contains(errb.String(), "no checkpoint stored") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
