package metrics

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestMetricNamesFollowConventions: base units come last (…_seconds,
// …_bytes, then _total for counters), and docs/operations.md lists every
// outboxrelay_* metric, and only those.
func TestMetricNamesFollowConventions(t *testing.T) {
	t.Parallel()
	m := New(Config{Listen: "127.0.0.1:0"}, Info{Source: "postgres", Version: "test", RetainsWAL: true}, zerolog.Nop())
	m.BadRow("null_key", "skip") // vectors are gathered once they have a series
	m.topic("outbox.event.order")
	m.snapshotRows.WithLabelValues("shop.outbox")
	m.HA([]string{"orders"})
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]string{}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "outboxrelay_") {
			continue
		}
		registered[name] = f.GetHelp()
		base := strings.TrimSuffix(name, "_total")
		for _, unit := range []string{"seconds", "bytes", "milliseconds", "ratio"} {
			if strings.Contains(base, "_"+unit+"_") {
				t.Errorf("%s: the unit (%s) must come last", name, unit)
			}
		}
	}
	if len(registered) < 10 {
		t.Fatalf("only %d outboxrelay_* metrics gathered", len(registered))
	}
	if help := registered["outboxrelay_commit_to_ack_seconds"]; !strings.Contains(help, "whole seconds") || !strings.Contains(help, "outboxrelay_read_to_ack_seconds") {
		t.Errorf("commit→ack help does not say that MariaDB's commit times are whole seconds, nor point to read→ack: %q", help)
	}

	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, n := range regexp.MustCompile("(?m)^\\| `(outboxrelay_[a-z_]+)").FindAllStringSubmatch(string(doc), -1) {
		documented[n[1]] = true
	}
	unknown := map[string]bool{}
	for _, n := range regexp.MustCompile(`outboxrelay_[a-z_]+`).FindAllString(string(doc), -1) {
		n = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
		if _, ok := registered[n]; !ok && !strings.HasSuffix(n, "_") && !unknown[n] {
			unknown[n] = true
			t.Errorf("docs/operations.md names %s, which the relay does not export", n)
		}
	}
	var missing []string
	for n := range registered {
		if !documented[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/operations.md's metrics table lacks %v", missing)
	}
}
