package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	"github.com/outboxrelay/outboxrelay/checkpoint/mem"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source"
)

// tools returns the configured source, for the position commands.
func tools(cfg *config.Config, stderr io.Writer) source.Source {
	src, err := cfg.Source.New(newLogger(cfg.Log, stderr))
	if err != nil {
		panic(err) // unreachable: the configuration was validated
	}
	return src
}

// showOutput is `checkpoint show --json`.
type showOutput struct {
	checkpoint.Checkpoint
	Store         string   `json:"store"`
	AgeSeconds    float64  `json:"age_seconds"`
	ServerCurrent string   `json:"server_position,omitempty"`
	BehindBytes   *int64   `json:"behind_bytes,omitempty"`
	Notes         []string `json:"notes,omitempty"`
	ServerError   string   `json:"server_error,omitempty"`
}

// commandStore is the configured store for a command: it logs only
// warnings, on stderr, beside the command's own output.
func commandStore(cfg *config.Config, stderr io.Writer) (Store, error) {
	return newStore(cfg, newLogger(cfg.Log, stderr).Level(zerolog.WarnLevel))
}

func cmdCheckpointShow(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var asJSON bool
	cfg, code := loadConfig("checkpoint show", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if cfg == nil {
		return code
	}
	store, err := commandStore(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint show:", err)
		return ExitUsage
	}
	defer store.Close()
	cp, err := peek(ctx, store)
	if errors.Is(err, checkpoint.ErrNotFound) {
		fmt.Fprintf(stderr, "no checkpoint stored at %s: the relay will start at %s\n", store.Where(), tools(cfg, io.Discard).StartNote())
		return ExitFailure
	}
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint show:", err)
		return ExitFailure
	}
	out := showOutput{Checkpoint: cp, Store: store.Where(), AgeSeconds: time.Since(cp.UpdatedAt).Seconds()}
	// The server's view is best effort: the stored position is shown even
	// when the database cannot be reached.
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	st, err := tools(cfg, io.Discard).Status(sctx, cp.Position)
	cancel()
	if err != nil {
		out.ServerError = err.Error()
	} else {
		out.ServerCurrent, out.Notes = st.Current, st.Notes
		if st.BehindBytes >= 0 {
			out.BehindBytes = &st.BehindBytes
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return ExitOK
	}
	fmt.Fprintf(stdout, "stored:   %s\nsource:   %s\nposition: %s\nupdated:  %s (%s ago)\n", store.Where(), cp.Source, cp.Position, cp.UpdatedAt.Format(time.RFC3339), time.Since(cp.UpdatedAt).Round(time.Second))
	if out.ServerError != "" {
		fmt.Fprintf(stdout, "server:   unreachable: %s\n", out.ServerError)
		return ExitOK
	}
	fmt.Fprintf(stdout, "server:   %s", out.ServerCurrent)
	if out.BehindBytes != nil {
		fmt.Fprintf(stdout, " (the checkpoint is %d bytes of log behind)", *out.BehindBytes)
	}
	fmt.Fprintln(stdout)
	for _, n := range out.Notes {
		fmt.Fprintf(stdout, "note:     %s\n", n)
	}
	return ExitOK
}

// writeNote says what writing a position to the configured store does to
// a relay running on it. warning is for stderr: the user should act.
func writeNote(cfg *config.Config) (note, warning string) {
	if cfg.Checkpoint.Type != "kafka" {
		return "", ""
	}
	if cfg.Relay.Delivery == relay.ExactlyOnce {
		return fmt.Sprintf("relay.delivery is exactly-once: the position is committed in a transaction of %s, which fences a running exactly-once relay named %s — it stops, and resumes after this position when started again",
			kafka.TransactionalID(cfg.Relay.Name), cfg.Relay.Name), ""
	}
	return "", fmt.Sprintf("warning: the Kafka store has no lock: a relay named %s that is running now overwrites this position at its next checkpoint (relay.checkpoint_interval, %s); stop it first, then run this again",
		cfg.Relay.Name, cfg.Relay.CheckpointInterval)
}

func cmdCheckpointSet(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var to string
	var dryRun bool
	cfg, code := loadConfig("checkpoint set", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&to, "to", "", "the new position (MySQL FILE:OFFSET[@GTIDSET] or @GTIDSET; Postgres LSN X/Y); required")
		fs.BoolVar(&dryRun, "dry-run", false, "validate and show the change without writing it")
	})
	if cfg == nil {
		return code
	}
	if to == "" {
		fmt.Fprintln(stderr, "checkpoint set: --to is required")
		return ExitUsage
	}
	store, err := commandStore(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint set:", err)
		return ExitUsage
	}
	defer store.Close()
	unlock, err := store.Lock()
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint set: refused:", err)
		return ExitFailure
	}
	defer unlock()
	t := tools(cfg, io.Discard)
	pos, err := t.Check(ctx, to, source.OpenOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "checkpoint set: refused: %v\n", err)
		return ExitFailure
	}
	old := "(none)"
	switch cp, err := peek(ctx, store); {
	case err == nil:
		old = cp.Position
	case !errors.Is(err, checkpoint.ErrNotFound):
		fmt.Fprintln(stderr, "checkpoint set:", err)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "checkpoint: %s\n  from: %s\n  to:   %s\n", store.Where(), old, pos)
	note, warning := writeNote(cfg)
	if note != "" {
		fmt.Fprintf(stdout, "note: %s\n", note)
	}
	if warning != "" {
		fmt.Fprintln(stderr, warning)
	}
	if dryRun {
		fmt.Fprintln(stdout, "dry run: nothing written")
		return ExitOK
	}
	if err := store.Save(ctx, checkpoint.Checkpoint{Source: t.Kind(), Position: pos, UpdatedAt: time.Now().UTC()}); err != nil {
		fmt.Fprintln(stderr, "checkpoint set:", err)
		return ExitFailure
	}
	fmt.Fprintln(stdout, "written: the relay resumes right after it on its next start")
	return ExitOK
}

