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
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// runCLI runs the command line in-process.
func runCLI(ctx context.Context, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := cli.Main(ctx, args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

// TestIntegrationMySQLPositionTools covers checkpoint show/set and replay
// against a real server.
func TestIntegrationMySQLPositionTools(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := filepath.Join(dir, "relay.yaml")
	p0 := db.Position(t)
	if err := os.WriteFile(cfgPath, []byte(mysqlRelayConfig(db, broker.Addr(), cpPath, p0)), 0o600); err != nil {
		t.Fatal(err)
	}

	// A running relay holds the checkpoint: `checkpoint set` is refused.
	ctx, stop := context.WithCancel(context.Background())
	runDone := make(chan int, 1)
	go func() {
		code, _, _ := runCLI(ctx, "run", "--config", cfgPath)
		runDone <- code
	}()
	p := makePlan(31, "pt", 40, 400, 8, 0)
	d := mysqlDialect(db.Conn(t))
	p.write(t, d, 0, 20)
	p1 := db.Position(t) // between transaction 20 and 21
	p.write(t, d, 20, 40)
	collect(t, broker, len(p.Want), time.Minute)
	code, _, errOut := runCLI(context.Background(), "checkpoint", "set", "--config", cfgPath, "--to", p0)
	if code == 0 || !strings.Contains(errOut, "a relay is running on this checkpoint") {
		t.Fatalf("set while running: exit %d, %q", code, errOut)
	}
	stop()
	if code := <-runDone; code != 0 {
		t.Fatalf("run exited %d after cancel", code)
	}

	// show: the stored position and the server's view.
	code, out, errOut := runCLI(context.Background(), "checkpoint", "show", "--config", cfgPath, "--json")
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	var shown struct {
		Position       string   `json:"position"`
		ServerPosition string   `json:"server_position"`
		BehindBytes    *int64   `json:"behind_bytes"`
		Notes          []string `json:"notes"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show --json: %v: %s", err, out)
	}
	if shown.Position == "" || shown.ServerPosition == "" || shown.BehindBytes == nil || *shown.BehindBytes < 0 || len(shown.Notes) == 0 {
		t.Fatalf("show --json lacks server facts: %s", out)
	}

	// set refuses positions the relay cannot resume from.
	file := strings.SplitN(p0, ":", 2)[0]
	inside := firstEventAt(t, db, file, p1, "Table_map")
	for _, bad := range []struct{ pos, want string }{
		{"mysql-bin.999999:4", "does not exist on this server yet"},
		{file + ":5", "does not start an event"},
		{inside, "inside a transaction"},
	} {
		code, _, errOut := runCLI(context.Background(), "checkpoint", "set", "--config", cfgPath, "--to", bad.pos)
		if code == 0 || !strings.Contains(errOut, bad.want) {
			t.Errorf("set --to %s: exit %d, %q; want refusal containing %q", bad.pos, code, errOut, bad.want)
		}
	}

	// --dry-run changes nothing; a real set moves the checkpoint back.
	before, _ := os.ReadFile(cpPath)
	code, out, errOut = runCLI(context.Background(), "checkpoint", "set", "--config", cfgPath, "--to", p0, "--dry-run")
	if after, _ := os.ReadFile(cpPath); code != 0 || !bytes.Equal(before, after) || !strings.Contains(out, "dry run") {
		t.Fatalf("dry run: exit %d, out %q, err %q, file changed %v", code, out, errOut, !bytes.Equal(before, after))
	}
	code, out, errOut = runCLI(context.Background(), "checkpoint", "set", "--config", cfgPath, "--to", p0)
	if code != 0 {
		t.Fatalf("set --to %s: exit %d: %s", p0, code, errOut)
	}
	if cp := loadCheckpoint(t, cpPath); !strings.HasPrefix(cp.Position, p0+"@") {
		t.Fatalf("checkpoint after set = %s, want %s with its MariaDB GTID position", cp.Position, p0)
	}

	// replay the first 20 transactions into another topic; the main
	// checkpoint does not move.
	cpBefore, _ := os.ReadFile(cpPath)
	code, out, errOut = runCLI(context.Background(), "replay", "--config", cfgPath, "--from", p0, "--to", p1, "--topic-override", "replayed.events")
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	wantN := p.committedBefore(20)
	if !strings.Contains(out, fmt.Sprintf("replayed %d records", wantN)) {
		t.Errorf("replay summary %q, want %d records", out, wantN)
	}
	if cpAfter, _ := os.ReadFile(cpPath); !bytes.Equal(cpBefore, cpAfter) {
		t.Error("replay changed the relay's checkpoint")
	}
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replayed, err := devbroker.CollectUntilIdle(rctx, []string{broker.Addr()}, `^replayed\.events$`, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	original := map[string]devbroker.Record{}
	for _, r := range collectAll(t, broker) {
		id, _ := r.Header(outbox.HeaderID)
		original[id] = r
	}
	if len(replayed) != wantN {
		t.Fatalf("replayed %d records, want %d", len(replayed), wantN)
	}
	for _, r := range replayed {
		id, _ := r.Header(outbox.HeaderID)
		o, ok := original[id]
		if !ok {
			t.Fatalf("replayed record %s was never produced", id)
		}
		for _, h := range []string{outbox.HeaderPosition, outbox.HeaderIndex, outbox.HeaderType} {
			a, _ := r.Header(h)
			b, _ := o.Header(h)
			if a != b {
				t.Errorf("record %s: replayed header %s = %q, original %q", id, h, a, b)
			}
		}
		if string(r.Key) != string(o.Key) || string(r.Value) != string(o.Value) {
			t.Errorf("record %s: replayed key/value differ", id)
		}
	}
}

// firstEventAt returns the position of the first event of type typ at or
// after from in file.
func firstEventAt(t *testing.T, db *testdb.MySQL, file, from, typ string) string {
	t.Helper()
	off := strings.SplitN(from, ":", 2)[1]
	c := db.Conn(t)
	r := testdb.Exec(t, c, fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %s LIMIT 200", file, off))
	for i := 0; i < r.RowNumber(); i++ {
		et, _ := r.GetStringByName(i, "Event_type")
		if et == typ {
			pos, _ := r.GetIntByName(i, "Pos")
			return fmt.Sprintf("%s:%d", file, pos)
		}
	}
	t.Fatalf("no %s event after %s", typ, from)
	return ""
}
