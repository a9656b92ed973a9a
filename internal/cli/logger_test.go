package cli

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/config"
)

// TestLogLines: JSON lines carry a millisecond timestamp, and the console
// format writes no colour escapes into a file or pipe.
func TestLogLines(t *testing.T) {
	t.Parallel()
	var jsonOut bytes.Buffer
	log := newLogger(config.Log{Level: "info", Format: "json"}, &lockedWriter{w: &jsonOut})
	log.Info().Str("outage", (370 * time.Millisecond).String()).Msg("recovered")
	var line map[string]any
	if err := json.Unmarshal(jsonOut.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, jsonOut.String())
	}
	ms := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`)
	if ts, _ := line["time"].(string); !ms.MatchString(ts) {
		t.Errorf("time %q is not RFC 3339 with milliseconds: %s", line["time"], jsonOut.String())
	}
	if line["outage"] != "370ms" {
		t.Errorf("outage %v", line["outage"])
	}

	file, err := os.Create(filepath.Join(t.TempDir(), "relay.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, w := range []*lockedWriter{{w: file}, {w: &bytes.Buffer{}}} {
		log := newLogger(config.Log{Level: "info", Format: "console"}, &streams{lockedWriter: w})
		log.Warn().Str("k", "v").Msg("to a file")
	}
	b, _ := os.ReadFile(file.Name())
	if bytes.Contains(b, []byte("\x1b[")) || !bytes.Contains(b, []byte("to a file")) {
		t.Errorf("console log to a file: %q", b)
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}`).Match(b) {
		t.Errorf("console line without a millisecond timestamp: %q", b)
	}
	if isTerminal(file) || isTerminal(&bytes.Buffer{}) {
		t.Error("a file or a buffer taken for a terminal")
	}
}

// TestNoUnitlessDurations: zerolog's Dur writes a bare number (in
// milliseconds by a global default); log durations as strings ("370ms")
// or integers whose key names the unit (outage_ms).
func TestNoUnitlessDurations(t *testing.T) {
	t.Parallel()
	dur := regexp.MustCompile(`\.(Dur|Durs|TimeDiff)\(`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if dur.MatchString(line) {
				t.Errorf("%s:%d: a log duration without a unit: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
