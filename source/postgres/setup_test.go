package postgres

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/source"
)

func TestCheckSlot(t *testing.T) {
	t.Parallel()
	cfg := &Config{Slot: "relay"}
	good := slotInfo{plugin: "pgoutput", slotType: "logical", database: "shop", walStatus: "reserved", confirmedFlush: 0x100}
	if err := checkSlot(good, cfg, "shop"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		mod  func(*slotInfo)
		want string
	}{
		{"physical", func(s *slotInfo) { s.slotType, s.plugin = "physical", "" }, "logical slot with plugin pgoutput"},
		{"other plugin", func(s *slotInfo) { s.plugin = "wal2json" }, `plugin "wal2json"`},
		{"other database", func(s *slotInfo) { s.database = "billing" }, `belongs to database "billing"`},
		{"lost", func(s *slotInfo) { s.walStatus = "lost" }, "wal_status = lost"},
	} {
		s := good
		tt.mod(&s)
		err := checkSlot(s, cfg, "shop")
		if err == nil || !source.IsPermanent(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want a permanent error with %q", tt.name, err, tt.want)
		}
	}
}

func TestStartPosition(t *testing.T) {
	t.Parallel()
	cfg := &Config{Slot: "relay"}
	slot := slotInfo{confirmedFlush: 0x1_0000_0100}
	si := serverInfo{walEnd: 0x1_0000_9000}
	for _, tt := range []struct {
		from string
		want Position
		errs []string
	}{
		{from: "", want: Position{LSN: 0x1_0000_0100}},                                    // no checkpoint: the slot's own position
		{from: "1/100", want: Position{LSN: 0x1_0000_0100}},                               // checkpoint at the slot's flush
		{from: "1/200", want: Position{LSN: 0x1_0000_0200}},                               // checkpoint ahead of the flush (ack not yet sent)
		{from: "1/100+7", want: Position{LSN: 0x1_0000_0100, Rows: 7}},                    // inside the transaction committing at the flush
		{from: "1/FF", errs: []string{"1/FF", "1/100", "confirmed_flush_lsn", `"relay"`}}, // the slot moved past it
		{from: "1/FF+3", errs: []string{"1/FF+3", "1/100"}},                               // inside a transaction the slot already passed
		{from: "2/0", errs: []string{"2/0", "1/9000", "beyond"}},
		{from: "bogus", errs: []string{"bogus"}},
	} {
		got, err := startPosition(tt.from, slot, cfg, si)
		if tt.errs == nil {
			if err != nil || got != tt.want {
				t.Errorf("startPosition(%q) = %s, %v; want %s", tt.from, got, err, tt.want)
			}
			continue
		}
		if err == nil || !source.IsPermanent(err) {
			t.Errorf("startPosition(%q) = %s, %v; want a permanent error", tt.from, got, err)
			continue
		}
		for _, w := range tt.errs {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("startPosition(%q): error %q lacks %q", tt.from, err, w)
			}
		}
	}
}

func TestCreatePublicationSQL(t *testing.T) {
	t.Parallel()
	got := createPublicationSQL(`"Pub ""x"""`, []qualifiedTable{{schema: "public", name: "outbox"}, {schema: "Shop", name: `Out "Box"`, partitioned: true}})
	want := `CREATE PUBLICATION "Pub ""x""" FOR TABLE "public"."outbox", "Shop"."Out ""Box""" WITH (publish = 'insert', publish_via_partition_root = true)`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := createPublicationSQL(`"p"`, nil); got != `CREATE PUBLICATION "p" WITH (publish = 'insert')` {
		t.Fatalf("messages only: %s", got)
	}
	if got := quoteLiteral(`"it's"`); got != `'"it''s"'` {
		t.Fatalf("quoteLiteral: %s", got)
	}
}