// cmdCheckpointImport moves a file checkpoint into the configured Kafka
// store: the one way from checkpoint.type file to kafka (and so to
// exactly-once), checked as `checkpoint set` checks a position.
func cmdCheckpointImport(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var from string
	var dryRun, force bool
	cfg, code := loadConfig("checkpoint import", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "file", "", "the file checkpoint to import (the old checkpoint.file.path); required")
		fs.BoolVar(&dryRun, "dry-run", false, "check and show the import without writing it")
		fs.BoolVar(&force, "force", false, "replace a position the Kafka store already holds for relay.name")
	})
	if cfg == nil {
		return code
	}
	if from == "" {
		usageError(stderr, "checkpoint import", errors.New("--file is required"))
		return ExitUsage
	}
	if cfg.Checkpoint.Type != "kafka" {
		fmt.Fprintf(stderr, "checkpoint import: the configuration's checkpoint.type is %s: import moves a file checkpoint into the Kafka store, so set checkpoint.type: kafka (with relay.name) in the configuration\n", cfg.Checkpoint.Type)
		return ExitUsage
	}
	src, err := file.New(file.Config{Path: from})
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint import: --file:", err)
		return ExitUsage
	}
	cp, err := src.Load(ctx)
	if err == nil {
		// A relay still running on the file would move on past the
		// import: refuse while one holds it, and read it again under
		// the lock.
		unlock, lerr := src.Lock()
		if lerr != nil {
			fmt.Fprintf(stderr, "checkpoint import: refused: %v\n", lerr)
			return ExitFailure
		}
		defer unlock()
		cp, err = src.Load(ctx)
	}
	if errors.Is(err, checkpoint.ErrNotFound) {
		fmt.Fprintf(stderr, "checkpoint import: refused: no checkpoint at %s\n", from)
		return ExitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "checkpoint import: refused: %v\n", err)
		return ExitFailure
	}
	t := tools(cfg, io.Discard)
	if cp.Source != t.Kind() {
		fmt.Fprintf(stderr, "checkpoint import: refused: %s holds a %s position (%s) but source.type is %s: import the checkpoint of this source\n", from, cp.Source, cp.Position, t.Kind())
		return ExitFailure
	}
	pos, err := t.Check(ctx, cp.Position, source.OpenOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "checkpoint import: refused: the position in %s: %v\n", from, err)
		return ExitFailure
	}
	store, err := commandStore(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "checkpoint import:", err)
		return ExitUsage
	}
	defer store.Close()
	old := "(none)"
	switch held, err := peek(ctx, store); {
	case err == nil && !force:
		fmt.Fprintf(stderr, "checkpoint import: refused: %s already holds position %s (written %s): a relay named %s has run on the Kafka store; add --force to replace it with %s from %s\n",
			store.Where(), held.Position, held.UpdatedAt.Format(time.RFC3339), cfg.Relay.Name, pos, from)
		return ExitFailure
	case err == nil:
		old = held.Position
	case !errors.Is(err, checkpoint.ErrNotFound):
		fmt.Fprintln(stderr, "checkpoint import:", err)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "import: %s\n  into: %s\n  from: %s\n  to:   %s (written %s)\n", from, store.Where(), old, pos, cp.UpdatedAt.Format(time.RFC3339))
	note, warning := writeNote(cfg)
	if note != "" {
		fmt.Fprintf(stdout, "note: %s\n", note)
	}
	if warning != "" && old != "(none)" {
		fmt.Fprintln(stderr, warning)
	}
	if dryRun {
		fmt.Fprintln(stdout, "dry run: nothing written")
		return ExitOK
	}
	// The position keeps the time the relay stored it: it is as old as
	// the file says.
	if err := store.Save(ctx, checkpoint.Checkpoint{Source: cp.Source, Position: pos, UpdatedAt: cp.UpdatedAt}); err != nil {
		fmt.Fprintln(stderr, "checkpoint import:", err)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "imported: a relay with this configuration resumes right after it; %s is left as it was (keep it as a backup until the relay has run)\n", from)
	return ExitOK
}

