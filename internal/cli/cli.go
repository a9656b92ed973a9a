// Package cli is the outboxrelay command line: it parses arguments, loads
// the configuration, wires the components and maps outcomes to exit codes.
// It is the only place that knows every component.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/relay"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the relay stopped on an error
	ExitUsage   = 2 // bad arguments or configuration
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = ""

const usage = `outboxrelay relays transactional outbox rows from a database log to Kafka.

Usage:
  outboxrelay run --config FILE [--log-level LEVEL]
  outboxrelay check --config FILE [--json]
  outboxrelay checkpoint show --config FILE [--json]
  outboxrelay checkpoint set --config FILE --to POSITION [--dry-run]
  outboxrelay replay --config FILE --from POSITION [--to POSITION] [--topic-override TOPIC]
  outboxrelay version
`

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	// Loggers write from several goroutines (the relay, the producer's
	// callbacks, shutdown): serialize, whatever writers the caller passed.
	stdout, stderr = &lockedWriter{w: stdout}, &lockedWriter{w: stderr}
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
		}
		fmt.Fprint(stderr, "usage: outboxrelay checkpoint show|set --config FILE …\n")
		return ExitUsage
	case "replay":
		return cmdReplay(ctx, args[1:], environ, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "outboxrelay", version())
		return ExitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return ExitUsage
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// loadConfig parses the common --config flag plus extra flags.
func loadConfig(name string, args []string, environ []string, stderr io.Writer, extra func(*flag.FlagSet)) (*config.Config, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path of the YAML configuration file (required)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, ExitUsage
	}
	if *path == "" {
		fmt.Fprintf(stderr, "%s: --config is required\n", name)
		return nil, ExitUsage
	}
	cfg, err := config.Load(*path, environ)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, ExitUsage
	}
	return cfg, ExitOK
}

func newLogger(cfg config.Log, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if cfg.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func cmdRun(ctx context.Context, args []string, environ []string, stderr io.Writer) int {
	var level string
	cfg, code := loadConfig("run", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&level, "log-level", "", "override log.level (debug, info, warn, error)")
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
	store := svc.Store
	defer store.Close()
	unlock, err := store.Lock()
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return ExitFailure
	}
	defer unlock()
	if _, err := svc.Listen(); err != nil {
		log.Error().Err(err).Msg("cannot start")
		return ExitFailure
	}
	log.Info().Str("version", version()).Str("source", cfg.Source.Type).Strs("tables", cfg.Source.Tables()).Strs("brokers", cfg.Kafka.Brokers).Msg("outboxrelay starting")
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
		log.Error().Err(err).Msg("relay stopped")
		return ExitFailure
	}
	log.Info().Msg("relay stopped cleanly")
	return ExitOK
}

// Build wires the components named by cfg (see NewService; the metrics
// endpoint is served only by Service.Run).
func Build(cfg *config.Config, log zerolog.Logger) (*relay.Relay, *file.Store, error) {
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
