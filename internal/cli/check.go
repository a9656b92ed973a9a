package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source/mysql"
	"github.com/outboxrelay/outboxrelay/source/postgres"
)

// checkTimeout bounds the whole preflight: each connection also has its
// own timeout.
const checkTimeout = 90 * time.Second

// checkOutput is `check --json`.
type checkOutput struct {
	OK     bool              `json:"ok"`
	Checks []preflight.Check `json:"checks"`
}

// cmdCheck connects with the configured credentials and reports, one line
// per check, what the relay needs from the database, Kafka and the
// checkpoint location. Exit code 0 only when every check passes.
func cmdCheck(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var asJSON bool
	var fs *flag.FlagSet
	cfg, code := loadConfig("check", args, environ, stderr, func(f *flag.FlagSet) {
		f.BoolVar(&asJSON, "json", false, "print JSON")
		fs = f
	})
	if cfg == nil {
		return code
	}
	path := fs.Lookup("config").Value.String()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	checks := Preflight(ctx, cfg, path)
	out := checkOutput{OK: preflight.AllOK(checks), Checks: checks}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		printChecks(stdout, checks)
	}
	if !out.OK {
		return ExitFailure
	}
	return ExitOK
}

// Preflight runs every check for cfg: the configuration and checkpoint
// location, the source, and Kafka. path is the config file, for messages.
func Preflight(ctx context.Context, cfg *config.Config, path string) []preflight.Check {
	checks := []preflight.Check{preflight.Pass("config", "%s is valid: %s source, outbox tables %s", orDash(path), cfg.Source.Type, strings.Join(cfg.Source.Tables(), ", "))}
	cpCheck, pos, saved := checkpointCheck(ctx, cfg)
	checks = append(checks, cpCheck)
	switch cfg.Source.Type {
	case "mysql":
		checks = append(checks, mysql.NewSource(cfg.Source.MySQL, newLogger(cfg.Log, io.Discard)).Preflight(ctx, pos, saved)...)
	case "postgres":
		checks = append(checks, postgres.NewSource(cfg.Source.Postgres, newLogger(cfg.Log, io.Discard)).Preflight(ctx, pos, saved)...)
	}
	checks = append(checks, kafka.Preflight(ctx, cfg.Kafka, kafkaTargets(cfg.Outbox))...)
	return checks
}

// checkpointCheck checks that the checkpoint's directory is writable and
// what the stored checkpoint says; it returns the position the relay would
// resume from ("" if none) and when it was written.
func checkpointCheck(ctx context.Context, cfg *config.Config) (preflight.Check, string, time.Time) {
	const name = "checkpoint"
	p := cfg.Checkpoint.File.Path
	dir := filepath.Dir(p)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return preflight.Fail(name, fmt.Sprintf("the directory of checkpoint.file.path (%s) does not exist", dir),
			fmt.Sprintf("create it, writable by the relay's user: mkdir -p %s (in a container: mount a persistent volume there)", dir)), "", time.Time{}
	}
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return preflight.Fail(name, fmt.Sprintf("the relay's user cannot write to %s (%v)", dir, err),
			fmt.Sprintf("chown the directory to the relay's user (the container image runs as uid 65532), or set checkpoint.file.path elsewhere")), "", time.Time{}
	}
	store, err := file.New(cfg.Checkpoint.File)
	if err != nil {
		return preflight.Fail(name, err.Error(), "set checkpoint.file.path"), "", time.Time{}
	}
	cp, err := store.Load(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		start := "source.mysql.start (" + cfg.Source.MySQL.Start + ")"
		if cfg.Source.Type == "postgres" {
			start = "the replication slot's confirmed_flush_lsn"
		}
		return preflight.Pass(name, "no checkpoint yet at %s: the relay will start at %s", p, start), "", time.Time{}
	case err != nil:
		return preflight.Fail(name, err.Error(), "restore the file from a backup, or set a position with `outboxrelay checkpoint set`"), "", time.Time{}
	case cp.Source != cfg.Source.Type:
		return preflight.Fail(name, fmt.Sprintf("%s holds a %s position (%s) but source.type is %s", p, cp.Source, cp.Position, cfg.Source.Type),
			"point checkpoint.file.path at this source's checkpoint"), "", time.Time{}
	}
	return preflight.Pass(name, "%s at %s, written %s (%s ago)", cp.Position, p, cp.UpdatedAt.Format(time.RFC3339), time.Since(cp.UpdatedAt).Round(time.Second)), cp.Position, cp.UpdatedAt
}

// kafkaTargets lists the topics the mapping can produce to: fixed names,
// and patterns for templates with ${column} placeholders.
func kafkaTargets(c outbox.Config) kafka.Targets {
	templates := map[string]bool{c.Topic: true}
	for _, m := range c.Tables {
		if m.Topic != "" {
			templates[m.Topic] = true
		}
	}
	if c.OnBadRow == outbox.PolicyDeadLetter && c.DeadLetterTopic != "" {
		templates[c.DeadLetterTopic] = true
	}
	var t kafka.Targets
	names := make([]string, 0, len(templates))
	for s := range templates {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		if !strings.Contains(s, "${") {
			t.Topics = append(t.Topics, s)
			continue
		}
		var re strings.Builder
		re.WriteString("^")
		for rest := s; rest != ""; {
			i := strings.Index(rest, "${")
			j := strings.IndexByte(rest[max(i, 0):], '}')
			if i < 0 || j < 0 {
				re.WriteString(regexp.QuoteMeta(rest))
				break
			}
			re.WriteString(regexp.QuoteMeta(rest[:i]) + ".+")
			rest = rest[i+j+1:]
		}
		re.WriteString("$")
		if p, err := regexp.Compile(re.String()); err == nil {
			t.Patterns = append(t.Patterns, p)
		}
	}
	return t
}

func printChecks(w io.Writer, checks []preflight.Check) {
	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	ok, failed, warned := 0, 0, 0
	for _, c := range checks {
		mark := "✓"
		switch {
		case !c.OK:
			mark = "✗"
			failed++
		case c.Warning:
			mark = "!"
			warned++
		default:
			ok++
		}
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, c.Name, c.Detail)
		if c.Fix != "" && (!c.OK || c.Warning) {
			fmt.Fprintf(w, "  %*s  fix: %s\n", width, "", c.Fix)
		}
	}
	verdict := "the relay can start"
	if failed > 0 {
		verdict = "fix the ✗ checks before starting the relay"
	}
	fmt.Fprintf(w, "\n%d check(s) ok, %d failing, %d warning(s): %s\n", ok, failed, warned, verdict)
}

func orDash(s string) string {
	if s == "" {
		return "the configuration"
	}
	return s
}
