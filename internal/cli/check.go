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
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source"
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
	src, err := cfg.Source.New(newLogger(cfg.Log, io.Discard))
	if err != nil {
		return []preflight.Check{preflight.Fail("config", err.Error(), "correct source.type")}
	}
	checks := []preflight.Check{preflight.Pass("config", "%s is valid: %s source, outbox tables %s", orDash(path), cfg.Source.Type, strings.Join(cfg.Source.OutboxTables(), ", "))}
	cpChecks, pos, saved := checkpointCheck(ctx, cfg, src)
	checks = append(checks, cpChecks...)
	o := source.PreflightOptions{}
	if mapper, err := outbox.New(cfg.Outbox); err == nil {
		o.CheckTable = mapper.CheckTable
	}
	if store, err := newStore(cfg, zerolog.Nop()); err == nil {
		o.RelayPID = store.Holder()
		store.Close()
	}
	checks = append(checks, src.Preflight(ctx, pos, saved, o)...)
	checks = append(checks, kafka.Preflight(ctx, cfg.Kafka, kafkaTargets(cfg.Outbox))...)
	return checks
}

// checkpointCheck checks that the checkpoint's store is usable — the file's
// directory writable, or the Kafka positions topic readable — and what
// the stored checkpoint says; it returns the position the relay would
// resume from ("" if none) and when it was written.
func checkpointCheck(ctx context.Context, cfg *config.Config, src source.Source) ([]preflight.Check, string, time.Time) {
	if cfg.Checkpoint.Type == "kafka" {
		return kafkaCheckpointCheck(ctx, cfg, src)
	}
	c, pos, saved := fileCheckpointCheck(ctx, cfg, src)
	return []preflight.Check{c}, pos, saved
}

// kafkaCheckpointCheck is the Kafka store's Preflight (it writes nothing
// and never fences a running relay), and the source of what it holds.
func kafkaCheckpointCheck(ctx context.Context, cfg *config.Config, src source.Source) ([]preflight.Check, string, time.Time) {
	const name = "checkpoint"
	store, err := newStore(cfg, zerolog.Nop())
	if err != nil {
		return []preflight.Check{preflight.Fail(name, err.Error(), "correct checkpoint.kafka and relay.name")}, "", time.Time{}
	}
	defer store.Close()
	ks, isKafka := store.(kafkaStore)
	if !isKafka {
		return []preflight.Check{preflight.Fail(name, "checkpoint.type kafka built another store", "report this bug")}, "", time.Time{}
	}
	checks, cp, ok := ks.Preflight(ctx, src.StartNote())
	if !ok {
		return checks, "", time.Time{}
	}
	if cp.Source != cfg.Source.Type {
		checks[0] = preflight.Fail(name, fmt.Sprintf("%s holds a %s position (%s) but source.type is %s", store.Where(), cp.Source, cp.Position, cfg.Source.Type),
			"give this relay its own relay.name (each source needs its own position)")
		return checks, "", time.Time{}
	}
	return checks, cp.Position, cp.UpdatedAt
}

// fileCheckpointCheck checks that the checkpoint file's directory is
// writable and what the file says.
func fileCheckpointCheck(ctx context.Context, cfg *config.Config, src source.Source) (preflight.Check, string, time.Time) {
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
	store, err := newStore(cfg, zerolog.Nop())
	if err != nil {
		return preflight.Fail(name, err.Error(), "set checkpoint.file.path"), "", time.Time{}
	}
	defer store.Close()
	cp, err := store.Load(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		return preflight.Pass(name, "no checkpoint yet at %s: the relay will start at %s", p, src.StartNote()), "", time.Time{}
	case err != nil:
		return preflight.Fail(name, err.Error(), "restore the file from a backup, or set a position with `outboxrelay checkpoint set`"), "", time.Time{}
	case cp.Source != cfg.Source.Type:
		return preflight.Fail(name, fmt.Sprintf("%s holds a %s position (%s) but source.type is %s", p, cp.Source, cp.Position, cfg.Source.Type),
			"point checkpoint.file.path at this source's checkpoint"), "", time.Time{}
	}
	return preflight.Pass(name, "%s at %s, written %s (%s ago)", cp.Position, p, cp.UpdatedAt.Format(time.RFC3339), time.Since(cp.UpdatedAt).Round(time.Second)), cp.Position, cp.UpdatedAt
}

// kafkaTargets lists the topics the mapping can produce to.
func kafkaTargets(c outbox.Config) kafka.Targets {
	topics, patterns := c.Targets()
	return kafka.Targets{Topics: topics, Patterns: patterns}
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
