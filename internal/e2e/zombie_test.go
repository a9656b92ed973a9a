package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// A zombie: the active exactly-once relay is paused (SIGSTOP) while rows
// keep coming, a second instance with the same relay.name starts — its
// producer epoch fences the first — and the first is resumed (SIGCONT).
// The first must stop at once with the fenced exit code, having made
// nothing visible and moved no position; a read_committed consumer sees
// every row exactly once, in per-key order.

type zombieTarget struct {
	yaml           func(broker, cpPath string) string
	dialect        func(t testing.TB) dialect
	serverPosition func(t testing.TB) string
	compare        func(a, b string) (int, error)
	prepare        func(t testing.TB)
}

func runZombie(t *testing.T, tg zombieTarget) {
	bin := relayBinary(t)
	broker, err := devbroker.Start(devbroker.Options{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(tg.yaml(broker.Addr(), filepath.Join(dir, "unused.json"))), 0o600); err != nil {
		t.Fatal(err)
	}
	const name = "zombie"
	env := exactlyOnceEnv(name)
	store := kafkaPositions(t, broker.Addr(), name)
	if tg.prepare != nil {
		tg.prepare(t)
	}
	position := func() string { return loadPosition(t, store) }
	waitPosition := func(what string, ok func(string) bool, logs ...*child) string {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			if p := position(); ok(p) {
				return p
			}
			if time.Now().After(deadline) {
				var b strings.Builder
				for _, c := range logs {
					l, _ := os.ReadFile(c.log)
					b.Write(l)
				}
				t.Fatalf("%s: position %q after 90s; logs:\n%s", what, position(), b.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	a := startChild(t, bin, cfgPath, "", filepath.Join(dir, "a.log"), env...)
	defer func() { _ = a.cmd.Process.Kill() }()
	started := waitPosition("the first instance stores its start", func(p string) bool { return p != "" }, a)

	p := makePlan(31, "z", 240, 2400, 24, 20)
	writerDone := make(chan struct{})
	d := tg.dialect(t)
	go func() {
		defer close(writerDone)
		for i := range p.Txns {
			p.write(t, d, i, i+1)
			time.Sleep(25 * time.Millisecond)
		}
	}()
	// The first instance streams and commits, then is paused mid-stream.
	waitPosition("the first instance commits", func(s string) bool { return s != started }, a)
	time.Sleep(300 * time.Millisecond)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := position()
	t.Logf("paused the first instance at %s", paused)

	b := startChild(t, bin, cfgPath, "", filepath.Join(dir, "b.log"), env...)
	defer func() { _ = b.cmd.Process.Kill() }()
	took := waitPosition("the second instance takes over", func(s string) bool { return s != paused }, a, b)
	t.Logf("the second instance committed %s", took)

	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.done:
		var exit *exec.ExitError
		log, _ := os.ReadFile(a.log)
		if !errors.As(err, &exit) || exit.ExitCode() != 3 || !strings.Contains(string(log), "fenced") {
			t.Fatalf("the resumed zombie exited with %v, want exit code 3 (fenced); log:\n%s", err, log)
		}
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		t.Logf("the resumed zombie exited 3: %s", lines[len(lines)-1])
	case <-time.After(60 * time.Second):
		log, _ := os.ReadFile(a.log)
		t.Fatalf("the resumed zombie did not stop within 60s; log:\n%s", log)
	}

	<-writerDone
	end := tg.serverPosition(t)
	waitPosition("the second instance reaches the end of the writes", func(s string) bool {
		c, err := tg.compare(s, end)
		return s != "" && err == nil && c >= 0
	}, b)
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		if err != nil {
			log, _ := os.ReadFile(b.log)
			t.Fatalf("the second instance exited with %v after SIGTERM; log:\n%s", err, log)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the second instance did not exit within 60s of SIGTERM")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `outbox\.event\..*`, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep := analyzeCrash(t, recs, p.Want, nil, map[string]bool{}, tg.compare)
	t.Logf("zombie: %d records, %d distinct, lost %d, unexpected %d, duplicates %d, per-key order violations %d",
		rep.records, rep.distinct, rep.lost, rep.unexpected, rep.duplicates, rep.orderViolations)
	if rep.lost != 0 || rep.unexpected != 0 || rep.duplicates != 0 || rep.orderViolations != 0 {
		t.Errorf("want 0 lost, 0 unexpected, 0 duplicates, 0 order violations")
	}
}

// TestIntegrationZombieMySQL: the zombie test on MariaDB (the second
// instance's replica connection, with the same server_id, makes the
// server drop the first's).
func TestIntegrationZombieMySQL(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	runZombie(t, zombieTarget{
		yaml:           func(broker, cpPath string) string { return mysqlRelayConfig(db, broker, cpPath, "current") },
		dialect:        func(t testing.TB) dialect { return mysqlDialect(db.Conn(t)) },
		serverPosition: db.Position,
		compare:        mysqlCompare,
	})
}

// TestIntegrationZombiePostgres: the zombie test on a Postgres slot, which
// the paused instance still holds: the second disconnects it.
func TestIntegrationZombiePostgres(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	runZombie(t, zombieTarget{
		yaml:    func(broker, cpPath string) string { return postgresRelayConfig(db, broker, cpPath) },
		dialect: func(t testing.TB) dialect { return postgresDialect(db.Conn(t)) },
		serverPosition: func(t testing.TB) string {
			return db.QueryString(t, "SELECT pg_current_wal_lsn()::text")
		},
		compare: postgresCompare,
		prepare: func(t testing.TB) {
			db.Exec(t,
				"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
				"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
		},
	})
}
