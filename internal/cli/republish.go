package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source"
)

// HeaderRepublish marks a record `outboxrelay republish` produced from an
// outbox row rather than from the log; such records carry no
// outboxrelay-position/-index (the log that held them is gone).
const HeaderRepublish = "outboxrelay-republish"

// republishPage is how many rows one read takes: memory stays bounded by
// it, whatever the selection's size.
const republishPage = 500

// idsPerQuery bounds the explicit ids one query lists.
const idsPerQuery = 1000

type republishFlags struct {
	fromID, toID, since, until, ids, table, position string
	dryRun, force                                    bool
}

// republishIndexBase is where the outboxrelay-index of records given a
// --position starts: above any real index within the transaction at that
// position (the lost checkpoint may be inside one), so that none of them
// looks older than a record of it already delivered.
const republishIndexBase = 1_000_000_000

func cmdRepublish(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var f republishFlags
	cfg, code := loadConfig("republish", args, environ, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&f.fromID, "from-id", "", "the smallest event id to publish (inclusive)")
		fs.StringVar(&f.toID, "to-id", "", "the largest event id to publish (inclusive)")
		fs.StringVar(&f.since, "since", "", "publish rows created at or after this time (RFC 3339, by outbox.cleanup.column)")
		fs.StringVar(&f.until, "until", "", "publish rows created before this time (RFC 3339)")
		fs.StringVar(&f.ids, "ids", "", "publish exactly these event ids (comma-separated)")
		fs.StringVar(&f.table, "table", "", "only this outbox table (schema.table; default: every outbox table)")
		fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be published, publish nothing")
		fs.BoolVar(&f.force, "force", false, "publish even while a relay holds the checkpoint lock")
		fs.StringVar(&f.position, "position", "", "give the records this log position (the lost checkpoint's, in the position-lost runbook); default none")
	})
	if cfg == nil {
		return code
	}
	sel, err := f.selection()
	if err != nil {
		usageError(stderr, "republish", err)
		return ExitUsage
	}
	src := tools(cfg, io.Discard)
	if f.position != "" {
		if _, err := src.Compare(f.position, f.position); err != nil {
			usageError(stderr, "republish", fmt.Errorf("--position %s: not a %s position: %w", f.position, src.Kind(), err))
			return ExitUsage
		}
	}
	ta, ok := src.(source.TableAccess)
	if !ok {
		fmt.Fprintf(stderr, "republish: source %s cannot read its outbox tables\n", src.Kind())
		return ExitFailure
	}
	if !f.dryRun {
		unlock, code := republishLock(cfg, f.force, stderr)
		if unlock == nil {
			return code
		}
		defer unlock()
	}
	conn, err := ta.OpenTables(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "republish:", err)
		return ExitFailure
	}
	defer conn.Close()
	specs, err := republishTables(ctx, cfg, conn, f.table, !sel.Since.IsZero() || !sel.Until.IsZero())
	if err != nil {
		fmt.Fprintln(stderr, "republish:", err)
		return ExitFailure
	}
	chunks := splitKeys(sel)
	var total int64
	for _, t := range specs {
		for _, s := range chunks {
			info, err := conn.Count(ctx, t, s)
			if err != nil {
				fmt.Fprintln(stderr, "republish:", err)
				return ExitFailure
			}
			total += info.Rows
			if info.Rows == 0 {
				continue
			}
			fmt.Fprintf(stdout, "%s: %d rows, %s %s … %s", t.Table, info.Rows, t.Key, info.FirstKey, info.LastKey)
			if info.OldestText != "" {
				fmt.Fprintf(stdout, ", %s %s … %s", cfg.Outbox.Cleanup.Column, info.OldestText, info.NewestText)
			}
			fmt.Fprintln(stdout)
		}
	}
	if total == 0 {
		fmt.Fprintln(stderr, "republish: no outbox row matches the selection: nothing to publish")
		return ExitFailure
	}
	if f.dryRun {
		fmt.Fprintf(stdout, "dry run: %d rows would be published; nothing produced\n", total)
		return ExitOK
	}
	n, skipped, err := republish(ctx, cfg, conn, specs, chunks, headerPosition(f.position), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "republish: %v (%d records acknowledged before it)\n", err, n)
		return ExitFailure
	}
	fmt.Fprintf(stdout, "republished %d records (header %s: true)", n, HeaderRepublish)
	if skipped > 0 {
		fmt.Fprintf(stdout, "; %d bad rows handled by outbox.on_bad_row", skipped)
	}
	fmt.Fprintln(stdout)
	return ExitOK
}

