// Package cli is the outboxrelay command line: it parses arguments, loads
// the configuration, wires the components and maps outcomes to exit codes.
// It is the only place that knows every component.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the relay stopped on an error
	ExitUsage   = 2 // bad arguments or configuration
	ExitFenced  = 3 // exactly-once: another instance with this relay.name took over
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3";
// it wins over the module version Go records.
var Version = ""

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	// Loggers write from several goroutines (the relay, the producer's
	// callbacks, shutdown): serialize, whatever writers the caller passed.
	stdout = &lockedWriter{w: stdout}
	stderr = &streams{lockedWriter: &lockedWriter{w: stderr}, stdout: stdout}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], environ, stderr)
	case "check":
		return cmdCheck(ctx, args[1:], environ, stdout, stderr)
	case "checkpoint":
		switch {
		case len(args) >= 2 && args[1] == "show":
			return cmdCheckpointShow(ctx, args[2:], environ, stdout, stderr)
		case len(args) >= 2 && args[1] == "set":
			return cmdCheckpointSet(ctx, args[2:], environ, stdout, stderr)
		case len(args) >= 2 && args[1] == "import":
			return cmdCheckpointImport(ctx, args[2:], environ, stdout, stderr)
		case len(args) >= 2 && isHelp(args[1]):
			fmt.Fprint(stdout, checkpointUsage)
			return ExitOK
		}
		fmt.Fprint(stderr, checkpointUsage)
		return ExitUsage
	case "replay":
		return cmdReplay(ctx, args[1:], environ, stdout, stderr)
	case "republish":
		return cmdRepublish(ctx, args[1:], environ, stdout, stderr)
	case "version", "--version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		if len(args) > 1 {
			if text, ok := commandHelp[strings.Join(args[1:], " ")]; ok {
				fmt.Fprint(stdout, text)
				return ExitOK
			}
		}
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return ExitUsage
}

const checkpointUsage = `usage: outboxrelay checkpoint show --config FILE [--json]
       outboxrelay checkpoint set --config FILE --to POSITION [--dry-run]
       outboxrelay checkpoint import --config FILE --file PATH [--dry-run] [--force]
run 'outboxrelay checkpoint show --help' (or set, import) for details
`

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	help, err := parseFlags(fs, args)
	switch {
	case help:
		fmt.Fprint(stdout, helpFor("version", fs))
		return ExitOK
	case err != nil:
		usageError(stderr, "version", err)
		return ExitUsage
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(Version, bi))
	return ExitOK
}

// version is the relay's version in one word, for logs and
// outboxrelay_build_info.
func version() string {
	bi, _ := debug.ReadBuildInfo()
	return shortVersion(Version, bi)
}

func shortVersion(ldflags string, bi *debug.BuildInfo) string {
	if ldflags != "" {
		return ldflags
	}
	if bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	if rev, _, modified := vcsInfo(bi); rev != "" {
		v := "devel-" + rev[:min(12, len(rev))]
		if modified {
			v += "-dirty"
		}
		return v
	}
	return "(devel)"
}

// versionText is `outboxrelay version`: the version, then what it was
// built from.
func versionText(ldflags string, bi *debug.BuildInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "outboxrelay %s\n", shortVersion(ldflags, bi))
	if bi == nil {
		b.WriteString("  no build information in this binary\n")
		return b.String()
	}
	fmt.Fprintf(&b, "  module:  %s %s\n", bi.Main.Path, bi.Main.Version)
	if rev, at, modified := vcsInfo(bi); rev != "" {
		fmt.Fprintf(&b, "  commit:  %s", rev)
		if at != "" {
			fmt.Fprintf(&b, " (%s)", at)
		}
		if modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString("\n")
	} else {
		// Go records no commit with -buildvcs=false, in a git worktree, or
		// without .git (a Docker build context).
		b.WriteString("  commit:  unknown (built without version control information; set -ldflags \"-X github.com/outboxrelay/outboxrelay/internal/cli.Version=…\")\n")
	}
	fmt.Fprintf(&b, "  go:      %s\n", bi.GoVersion)
	return b.String()
}

