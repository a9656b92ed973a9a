package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// TestIntegrationSagaRunScript runs run.sh, which starts servers of its
// own: the variables are required only as proof that this machine can run
// them (skip locally without, fail in CI). The script's own check decides.
func TestIntegrationSagaRunScript(t *testing.T) {
	testdb.Require(t, "RELAYTEST_MARIADB_ADDR", "scripts/mariadb.sh")
	testdb.Require(t, "RELAYTEST_POSTGRES_DSN", "scripts/postgres.sh")
	if testing.Short() {
		t.Skip("-short: the saga run takes about half a minute")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run.sh")
	cmd.Env = append(os.Environ(), "SAGA_ORDERS=40")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CONSISTENT:") {
		t.Fatalf("run.sh: %v\n%s", err, out)
	}
	t.Logf("%s", out[strings.LastIndex(string(out), "final state of every service"):])
}
