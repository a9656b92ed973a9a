package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
)

// TestIntegrationPostgresReplay: replay streams a range from a temporary
// copy of the relay's slot, without moving the slot or the checkpoint; a
// position older than the slot's confirmed_flush_lsn is refused with the
// earliest one possible.
func TestIntegrationPostgresReplay(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	db.Exec(t,
		"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	broker := startBroker(t, 2)
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfgPath, postgresRelayConfig(db, broker.Addr(), cpPath))
	p := makePlan(41, "rp", 40, 400, 8, 0)
	d := postgresDialect(db.Conn(t))

	// The relay delivers the first half, then stops.
	relay := startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	p.write(t, d, 0, 20)
	first := p.committedBefore(20)
	collect(t, broker, first, time.Minute)
	relay.stop(t)
	cp := loadCheckpoint(t, cpPath).Position
	slotBefore := db.SlotFlush(t)

	// The second half is written while the relay is down, then replayed.
	p.write(t, d, 20, 40)
	code, out, errOut := runCLI(context.Background(), "replay", "--config", cfgPath, "--from", cp, "--topic-override", "replayed.events")
	if code != 0 {
		t.Fatalf("replay: exit %d: %s", code, errOut)
	}
	second := len(p.Want) - first
	if !strings.Contains(out, fmt.Sprintf("replayed %d records", second)) {
		t.Errorf("replay summary %q, want %d records", out, second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replayed, err := devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `^replayed\.events$`, time.Second)
	if err != nil || len(replayed) != second {
		t.Fatalf("replayed topic holds %d records (%v), want %d", len(replayed), err, second)
	}
	if id, _ := replayed[0].Header(outbox.HeaderID); !strings.HasPrefix(id, "rp-") {
		t.Errorf("replayed record id %q", id)
	}
	if got := db.SlotFlush(t); got != slotBefore || loadCheckpoint(t, cpPath).Position != cp {
		t.Errorf("replay moved the relay's slot (%s → %s) or checkpoint", slotBefore, got)
	}
	if n := db.QueryString(t, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name LIKE '"+db.Slot+"_replay_%'"); n != "0" {
		t.Errorf("%s temporary replay slots left behind", n)
	}

	// Before the slot's confirmed_flush_lsn: refused, naming the earliest.
	code, _, errOut = runCLI(context.Background(), "replay", "--config", cfgPath, "--from", "0/1")
	if code == 0 || !strings.Contains(errOut, "the earliest position a replay can start from is "+slotBefore) {
		t.Errorf("replay from 0/1: exit %d: %s", code, errOut)
	}

	// The relay itself still delivers the second half.
	relay = startRelay(t, postgresRelayConfig(db, broker.Addr(), cpPath))
	collect(t, broker, len(p.Want), time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}
