package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
)

// TestIntegrationMySQLRepublish: `outboxrelay republish` publishes exactly
// the rows chosen by id range, time range or ids, mapped as the relay
// maps them and marked; a dry run produces nothing and counts right; a
// running relay's lock refuses it unless --force.
func TestIntegrationMySQLRepublish(t *testing.T) {
	t.Parallel()
	runRepublish(t, mariaTableTarget(t))
}

// TestIntegrationPostgresRepublish is the same on Postgres.
func TestIntegrationPostgresRepublish(t *testing.T) {
	t.Parallel()
	runRepublish(t, postgresTableTarget(t))
}

func runRepublish(t *testing.T, tg tableTarget) {
	broker := startBroker(t, 3)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, "relay.yaml", tg.yaml(broker.Addr(), filepath.Join(dir, "checkpoint.json")))
	// Rows written while no relay ran: as after a lost log. Each second
	// of 2026-01-01 00:00 has one row (r001 at :01 … r030 at :30).
	for i := 1; i <= 30; i++ {
		tg.insert(t, fmt.Sprintf("r%03d", i), fmt.Sprintf("a%d", i%4), tg.at(i))
	}
	ctx := context.Background()
	republish := func(args ...string) (int, string, string) {
		return runCLI(ctx, append([]string{"republish", "--config", cfgPath}, args...)...)
	}

	code, out, errOut := republish("--from-id", "r005", "--to-id", "r010", "--dry-run")
	if code != 0 || !strings.Contains(out, "6 rows, id r005 … r010") || !strings.Contains(out, "dry run: 6 rows would be published") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "2026-01-01 00:00:05") || !strings.Contains(out, "2026-01-01 00:00:10") {
		t.Errorf("dry run does not show the time span 00:05 … 00:10:\n%s", out)
	}
	// Had the dry run produced, r005 … r010 would arrive twice below.

	want := map[string]int{}
	for _, c := range []struct {
		args []string
		ids  []string
	}{
		{[]string{"--from-id", "r005", "--to-id", "r010"}, []string{"r005", "r006", "r007", "r008", "r009", "r010"}},
		{[]string{"--since", "2026-01-01T00:00:20Z", "--until", "2026-01-01T00:00:25Z"}, []string{"r020", "r021", "r022", "r023", "r024"}},
		{[]string{"--ids", "r030,r001, r015,nope"}, []string{"r001", "r015", "r030"}},
	} {
		code, out, errOut := republish(c.args...)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("republished %d records", len(c.ids))) {
			t.Fatalf("republish %v: exit %d\n%s%s", c.args, code, out, errOut)
		}
		for _, id := range c.ids {
			want[id]++
		}
	}
	if code, _, errOut := republish("--ids", "nope"); code != 1 || !strings.Contains(errOut, "no outbox row matches") {
		t.Errorf("republish of no row: exit %d, %q", code, errOut)
	}
	if code, _, errOut := republish(); code != 2 || !strings.Contains(errOut, "choose the rows") {
		t.Errorf("republish without a selection: exit %d, %q", code, errOut)
	}

	// A running relay holds the checkpoint's lock: refused, unless --force.
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan int, 1)
	runLog := &syncBuffer{}
	go func() {
		var out syncBuffer
		code := cli.Main(runCtx, []string{"run", "--config", cfgPath}, nil, &out, runLog)
		if code != 0 {
			t.Errorf("relay: exit %d: %s", code, runLog.String())
		}
		runDone <- code
	}()
	// Once it streams it holds the lock (trying earlier would race its
	// start: a republish holds the lock while it produces).
	(&runningRelay{logs: runLog}).waitLog(t, "streaming")
	if code, _, errOut := republish("--ids", "r002"); code != 1 || !strings.Contains(errOut, "refused") || !strings.Contains(errOut, "a relay is running on this checkpoint") {
		t.Fatalf("republish beside a running relay: exit %d, %q", code, errOut)
	}
	if code, out, errOut := republish("--ids", "r003", "--force"); code != 0 || !strings.Contains(out, "republished 1 records") {
		t.Fatalf("republish --force: exit %d\n%s%s", code, out, errOut)
	}
	want["r003"]++
	stop()
	if code := <-runDone; code != 0 {
		t.Fatalf("relay exit %d", code)
	}

	// Exactly the chosen rows, mapped, marked, without log positions. The
	// relay's own records (MySQL starts before the rows) are not marked.
	idle, cancel := context.WithTimeout(ctx, 30*time.Second)
	recs, err := devbroker.CollectUntilIdle(idle, []string{broker.Addr()}, `.*`, 2*time.Second)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range recs {
		if v, ok := r.Header(cli.HeaderRepublish); !ok || v != "true" {
			if _, ok := r.Header(outbox.HeaderPosition); !ok {
				t.Errorf("a record neither republished nor from the log: %s", r)
			}
			continue
		}
		id, _ := r.Header("id")
		got[id]++
		n := 0
		fmt.Sscanf(id, "r%d", &n)
		if r.Topic != "outbox.event.order" || string(r.Key) != fmt.Sprintf("a%d", n%4) || string(r.Value) != fmt.Sprintf(`{"id":%q}`, id) {
			t.Errorf("republished record not mapped as the relay maps: %s", r)
		}
		if typ, _ := r.Header("type"); typ != "created" {
			t.Errorf("republished record lacks its type header: %s", r)
		}
		if _, ok := r.Header(outbox.HeaderPosition); ok {
			t.Errorf("republished record carries a log position: %s", r)
		}
	}
	for id, n := range want {
		if got[id] != n {
			t.Errorf("row %s: %d republished records, want %d", id, got[id], n)
		}
	}
	for id := range got {
		if want[id] == 0 {
			t.Errorf("row %s was republished but not chosen", id)
		}
	}
}
