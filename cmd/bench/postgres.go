package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	pgDB  = "bench"
	pgPub = "bench_pub"
)

var pgSchema = []string{
	`CREATE TABLE outbox (
  id text PRIMARY KEY,
  aggregatetype text NOT NULL,
  aggregateid text NOT NULL,
  type text NOT NULL,
  payload json,
  created_at timestamptz NOT NULL DEFAULT now())`,
	`CREATE TABLE orders (id bigserial PRIMARY KEY, ref text NOT NULL, total numeric(10,2) NOT NULL, note text NOT NULL)`,
	`CREATE TABLE order_lines (id bigserial PRIMARY KEY, ref text NOT NULL, sku text NOT NULL, qty int NOT NULL, note text NOT NULL)`,
	// Only the outbox: the server filters the other tables out of the
	// stream, for pg_recvlogical and the relay alike.
	`CREATE PUBLICATION ` + pgPub + ` FOR TABLE outbox`,
}

type pgBench struct {
	o     *options
	dsn   string // the bench database
	conn  *pgx.Conn
	slots int
}

func benchPostgres(ctx context.Context, o *options) ([]row, error) {
	u, err := url.Parse(o.postgresDSN)
	if err != nil {
		return nil, fmt.Errorf("RELAYTEST_POSTGRES_DSN: %w", err)
	}
	admin, err := pgx.Connect(ctx, o.postgresDSN)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// Slots on the old bench database keep it from being dropped.
	_, _ = admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, pgDB)
	for _, q := range []string{"DROP DATABASE IF EXISTS " + pgDB, "CREATE DATABASE " + pgDB} {
		if _, err := admin.Exec(ctx, q); err != nil {
			admin.Close(ctx)
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	var version string
	_ = admin.QueryRow(ctx, "SHOW server_version").Scan(&version)
	admin.Close(ctx)
	logf("PostgreSQL %s at %s", version, u.Host)
	u.Path = "/" + pgDB
	p := &pgBench{o: o, dsn: u.String()}
	if p.conn, err = pgx.Connect(ctx, p.dsn); err != nil {
		return nil, err
	}
	defer p.conn.Close(context.Background())
	defer p.dropSlots(context.Background())
	for _, q := range pgSchema {
		if _, err := p.conn.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	w, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return nil, err
	}
	pw := &pgWriter{c: w}
	defer pw.close()
	const src = "PostgreSQL"
	var rows []row

	if o.phases["raw"] || o.phases["drain"] {
		got, err := p.backlog(ctx, pw, "drain", 0, newGen(o.seed, "d", o.payload))
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	for _, d := range liveVariants(o) {
		if !o.phases["live"] {
			break
		}
		logf("PostgreSQL live (%s): %d events/s for %v", d, o.liveRate, o.liveFor)
		slot := p.slotName() // created by the relay at its start
		res, err := liveWith(ctx, o, "postgres-live"+d.suffix(), p.sourceYAML(slot), pw, newGen(o.seed+2, "l"+d.suffix(), o.payload), d)
		if err != nil {
			return rows, fmt.Errorf("live: %w", err)
		}
		p.dropSlots(ctx)
		rows = append(rows, row{
			source: src, phase: fmt.Sprintf("live %d ev/s, %d-row tx%s", o.liveRate, o.liveTx, d.label()),
			rows: int64(res.written.events), events: int64(res.written.events), seconds: res.written.took.Seconds(),
			latency: "commit→ack " + latencyText(res.summary.CommitToAck) + "; e2e " + latencyText(res.e2e),
			rss:     res.usage.peakRSS, cpu: res.usage.cpu,
			note: "commit→ack: the relay's histogram from pgoutput's commit timestamp; e2e = writer's clock before INSERT → consumer",
		})
	}
	if o.phases["noise"] {
		got, err := p.backlog(ctx, pw, "noise", o.noise, newGen(o.seed+3, "n", o.payload))
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	if o.phases["eos"] || o.phases["single"] {
		got, err := deliveryPhases(ctx, o, deliverySource{
			src: src, prefix: "postgres", w: pw,
			starts: func(ctx context.Context, n int) ([]string, error) {
				var out []string
				for i := 0; i < n; i++ {
					slot, _, err := p.createSlot(ctx)
					if err != nil {
						return nil, err
					}
					out = append(out, p.sourceYAML(slot))
				}
				return out, nil
			},
			done:     p.dropSlots,
			liveYAML: func() string { return p.sourceYAML(p.slotName()) },
			latency:  func(s *latencySummary) string { return "commit→commit " + latencyText(s.CommitToAck) },
		})
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	if o.phases["big"] {
		slot, _, err := p.createSlot(ctx)
		if err != nil {
			return rows, err
		}
		logf("PostgreSQL big: one transaction of %d rows", o.bigRows)
		t0 := time.Now()
		if err := pw.big(ctx, newGen(o.seed+4, "b", o.payload), o.bigRows); err != nil {
			return rows, fmt.Errorf("write large transaction: %w", err)
		}
		logf("  written in %v", time.Since(t0).Round(time.Millisecond))
		res, err := drain(ctx, o, "postgres-big", p.sourceYAML(slot), int64(o.bigRows), "")
		if err != nil {
			return rows, fmt.Errorf("big: %w", err)
		}
		p.dropSlots(ctx)
		rows = append(rows, row{source: src, phase: fmt.Sprintf("one %d-row transaction", o.bigRows),
			rows: int64(o.bigRows), events: int64(o.bigRows), seconds: res.seconds, rss: res.usage.peakRSS, cpu: res.usage.cpu})
	}
	return rows, nil
}

// backlog creates the slots (before writing, so that they see it), writes
// the backlog, times pg_recvlogical over it, then drains it with the relay.
func (p *pgBench) backlog(ctx context.Context, w *pgWriter, name string, noise float64, g *gen) ([]row, error) {
	o := p.o
	const src = "PostgreSQL"
	var rows []row
	// Every reader needs its own slot, created before the backlog.
	var rawSlots, relaySlots []string
	var start string
	for i := 0; i < 2*o.repeat; i++ {
		slot, lsn, err := p.createSlot(ctx)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			start = lsn
		}
		if i < o.repeat {
			rawSlots = append(rawSlots, slot)
		} else {
			relaySlots = append(relaySlots, slot)
		}
	}
	// With --noise-cleanup the noise backlog is drained once more per
	// repeat, with outbox.cleanup on.
	var cleanupSlots []string
	for i := 0; noise > 0 && o.cleanup && i < o.repeat; i++ {
		slot, _, err := p.createSlot(ctx)
		if err != nil {
			return nil, err
		}
		cleanupSlots = append(cleanupSlots, slot)
	}
	defer func() {
		for _, slot := range cleanupSlots {
			p.dropSlot(ctx, slot)
		}
	}()
	profSlot := ""
	if o.profile != "" {
		var err error
		if profSlot, _, err = p.createSlot(ctx); err != nil {
			return nil, err
		}
	}
	logf("PostgreSQL %s: writing %d rows (%.0f%% on other tables), transactions of 1–%d rows", name, o.rows, noise*100, o.maxTx)
	st, err := writeBacklog(ctx, w, g, o.rows, o.maxTx, noise)
	if err != nil {
		return nil, fmt.Errorf("write backlog: %w", err)
	}
	var end string
	if err := p.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return nil, err
	}
	logf("  %d transactions, %d events, %d other rows in %v (%.0f rows/s); WAL %s → %s", st.txns, st.events, st.noise,
		st.took.Round(time.Millisecond), float64(o.rows)/st.took.Seconds(), start, end)
	phase := "backlog"
	if noise > 0 {
		phase = fmt.Sprintf("noise: backlog, %.0f%% other tables", noise*100)
	}
	var rawSecs float64
	if o.phases["raw"] {
		var raw runs
		for i, slot := range rawSlots {
			secs, err := p.recvlogical(ctx, slot, end)
			if err != nil {
				return rows, fmt.Errorf("pg_recvlogical: %w", err)
			}
			raw = append(raw, secs)
			logf("  raw pg_recvlogical %d/%d: %.2fs = %.0f rows/s (%d events)", i+1, o.repeat, secs, float64(o.rows)/secs, st.events)
		}
		rawSecs = raw.median()
		rows = append(rows, row{source: src, phase: phase + " — raw: pg_recvlogical pgoutput → /dev/null", rows: int64(o.rows), events: int64(st.events), seconds: rawSecs, spread: raw.spread()})
	}
	for _, slot := range rawSlots {
		p.dropSlot(ctx, slot)
	}
	if !o.phases["drain"] && noise == 0 || !o.phases["noise"] && noise > 0 {
		for _, slot := range relaySlots {
			p.dropSlot(ctx, slot)
		}
		return rows, nil
	}
	t, u, err := drains(ctx, o, "postgres-"+name, func(i int) string { return p.sourceYAML(relaySlots[i]) }, int64(st.events))
	if err != nil {
		return rows, fmt.Errorf("%s: %w", name, err)
	}
	for _, slot := range relaySlots {
		p.dropSlot(ctx, slot)
	}
	r := row{source: src, phase: phase + " — relay drain", rows: int64(o.rows), events: int64(st.events), seconds: t.median(), spread: t.spread(),
		rss: u.peakRSS, cpu: u.cpu}
	if rawSecs > 0 {
		r.ratio = ratioText(float64(o.rows)/rawSecs, r.rate(), "pg_recvlogical")
	}
	rows = append(rows, r)
	if len(cleanupSlots) > 0 {
		t, u, err := drainsWith(ctx, o, "postgres-"+name+"-cleanup", func(i int) string { return p.sourceYAML(cleanupSlots[i]) }, int64(st.events), delivery{cleanup: true})
		if err != nil {
			return rows, fmt.Errorf("%s with cleanup: %w", name, err)
		}
		rows = append(rows, row{source: src, phase: phase + " — relay drain, outbox.cleanup on", rows: int64(o.rows), events: int64(st.events), seconds: t.median(), spread: t.spread(),
			rss: u.peakRSS, cpu: u.cpu, ratio: ratioText(r.rate(), float64(o.rows)/t.median(), "drain without cleanup")})
	}
	if profSlot != "" {
		prefix := filepath.Join(o.profile, "postgres-"+name)
		logf("  profiled drain → %s.{cpu,allocs}.pprof", prefix)
		if _, err := drain(ctx, o, "postgres-"+name+"-profiled", p.sourceYAML(profSlot), int64(st.events), prefix); err != nil {
			return rows, fmt.Errorf("%s (profiled): %w", name, err)
		}
		p.dropSlot(ctx, profSlot)
	}
	return rows, nil
}

func (p *pgBench) sourceYAML(slot string) string {
	return fmt.Sprintf(`  type: postgres
  postgres:
    dsn: %q
    slot: %s
    publication: %s
    tables: [public.outbox]`, p.dsn, slot, pgPub)
}

func (p *pgBench) slotName() string {
	p.slots++
	return fmt.Sprintf("bench_%d", p.slots)
}

func (p *pgBench) createSlot(ctx context.Context) (name, lsn string, err error) {
	name = p.slotName()
	err = p.conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, name).Scan(&lsn)
	if err != nil {
		return "", "", fmt.Errorf("create slot %s: %w", name, err)
	}
	return name, lsn, nil
}

func (p *pgBench) dropSlot(ctx context.Context, name string) {
	_, _ = p.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
}

// dropSlots drops every slot of the bench database, so that the server
// need not keep WAL for them.
func (p *pgBench) dropSlots(ctx context.Context) {
	_, _ = p.conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, pgDB)
}