// rangeSource bounds a source to transactions that begin before `to`.
type rangeSource struct {
	relaySource
	to string
}

func (s rangeSource) Open(ctx context.Context, from string) (source.Reader, error) {
	r, err := s.relaySource.Open(ctx, from)
	if err != nil {
		return nil, err
	}
	return &rangeReader{Reader: r, to: s.to, compare: s.Compare}, nil
}

type rangeReader struct {
	source.Reader
	to      string
	compare func(a, b string) (int, error)
	done    bool
}

func (r *rangeReader) Next(ctx context.Context) (*source.Tx, error) {
	if r.done {
		return nil, source.ErrEndOfRange
	}
	tx, err := r.Reader.Next(ctx)
	if err != nil {
		return nil, err
	}
	if c, err := r.compare(tx.ID, r.to); err == nil && c >= 0 {
		r.done = true
		return nil, source.ErrEndOfRange
	}
	if tx.End != nil {
		if c, err := r.compare(tx.End.String(), r.to); err == nil && c >= 0 {
			r.done = true // this is the last one: do not wait for more
		}
	}
	return tx, nil
}

// countingSink records what the replay produced.
type countingSink struct {
	sink.Sink
	mu          sync.Mutex
	n           int
	first, last string
}

func (c *countingSink) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	for _, h := range r.Headers {
		if h.Key == outbox.HeaderPosition {
			c.mu.Lock()
			if c.first == "" {
				c.first = string(h.Value)
			}
			c.last = string(h.Value)
			c.n++
			c.mu.Unlock()
		}
	}
	return c.Sink.Send(ctx, r, ack)
}

func cmdReplay(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var from, to, topic string
	var serverID uint
	cfg, code := loadConfig("replay", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&from, "from", "", "replay the transactions after this position (required)")
		fs.StringVar(&to, "to", "", "stop before the first transaction that begins at or after this position (default: the server's position now)")
		fs.StringVar(&topic, "topic-override", "", "send every record to this topic instead of the mapped one")
		fs.UintVar(&serverID, "server-id", 0, "MySQL: the replay's replica server_id (default: a free one picked by the relay)")
	})
	if cfg == nil {
		return code
	}
	if from == "" {
		fmt.Fprintln(stderr, "replay: --from is required")
		return ExitUsage
	}
	log := newLogger(cfg.Log, stderr)
	if serverID > math.MaxUint32 {
		fmt.Fprintf(stderr, "replay: --server-id: %d is not a server_id (want 1 to %d)\n", serverID, uint32(math.MaxUint32))
		return ExitUsage
	}
	t := tools(cfg, stderr)
	o := source.OpenOptions{Replay: true, ReplicaID: uint32(serverID)}
	var err error
	if from, err = t.Check(ctx, from, o); err != nil {
		fmt.Fprintf(stderr, "replay: --from: %v\n", err)
		return ExitFailure
	}
	if to == "" {
		st, err := t.Status(ctx, "")
		if err != nil {
			fmt.Fprintf(stderr, "replay: %v\n", err)
			return ExitFailure
		}
		to = st.Current
	}
	switch c, err := t.Compare(from, to); {
	case err != nil:
		fmt.Fprintf(stderr, "replay: --from %s and --to %s cannot be compared: %v\n", from, to, err)
		return ExitUsage
	case c >= 0:
		fmt.Fprintf(stderr, "replay: --to %s is not after --from %s: nothing to replay\n", to, from)
		return ExitFailure
	}
	ocfg := cfg.Outbox
	if topic != "" {
		ocfg.Topic = topic
	}
	mapper, err := outbox.New(ocfg)
	if err != nil {
		fmt.Fprintf(stderr, "replay: --topic-override: %v\n", err)
		return ExitUsage
	}
	counter := &countingSink{}
	kcfg := cfg.Kafka
	klog := log.With().Str("component", "sink.kafka").Logger()
	newSink := func(context.Context) (sink.Sink, error) {
		k, err := kafka.New(kcfg, klog)
		if err != nil {
			return nil, err
		}
		counter.Sink = k
		return counter, nil
	}
	o.CheckTable = mapper.CheckTable
	store := mem.At(checkpoint.Checkpoint{Source: t.Kind(), Position: from})
	rcfg := cfg.Relay
	rcfg.Ephemeral = true
	r := relay.New(rcfg, rangeSource{relaySource: relaySource{Source: t, o: o}, to: to}, newSink, store, mapper, log.With().Str("component", "replay").Logger())
	if err := r.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "replay: %v\n", err)
		return ExitFailure
	}
	if ctx.Err() != nil {
		cp, _ := store.Load(context.Background())
		fmt.Fprintf(stdout, "replay interrupted after %d records (up to %s)\n", counter.n, cp.Position)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "replayed %d records from transactions after %s and before %s\n  first transaction: %s\n  last transaction:  %s\n", counter.n, from, to, counter.first, counter.last)
	return ExitOK
}