// selection checks the flags: at least one way of choosing rows.
func (f republishFlags) selection() (source.Selection, error) {
	var sel source.Selection
	sel.FromKey, sel.ToKey = f.fromID, f.toID
	for _, t := range []struct {
		name, v string
		to      *time.Time
	}{{"since", f.since, &sel.Since}, {"until", f.until, &sel.Until}} {
		if t.v == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.v)
		if err != nil {
			return sel, fmt.Errorf("--%s: %q is not an RFC 3339 time (2026-12-02T04:00:00Z)", t.name, t.v)
		}
		*t.to = v
	}
	if f.ids != "" {
		for _, id := range strings.Split(f.ids, ",") {
			if id = strings.TrimSpace(id); id != "" {
				sel.Keys = append(sel.Keys, id)
			}
		}
		if len(sel.Keys) == 0 {
			return sel, errors.New("--ids: no id given")
		}
	}
	if sel.FromKey == "" && sel.ToKey == "" && sel.Since.IsZero() && sel.Until.IsZero() && len(sel.Keys) == 0 {
		return sel, errors.New("choose the rows: --from-id/--to-id, --since/--until or --ids (they combine)")
	}
	if !sel.Since.IsZero() && !sel.Until.IsZero() && !sel.Since.Before(sel.Until) {
		return sel, fmt.Errorf("--until %s is not after --since %s", f.until, f.since)
	}
	return sel, nil
}

// splitKeys keeps each query's list of explicit ids short.
func splitKeys(sel source.Selection) []source.Selection {
	if len(sel.Keys) <= idsPerQuery {
		return []source.Selection{sel}
	}
	var out []source.Selection
	for keys := sel.Keys; len(keys) > 0; {
		n := min(idsPerQuery, len(keys))
		s := sel
		s.Keys = keys[:n]
		out = append(out, s)
		keys = keys[n:]
	}
	return out
}

// republishLock keeps a relay off the checkpoint while records are
// produced, as `checkpoint set` does: a relay running beside a republish
// races it (per-key order between its records and the republished ones).
// A nil unlock comes with the exit code.
func republishLock(cfg *config.Config, force bool, stderr io.Writer) (func(), int) {
	store, err := commandStore(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "republish:", err)
		return nil, ExitUsage
	}
	unlock, err := store.Lock()
	switch {
	case err != nil && !force:
		store.Close()
		fmt.Fprintf(stderr, "republish: refused: %v; its records would race the republished ones (per-key order): stop the relay, or add --force to publish beside it\n", err)
		return nil, ExitFailure
	case err != nil:
		fmt.Fprintf(stderr, "republish: warning: --force: publishing beside a running relay (%v)\n", err)
		unlock = func() {}
	}
	if cfg.Checkpoint.Type == "kafka" {
		fmt.Fprintf(stderr, "republish: note: the Kafka store has no lock, so a running relay named %s cannot be detected: stop it first if its records and these must not interleave\n", cfg.Relay.Name)
	}
	return func() { unlock(); store.Close() }, ExitOK
}

// republishTables resolves the outbox tables (or --table) and checks that
// each key identifies one row (paging by key relies on it).
func republishTables(ctx context.Context, cfg *config.Config, conn source.TableConn, only string, byTime bool) ([]source.TableSpec, error) {
	names, err := conn.Tables(ctx)
	if err != nil {
		return nil, err
	}
	var specs []source.TableSpec
	for _, n := range names {
		if only != "" && n != only {
			continue
		}
		t := source.TableSpec{Table: n, Key: cfg.Outbox.IDColumn(n), Time: cfg.Outbox.Cleanup.Column}
		if err := conn.CheckTable(ctx, t); err != nil {
			// Without --since/--until the time column only shows the
			// time span: a table without it still republishes by id.
			if t.Time = ""; byTime || conn.CheckTable(ctx, t) != nil {
				return nil, err
			}
		}
		specs = append(specs, t)
	}
	if len(specs) == 0 {
		if only != "" {
			return nil, fmt.Errorf("--table %s is not one of the outbox tables %v", only, names)
		}
		return nil, errors.New("no outbox table found (source tables)")
	}
	return specs, nil
}