// recvlogical times pg_recvlogical streaming the slot with pgoutput to
// /dev/null until end: the ceiling for any pgoutput client on this machine.
func (p *pgBench) recvlogical(ctx context.Context, slot, end string) (float64, error) {
	bin, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		return 0, errors.New("pg_recvlogical not installed")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "-d", p.dsn, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+pgPub, "--endpos", end, "-f", "/dev/null")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return secs, nil
}

// pgWriter writes backlogs with COPY and live transactions with INSERT.
type pgWriter struct {
	c *pgx.Conn
}

func (w *pgWriter) close() { w.c.Close(context.Background()) }

var (
	outboxCols = []string{"id", "aggregatetype", "aggregateid", "type", "payload"}
	ordersCols = []string{"ref", "total", "note"}
	linesCols  = []string{"ref", "sku", "qty", "note"}
)

func eventRows(evs []event) pgx.CopyFromSource {
	i := -1
	return pgx.CopyFromFunc(func() ([]any, error) {
		if i++; i >= len(evs) {
			return nil, nil
		}
		e := evs[i]
		return []any{e.id, e.aggType, e.aggID, e.typ, e.payload}, nil
	})
}

func (w *pgWriter) copyNoise(ctx context.Context, tx pgx.Tx, rows []noiseRow) error {
	half := len(rows) / 2
	if half > 0 {
		src := make([][]any, half)
		for i, r := range rows[:half] {
			src[i] = []any{r.ref, fmt.Sprintf("%d.%02d", r.qty*7, r.qty), r.note}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"orders"}, ordersCols, pgx.CopyFromRows(src)); err != nil {
			return err
		}
	}
	if len(rows) > half {
		src := make([][]any, 0, len(rows)-half)
		for _, r := range rows[half:] {
			src = append(src, []any{r.ref, r.sku, r.qty, r.note})
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"order_lines"}, linesCols, pgx.CopyFromRows(src)); err != nil {
			return err
		}
	}
	return nil
}