// vcsInfo reads the commit Go stamped into the binary.
func vcsInfo(bi *debug.BuildInfo) (revision, at string, modified bool) {
	if bi == nil {
		return "", "", false
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return revision, at, modified
}

// loadConfig parses the common --config flag plus extra flags, and loads
// the configuration. A nil config comes with the exit code: ExitOK after
// --help (printed on stdout), ExitUsage for a bad flag or configuration.
func loadConfig(name string, args []string, environ []string, stderr io.Writer, extra func(*flag.FlagSet)) (*config.Config, int) {
	stdout := stdoutOf(stderr)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "path of the YAML configuration file (required)")
	if extra != nil {
		extra(fs)
	}
	// check --json answers in JSON even when it cannot check at all.
	asJSON := name == "check" && wantsJSON(args)
	fail := func(err error, isUsage bool) (*config.Config, int) {
		switch {
		case asJSON:
			jsonError(stdout, fmt.Errorf("%s: %w", name, err))
		case isUsage:
			usageError(stderr, name, err)
		default:
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
		}
		return nil, ExitUsage
	}
	help, err := parseFlags(fs, args)
	switch {
	case help:
		fmt.Fprint(stdout, helpFor(name, fs))
		return nil, ExitOK
	case err != nil:
		return fail(err, true)
	case *path == "":
		return fail(errors.New("--config is required"), true)
	}
	cfg, err := config.Load(*path, environ)
	if err != nil {
		return fail(err, false)
	}
	if len(cfg.Pipelines) > 0 && name != "run" {
		// The other commands act on one relay's source and position.
		return fail(fmt.Errorf("config: pipelines: %s works on one pipeline: give it a config with that pipeline's source as source and relay.name %s", name, config.PipelineRelayName(cfg.Relay.Name, "PIPELINE")), false)
	}
	return cfg, ExitOK
}

func cmdRun(ctx context.Context, args []string, environ []string, stderr io.Writer) int {
	var level string
	cfg, code := loadConfig("run", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.Func("log-level", "override log.level (debug, info, warn, error)", func(s string) error {
			// Checked as log.level is: a typo must not run at info.
			switch s {
			case "debug", "info", "warn", "error":
				level = s
				return nil
			}
			return errors.New("want debug, info, warn or error")
		})
	})
	if cfg == nil {
		return code
	}
	if level != "" {
		cfg.Log.Level = level
	}
	log := newLogger(cfg.Log, stderr)
	svc, err := NewService(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return ExitUsage
	}
	defer svc.Close()
	unlock, err := svc.Lock()
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return ExitFailure
	}
	defer unlock()
	if _, err := svc.Listen(); err != nil {
		log.Error().Err(err).Msg("cannot start")
		return ExitFailure
	}
	if len(cfg.Pipelines) > 0 {
		log.Info().Str("version", version()).Strs("pipelines", cfg.PipelineNames()).Strs("brokers", cfg.Kafka.Brokers).Msg("outboxrelay starting")
	} else {
		log.Info().Str("version", version()).Str("source", cfg.Source.Type).Strs("tables", cfg.Source.OutboxTables()).Strs("brokers", cfg.Kafka.Brokers).Msg("outboxrelay starting")
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			log.Info().Str("shutdown_timeout", cfg.Relay.ShutdownTimeout.String()).
				Msg("shutting down: stopped reading, waiting for Kafka to acknowledge what is in flight (a second SIGTERM/SIGINT exits at once)")
		case <-stopped:
		}
	}()
	if err := svc.Run(ctx); err != nil {
		if errors.Is(err, sink.ErrFenced) {
			log.Error().Err(err).Str("relay", cfg.Relay.Name).Msg("relay stopped: fenced by another instance")
			return ExitFenced
		}
		log.Error().Err(err).Msg("relay stopped")
		return ExitFailure
	}
	log.Info().Msg("relay stopped cleanly")
	return ExitOK
}

// Build wires the components named by cfg (see NewService; the metrics
// endpoint is served only by Service.Run).
func Build(cfg *config.Config, log zerolog.Logger) (*relay.Relay, Store, error) {
	s, err := NewService(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return s.Relay, s.Store, nil
}

// Stdio runs Main on the process's own arguments and streams.
func Stdio(ctx context.Context) int {
	return Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
}

// streams is the stderr Main hands to every command. It also carries
// stdout, so that loadConfig, which each command calls with its stderr,
// can print --help, and check --json's errors, on stdout.
type streams struct {
	*lockedWriter
	stdout io.Writer
}

func stdoutOf(stderr io.Writer) io.Writer {
	if s, ok := stderr.(*streams); ok {
		return s.stdout
	}
	return stderr
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
