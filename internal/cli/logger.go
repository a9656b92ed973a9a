package cli

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/config"
)

// logTimeFormat is RFC 3339 with milliseconds, always three digits so
// that lines sort and align.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// newLogger is the process's logger: JSON lines (or log.format: console,
// coloured only on a terminal), each with a millisecond timestamp.
func newLogger(cfg config.Log, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	if cfg.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: logTimeFormat, NoColor: !isTerminal(w)}
	}
	// A hook, not zerolog.TimeFieldFormat: that global is shared by every
	// logger in the process (and written while tests log).
	return zerolog.New(w).Level(lvl).Hook(msTimestamp{})
}

// msTimestamp stamps each line as zerolog's Timestamp does, with
// milliseconds.
type msTimestamp struct{}

func (msTimestamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, zerolog.TimestampFunc().Format(logTimeFormat))
}

// isTerminal reports whether w, under Main's wrappers, is a terminal:
// colours (ANSI escapes) are for people, not for files and collectors.
func isTerminal(w io.Writer) bool {
	for {
		switch v := w.(type) {
		case *streams:
			w = v.lockedWriter
		case *lockedWriter:
			w = v.w
		case *os.File:
			return isatty.IsTerminal(v.Fd()) || isatty.IsCygwinTerminal(v.Fd())
		default:
			return false
		}
	}
}