func (w *pgWriter) tx(ctx context.Context, evs []event, noise []noiseRow) error {
	if len(noise) == 0 && len(evs) <= 20 {
		// Small transactions (the live phase): one multi-row INSERT.
		var sb strings.Builder
		sb.WriteString("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ")
		args := make([]any, 0, 5*len(evs))
		for i, e := range evs {
			if i > 0 {
				sb.WriteByte(',')
			}
			n := len(args)
			fmt.Fprintf(&sb, "($%d,$%d,$%d,$%d,$%d)", n+1, n+2, n+3, n+4, n+5)
			args = append(args, e.id, e.aggType, e.aggID, e.typ, e.payload)
		}
		_, err := w.c.Exec(ctx, sb.String(), args...)
		return err
	}
	tx, err := w.c.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	first := len(noise) / 2
	if err := w.copyNoise(ctx, tx, noise[:first]); err != nil {
		return err
	}
	if len(evs) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, outboxCols, eventRows(evs)); err != nil {
			return err
		}
	}
	if err := w.copyNoise(ctx, tx, noise[first:]); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (w *pgWriter) big(ctx context.Context, g *gen, rows int) error {
	tx, err := w.c.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	n := 0
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, outboxCols, pgx.CopyFromFunc(func() ([]any, error) {
		if n++; n > rows {
			return nil, nil
		}
		e := g.event(0)
		return []any{e.id, e.aggType, e.aggID, e.typ, e.payload}, nil
	}))
	if err != nil {
		return err
	}
	return tx.Commit(ctx)
}
