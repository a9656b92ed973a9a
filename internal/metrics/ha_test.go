package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestStandbyIsReady: a standby in the group answers /readyz 200, one
// joining or cut off from it 503 (with why); once it streams, the
// pipeline's own readiness applies (not connected yet: not ready).
func TestStandbyIsReady(t *testing.T) {
	t.Parallel()
	m := New(Config{Listen: "127.0.0.1:0"}, Info{Source: "mysql", Version: "test"}, zerolog.Nop())
	if ok, _ := m.Ready(time.Now()); ok {
		t.Fatal("a relay not connected is ready")
	}
	m.HA([]string{"orders"})
	if ok, why := m.Ready(time.Now()); ok || !strings.Contains(why, "joining") {
		t.Fatalf("standby not yet in the group: ready %v (%s), want not ready, joining", ok, why)
	}
	m.Member(true, "")
	if ok, why := m.Ready(time.Now()); !ok || !strings.Contains(why, "standing by") {
		t.Fatalf("standby: ready %v (%s), want ready, standing by", ok, why)
	}
	m.Active("orders", true)
	m.Assigned("orders", true)
	if ok, why := m.Ready(time.Now()); ok {
		t.Fatalf("active and not connected: ready (%s)", why)
	}
	if v := gathered(t, m, "outboxrelay_active"); v != 1 {
		t.Fatalf("outboxrelay_active = %v, want 1", v)
	}
	if v := gathered(t, m, "outboxrelay_ha_takeovers_total"); v != 1 {
		t.Fatalf("outboxrelay_ha_takeovers_total = %v, want 1", v)
	}
	m.Active("orders", false)
	if ok, _ := m.Ready(time.Now()); !ok {
		t.Fatal("back to standby: not ready")
	}
	m.Member(false, "kafka: client has run out of available brokers")
	if ok, why := m.Ready(time.Now()); ok || !strings.Contains(why, "out of available brokers") {
		t.Fatalf("standby out of the group: ready %v (%s), want not ready with the error", ok, why)
	}
}

// gathered is the value of the one series of family name.
func gathered(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		mt := f.GetMetric()[0]
		if g := mt.GetGauge(); g != nil {
			return g.GetValue()
		}
		return mt.GetCounter().GetValue()
	}
	t.Fatalf("no single series %s", name)
	return 0
}

// TestOnlyHAReadiness: with several pipelines (OnlyHA) readiness is
// membership alone, streaming or not, and outboxrelay_active is per
// pipeline.
func TestOnlyHAReadiness(t *testing.T) {
	t.Parallel()
	m := New(Config{Listen: "127.0.0.1:0"}, Info{Source: "mysql", Version: "test"}, zerolog.Nop())
	m.HA([]string{"a", "b"})
	m.OnlyHA()
	if ok, _ := m.Ready(time.Now()); ok {
		t.Fatal("joining: ready")
	}
	m.Member(true, "")
	m.Active("b", true)
	if ok, why := m.Ready(time.Now()); !ok || !strings.Contains(why, "streaming 1 pipeline") {
		t.Fatalf("in the group, streaming b: ready %v (%s), want ready, streaming 1", ok, why)
	}
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "outboxrelay_active" {
			continue
		}
		for _, mt := range f.GetMetric() {
			got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	if got["a"] != 0 || got["b"] != 1 || len(got) != 2 {
		t.Fatalf("outboxrelay_active = %v, want a 0, b 1", got)
	}
	m.Member(false, "kafka: gone")
	if ok, _ := m.Ready(time.Now()); ok {
		t.Fatal("out of the group: ready")
	}
}