// acks counts acknowledgements and keeps the first failure.
type acks struct {
	n   atomic.Int64
	mu  sync.Mutex
	err error
}

func (a *acks) ack(err error) {
	if err == nil {
		a.n.Add(1)
		return
	}
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
}

func (a *acks) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// republish produces the selection's rows page by page, mapped as the
// relay maps them, and waits for every acknowledgement.
func republish(ctx context.Context, cfg *config.Config, conn source.TableConn, specs []source.TableSpec, chunks []source.Selection, position string, stderr io.Writer) (acked int64, bad int, err error) {
	mapper, err := outbox.New(cfg.Outbox)
	if err != nil {
		return 0, 0, err
	}
	log := newLogger(cfg.Log, stderr)
	snk, err := kafka.New(cfg.Kafka, log.With().Str("component", "sink.kafka").Logger())
	if err != nil {
		return 0, 0, err
	}
	a := &acks{}
	index := republishIndexBase
	send := func() error {
		for _, t := range specs {
			for _, sel := range chunks {
				var after *string
				for {
					rows, last, err := conn.Rows(ctx, t, sel, after, republishPage)
					if err != nil {
						return err
					}
					for i, row := range rows {
						rec, err := mapper.Map(row, "", 0, time.Time{})
						var br *outbox.BadRowError
						switch {
						case errors.As(err, &br):
							bad++
							switch mapper.Policy() {
							case outbox.PolicySkip:
								log.Warn().Str("table", t.Table).Str("event_id", br.EventID).Str("reason", br.Reason).Msg("republish: bad row skipped (outbox.on_bad_row: skip)")
								continue
							case outbox.PolicyDeadLetter:
								rec = mapper.DeadLetter(row, br, false)
							default:
								return fmt.Errorf("table %s, row %d of this page: %w (outbox.on_bad_row: fail)", t.Table, i, err)
							}
						case err != nil:
							return err
						default:
							rec.Headers = republishHeaders(rec.Headers, position, index)
							index++
						}
						if err := snk.Send(ctx, rec, a.ack); err != nil {
							return err
						}
						if err := a.failed(); err != nil {
							return err
						}
					}
					if len(rows) < republishPage {
						break
					}
					after = &last
				}
			}
		}
		return nil
	}
	err = send()
	if err != nil {
		_ = snk.Abort()
	}
	cerr := snk.Close()
	switch {
	case err != nil:
	case a.failed() != nil:
		err = a.failed()
	case cerr != nil:
		err = cerr
	case ctx.Err() != nil:
		err = ctx.Err()
	}
	return a.n.Load(), bad, err
}

// republishHeaders marks the record and replaces the log position
// headers: a republished record has none (its log is gone), unless
// --position gave one, with index counting the records.
func republishHeaders(hs []sink.Header, position string, index int) []sink.Header {
	out := make([]sink.Header, 0, len(hs)+1)
	for _, h := range hs {
		if h.Key == outbox.HeaderPosition || h.Key == outbox.HeaderIndex {
			continue
		}
		out = append(out, h)
	}
	if position != "" {
		out = append(out, sink.Header{Key: outbox.HeaderPosition, Value: []byte(position)},
			sink.Header{Key: outbox.HeaderIndex, Value: strconv.AppendInt(nil, int64(index), 10)})
	}
	return append(out, sink.Header{Key: HeaderRepublish, Value: []byte("true")})
}

// headerPosition is a checkpoint position as records carry theirs: the
// transaction's place in the log, without a GTID set, rows delivered or
// prepared XA transactions.
func headerPosition(pos string) string {
	if i := strings.IndexAny(pos, "@+;"); i >= 0 {
		pos = pos[:i]
	}
	return strings.TrimSpace(pos)
}
