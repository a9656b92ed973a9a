package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestHelpForEveryCommand: --help and -h print the command's usage on
// stdout, exit 0, and the README shows the same text.
func TestHelpForEveryCommand(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "check", "checkpoint show", "checkpoint set", "checkpoint import", "replay", "republish", "version"} {
		for _, flag := range []string{"--help", "-h"} {
			args := append(strings.Fields(cmd), flag)
			var out, errb bytes.Buffer
			if code := Main(context.Background(), args, nil, &out, &errb); code != ExitOK {
				t.Errorf("%s: exit %d, want 0; stderr %q", strings.Join(args, " "), code, errb.String())
			}
			if out.String() != commandHelp[cmd] {
				t.Errorf("%s printed:\n%s\nwant (a flag without documentation?):\n%s", strings.Join(args, " "), out.String(), commandHelp[cmd])
			}
			if !strings.HasPrefix(out.String(), "usage: outboxrelay "+cmd+" ") && cmd != "version" {
				t.Errorf("%s: usage does not start with the synopsis: %q", cmd, out.String())
			}
			if !bytes.Contains(readme, out.Bytes()) {
				t.Errorf("README.md lacks the help of %s:\n%s", cmd, out.String())
			}
		}
	}
	var out, errb bytes.Buffer
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		out.Reset()
		if code := Main(context.Background(), args, nil, &out, &errb); code != ExitOK || !bytes.Contains(readme, out.Bytes()) || !strings.Contains(out.String(), "--server-id") {
			t.Errorf("%v: exit %d; the README must contain:\n%s", args, code, out.String())
		}
	}
	out.Reset()
	if code := Main(context.Background(), []string{"help", "replay"}, nil, &out, &errb); code != ExitOK || out.String() != commandHelp["replay"] {
		t.Errorf("help replay: exit %d, %q", code, out.String())
	}
	if !strings.Contains(commandHelp["replay"], "--server-id ID          MySQL: the replay's replica server_id (default: a free one picked by the relay)") {
		t.Error("replay --help lacks --server-id")
	}
	out.Reset()
	if code := Main(context.Background(), []string{"checkpoint", "--help"}, nil, &out, &errb); code != ExitOK || !strings.Contains(out.String(), "checkpoint set") || !strings.Contains(out.String(), "checkpoint import --config FILE --file PATH") {
		t.Errorf("checkpoint --help: exit %d, %q", code, out.String())
	}
}

// TestUsageErrors: a bad flag, value or argument exits 2 with the
// message and the way to --help, before the configuration is read.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(base, "CPPATH", filepath.Join(dir, "cp.json"))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--config", path, "--log-level", "verbose"}, `run: invalid value "verbose" for flag --log-level: want debug, info, warn or error`},
		{[]string{"run", "--config", path, "--bogus"}, "run: flag provided but not defined: --bogus"},
		{[]string{"run", "--config", path, "extra"}, `run: unexpected argument "extra"`},
		{[]string{"run", "--config"}, "run: flag needs an argument: --config"},
		{[]string{"checkpoint", "set", "--config", path, "--dry-run=maybe"}, `checkpoint set: invalid boolean value "maybe" for --dry-run`},
		{[]string{"replay", "--config", path, "--from", "x", "--server-id", "-1"}, `replay: invalid value "-1" for flag --server-id`},
		{[]string{"version", "--short"}, "version: flag provided but not defined: --short"},
		{[]string{"checkpoint", "list"}, "usage: outboxrelay checkpoint show"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tt.args, nil, &out, &errb)
		if code != ExitUsage || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errb.String(), tt.want)
		}
		if tt.args[0] != "checkpoint" || tt.args[1] != "list" {
			if !strings.Contains(errb.String(), "--help' for usage") {
				t.Errorf("%v: stderr does not point to --help: %q", tt.args, errb.String())
			}
		}
	}
}

// TestCheckJSONAlways: check --json prints JSON on stdout also when it
// cannot check at all.
func TestCheckJSONAlways(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("source:\n  type: mysql\n  mysql:\n    server_idd: 1\n    password: hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--json", "--config", bad}, "did you mean server_id?"},
		{[]string{"check", "--config", filepath.Join(dir, "missing.yaml"), "--json"}, "missing.yaml"},
		{[]string{"check", "--json"}, "--config is required"},
		{[]string{"check", "--bogus", "--json"}, "--bogus"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tt.args, nil, &out, &errb)
		var res struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Errorf("%v: stdout is not JSON (%v): %q; stderr %q", tt.args, err, out.String(), errb.String())
			continue
		}
		if code != ExitUsage || res.OK || !strings.Contains(res.Error, tt.want) {
			t.Errorf("%v: exit %d, %+v; want exit 2, ok false and an error with %q", tt.args, code, res, tt.want)
		}
		if strings.Contains(out.String(), "hunter2") {
			t.Errorf("%v: leaks the password: %s", tt.args, out.String())
		}
	}
}

func TestVersionText(t *testing.T) {
	t.Parallel()
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/outboxrelay/outboxrelay", Version: "v0.0.0-20261201231407-fbb5a9037304+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "fbb5a903730428c2370a62a760c891b3f5aa320d"}, {Key: "vcs.time", Value: "2026-12-01T23:14:07Z"}, {Key: "vcs.modified", Value: "true"}}}
	devel := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/outboxrelay/outboxrelay", Version: "(devel)"}, Settings: stamped.Settings}
	bare := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/outboxrelay/outboxrelay", Version: "(devel)"}}
	for _, tt := range []struct {
		name    string
		ldflags string
		bi      *debug.BuildInfo
		want    []string
	}{
		{"module version and commit", "", stamped, []string{"outboxrelay v0.0.0-20261201231407-fbb5a9037304+dirty\n",
			"commit:  fbb5a903730428c2370a62a760c891b3f5aa320d (2026-12-01T23:14:07Z), with uncommitted changes", "go1.26.8"}},
		{"ldflags wins", "v1.2.3", stamped, []string{"outboxrelay v1.2.3\n", "fbb5a903730428c2370a62a760c891b3f5aa320d"}},
		{"commit without module version", "", devel, []string{"outboxrelay devel-fbb5a9037304-dirty\n"}},
		{"no version control information", "", bare, []string{"outboxrelay (devel)\n", "commit:  unknown (built without version control information", "cli.Version="}},
		{"no build information", "", nil, []string{"outboxrelay (devel)\n", "no build information"}},
	} {
		got := versionText(tt.ldflags, tt.bi)
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", tt.name, got, w)
			}
		}
		if strings.HasPrefix(got, "outboxrelay dev\n") {
			t.Errorf("%s: just dev: %q", tt.name, got)
		}
	}
}

// TestVersionLdflags builds the binary as the Dockerfile does: the
// -X flag's variable path must be the real one.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "outboxrelay")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/outboxrelay/outboxrelay/internal/cli.Version=v9.8.7-test", "-o", bin, "../../cmd/outboxrelay")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "outboxrelay v9.8.7-test\n") || !strings.Contains(string(out), "go:      go1.") {
		t.Fatalf("version: %v: %q", err, out)
	}
}
