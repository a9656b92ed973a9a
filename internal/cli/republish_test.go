package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// TestRepublishSelection: the flags become one selection; without a way
// of choosing rows, or with a bad time, it is a usage error.
func TestRepublishSelection(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		f    republishFlags
		err  string
		keys int
	}{
		{"none", republishFlags{}, "choose the rows", 0},
		{"ids only commas", republishFlags{ids: " , ,"}, "--ids: no id given", 0},
		{"bad since", republishFlags{since: "yesterday"}, "--since: \"yesterday\" is not an RFC 3339 time", 0},
		{"until before since", republishFlags{since: "2026-01-02T00:00:00Z", until: "2026-01-01T00:00:00Z"}, "is not after --since", 0},
		{"ids", republishFlags{ids: "a, b,,c"}, "", 3},
		{"range", republishFlags{fromID: "10", toID: "20"}, "", 0},
		{"time", republishFlags{since: "2026-01-01T00:00:00+02:00"}, "", 0},
	} {
		sel, err := c.f.selection()
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want %q", c.name, err, c.err)
		case c.err == "" && len(sel.Keys) != c.keys:
			t.Errorf("%s: keys %q, want %d", c.name, sel.Keys, c.keys)
		}
	}
	sel, _ := republishFlags{since: "2026-01-01T00:00:00+02:00"}.selection()
	if got := sel.Since.UTC().Format("2006-01-02T15:04:05Z"); got != "2025-12-31T22:00:00Z" {
		t.Errorf("since in UTC = %s", got)
	}
	var ids []string
	for i := 0; i < 2*idsPerQuery+5; i++ {
		ids = append(ids, "x")
	}
	chunks := splitKeys(republishSelection(ids))
	if len(chunks) != 3 || len(chunks[0].Keys) != idsPerQuery || len(chunks[2].Keys) != 5 {
		t.Errorf("split %d ids into %d chunks", len(ids), len(chunks))
	}
}

func republishSelection(ids []string) (s source.Selection) {
	s.Keys = ids
	return s
}

// TestRepublishHeaders: the log position headers go, the mark comes,
// everything else stays in order.
func TestRepublishHeaders(t *testing.T) {
	t.Parallel()
	in := []sink.Header{{Key: "id", Value: []byte("1")}, {Key: "type", Value: []byte("t")}, {Key: "tenant", Value: []byte("x")},
		{Key: outbox.HeaderPosition, Value: nil}, {Key: outbox.HeaderIndex, Value: []byte("0")}}
	out := republishHeaders(in, "", 0)
	var keys []string
	for _, h := range out {
		keys = append(keys, h.Key+"="+string(h.Value))
	}
	if got := strings.Join(keys, ","); got != "id=1,type=t,tenant=x,"+HeaderRepublish+"=true" {
		t.Errorf("headers %s", got)
	}
}

// TestRepublishUsageErrors: a missing selection exits 2 before connecting.
func TestRepublishUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	yaml := "source:\n  type: postgres\n  postgres:\n    dsn: postgres://u@127.0.0.1:1/db\n    tables: [public.outbox]\nkafka:\n  brokers: [127.0.0.1:1]\ncheckpoint:\n  file:\n    path: " + filepath.Join(dir, "cp.json") + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"republish", "--config", cfg}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "choose the rows") {
		t.Errorf("exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"republish", "--config", cfg, "--since", "now"}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "RFC 3339") {
		t.Errorf("exit %d, %q", code, errb.String())
	}
}

// TestRepublishPosition: with --position the records carry it, as a
// record's transaction position (no GTIDs, rows or XA), and an index
// above any real one.
func TestRepublishPosition(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"mysql-bin.000003:1234@0-1-55+3;xa=x@mysql-bin.000003:99": "mysql-bin.000003:1234",
		"0/16B3748+2": "0/16B3748",
		"0/16B3748":   "0/16B3748",
	} {
		if got := headerPosition(in); got != want {
			t.Errorf("headerPosition(%s) = %s, want %s", in, got, want)
		}
	}
	out := republishHeaders([]sink.Header{{Key: "id", Value: []byte("1")}}, "0/16B3748", republishIndexBase+2)
	var keys []string
	for _, h := range out {
		keys = append(keys, h.Key+"="+string(h.Value))
	}
	if got := strings.Join(keys, ","); got != "id=1,"+outbox.HeaderPosition+"=0/16B3748,"+outbox.HeaderIndex+"=1000000002,"+HeaderRepublish+"=true" {
		t.Errorf("headers %s", got)
	}
}
