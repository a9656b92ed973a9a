package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const basePostgres = `source:
  type: postgres
  postgres:
    dsn: postgres://relay:hunter2@127.0.0.1:1/shop
    tables: [public.outbox]
kafka:
  brokers: [127.0.0.1:1]
checkpoint:
  file:
    path: CPPATH
`

// TestPostgresConfigErrors: a bad postgres source section exits with the
// usage code naming the key, without connecting and without the password.
func TestPostgresConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, from, to, want string
	}{
		{"missing dsn", "    dsn: postgres://relay:hunter2@127.0.0.1:1/shop\n", "", "source.postgres.dsn: required"},
		{"bad dsn", "127.0.0.1:1/", "127.0.0.1:notaport/", "source.postgres.dsn"},
		{"bad slot", "    tables:", "    slot: Not-Valid\n    tables:", "source.postgres.slot"},
		{"bad create", "    tables:", "    create: sometimes\n    tables:", "source.postgres.create"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := strings.ReplaceAll(strings.Replace(basePostgres, tt.from, tt.to, 1), "CPPATH", filepath.Join(dir, "cp.json"))
			path := filepath.Join(dir, "relay.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if code := Main(context.Background(), []string{"run", "--config", path}, nil, &out, &errb); code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, ExitUsage, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.want)
			}
			if strings.Contains(errb.String(), "hunter2") {
				t.Errorf("stderr leaks the password: %s", errb.String())
			}
		})
	}
}

func TestCheckpointShowWithoutCheckpointPostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	_ = os.WriteFile(path, []byte(strings.ReplaceAll(basePostgres, "CPPATH", filepath.Join(dir, "cp.json"))), 0o600)
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"checkpoint", "show", "--config", path}, nil, &out, &errb)
	if code != ExitFailure || !strings.Contains(errb.String(), "confirmed_flush_lsn") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
