package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// usage is `outboxrelay help`. The README's "Commands" section holds the
// same text, and each command's --help text below (cli_test.go checks).
const usage = `outboxrelay relays transactional outbox rows from a database log to Kafka.

Usage:
  outboxrelay run --config FILE [--log-level LEVEL]
  outboxrelay check --config FILE [--json]
  outboxrelay checkpoint show --config FILE [--json]
  outboxrelay checkpoint set --config FILE --to POSITION [--dry-run]
  outboxrelay checkpoint import --config FILE --file PATH [--dry-run] [--force]
  outboxrelay replay --config FILE --from POSITION [--to POSITION] [--topic-override TOPIC] [--server-id ID]
  outboxrelay republish --config FILE (--from-id ID --to-id ID | --since TIME --until TIME | --ids ID,…) [--table TABLE] [--position POSITION] [--dry-run] [--force]
  outboxrelay version

Every command takes --help. Exit codes: 0 ok, 1 failure, 2 bad arguments or configuration.
`

// commandHelp is each command's --help, by the name loadConfig gets.
var commandHelp = map[string]string{
	"run": `usage: outboxrelay run --config FILE [--log-level LEVEL]

Relays outbox rows to Kafka until SIGTERM/SIGINT, then drains in-flight
records, writes the final checkpoint and exits 0 (a second signal exits at
once).

  --config FILE        the YAML configuration (required); OUTBOXRELAY_* variables override its keys
  --log-level LEVEL    override log.level: debug, info, warn or error
`,
	"check": `usage: outboxrelay check --config FILE [--json]

Connects with the configured credentials and prints one line per check of
the database, Kafka and the checkpoint location, each failure with its fix.
Exits 0 only when no check fails.

  --config FILE        the YAML configuration (required)
  --json               print JSON, also for a configuration or usage error: {"ok":false,"error":"…"}
`,
	"checkpoint show": `usage: outboxrelay checkpoint show --config FILE [--json]

Prints the stored checkpoint, its age and, when the database answers, how
far behind the server's position it is.

  --config FILE        the YAML configuration (required)
  --json               print JSON
`,
	"checkpoint set": `usage: outboxrelay checkpoint set --config FILE --to POSITION [--dry-run]

Moves the checkpoint after checking the position against the server.
File store: refused while a relay runs on the same checkpoint. Kafka
store: with relay.delivery exactly-once it fences a running relay of
relay.name (it stops); with at-least-once stop the relay first, or it
overwrites the new position.

  --config FILE        the YAML configuration (required)
  --to POSITION        the new position (required): MySQL FILE:OFFSET[@GTIDSET] or @GTIDSET; Postgres LSN X/Y
  --dry-run            check and show the change without writing it
`,
	"checkpoint import": `usage: outboxrelay checkpoint import --config FILE --file PATH [--dry-run] [--force]

Moves a file checkpoint into the Kafka store the configuration names
(checkpoint.type kafka, relay.name), after checking its source kind and
position against the server as checkpoint set does; refused while a relay
runs on the file, and when the Kafka store already holds a position for
relay.name unless --force. The file is left as it was.

  --config FILE        the YAML configuration with checkpoint.type kafka (required)
  --file PATH          the file checkpoint to import: the old checkpoint.file.path (required)
  --dry-run            check and show the import without writing it
  --force              replace the position the Kafka store holds for relay.name
`,
	"replay": `usage: outboxrelay replay --config FILE --from POSITION [--to POSITION] [--topic-override TOPIC] [--server-id ID]

Re-publishes the outbox events of a range of transactions with their
original headers, beside a running relay; the relay's checkpoint is not
touched.

  --config FILE           the YAML configuration (required)
  --from POSITION         replay the transactions at and after this position (required)
  --to POSITION           stop before the first transaction that begins at or after this position (default: the server's position now)
  --topic-override TOPIC  send every record to this topic instead of the mapped one
  --server-id ID          MySQL: the replay's replica server_id (default: a free one picked by the relay)
`,
	"republish": `usage: outboxrelay republish --config FILE (--from-id ID --to-id ID | --since TIME --until TIME | --ids ID,…) [--table TABLE] [--position POSITION] [--dry-run] [--force]

Publishes outbox rows read from the outbox tables themselves — when the
log that held them is gone (see docs/operations.md, "Position lost") —
mapped as the relay maps them (topic, key, headers), each with the header
outboxrelay-republish: true and without outboxrelay-position/-index. The
selectors combine; rows are read by event id, 500 at a time. Refused while
a relay holds the file checkpoint's lock (its records would race these)
unless --force; the checkpoint is not touched. With --position the records
carry that position instead (outboxrelay-index from 1000000000), so that
consumers checking versions order them: the lost checkpoint's, when
re-publishing a gap (docs/operations.md).

  --config FILE        the YAML configuration (required)
  --from-id ID         the smallest event id to publish (inclusive, in the id column's order)
  --to-id ID           the largest event id to publish (inclusive)
  --since TIME         rows whose outbox.cleanup.column is at or after TIME (RFC 3339, e.g. 2026-12-02T04:00:00Z)
  --until TIME         rows whose outbox.cleanup.column is before TIME (RFC 3339)
  --ids ID,…           exactly these event ids (comma-separated)
  --table TABLE        only this outbox table (schema.table; default: every outbox table)
  --position POSITION  the outboxrelay-position the records carry (default: none)
  --dry-run            print the count and the id and time range per table; publish nothing
  --force              publish even while a relay holds the checkpoint lock
`,
	"version": `usage: outboxrelay version

Prints the version, and the commit and build time it was built from.
`,
}

// helpFor is the --help of command name (a known one).
func helpFor(name string, fs *flag.FlagSet) string {
	text := commandHelp[name]
	// A flag added without documentation still shows up (and then the
	// README check fails until both are written).
	if fs != nil {
		var b strings.Builder
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(text, "--"+f.Name+" ") && !strings.Contains(text, "--"+f.Name+"\n") {
				fmt.Fprintf(&b, "  --%-19s %s\n", f.Name, f.Usage)
			}
		})
		text += b.String()
	}
	return text
}

// parseFlags parses a command's flags, quietly: the caller prints the
// help (for -h/--help) or the error (a bad flag or value, a stray
// argument).
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		// The flag package names flags with one dash; the usage has two.
		msg := strings.NewReplacer("defined: -", "defined: --", "flag -", "flag --", "argument: -", "argument: --", "for -", "for --").Replace(err.Error())
		return false, errors.New(msg)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return false, nil
}

// usageError prints a command's usage error with the way to its help.
func usageError(stderr io.Writer, name string, err error) {
	fmt.Fprintf(stderr, "%s: %v\nrun 'outboxrelay %s --help' for usage\n", name, err, name)
}

// jsonError is `check --json`'s output when it cannot check at all (a
// configuration or usage error): a machine reading it still gets JSON.
func jsonError(w io.Writer, err error) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}{false, err.Error()})
}

// wantsJSON reports whether args ask for --json, read leniently (before
// or after a flag the parser stopped at), for error reporting only.
func wantsJSON(args []string) bool {
	for _, a := range args {
		switch a {
		case "--json", "-json", "--json=true", "-json=true", "--json=1", "-json=1":
			return true
		case "--":
			return false
		}
	}
	return false
}
