package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

const mysqlDB = "bench"

var mysqlSchema = []string{
	"DROP DATABASE IF EXISTS " + mysqlDB,
	"CREATE DATABASE " + mysqlDB,
	`CREATE TABLE ` + mysqlDB + `.outbox (
  id VARCHAR(36) NOT NULL PRIMARY KEY,
  aggregatetype VARCHAR(255) NOT NULL,
  aggregateid VARCHAR(255) NOT NULL,
  type VARCHAR(255) NOT NULL,
  payload LONGTEXT,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`,
	`CREATE TABLE ` + mysqlDB + `.orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  ref VARCHAR(64) NOT NULL,
  total DECIMAL(10,2) NOT NULL,
  note VARCHAR(1024) NOT NULL)`,
	`CREATE TABLE ` + mysqlDB + `.order_lines (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  ref VARCHAR(64) NOT NULL,
  sku VARCHAR(64) NOT NULL,
  qty INT NOT NULL,
  note VARCHAR(1024) NOT NULL)`,
}

type mysqlBench struct {
	o        *options
	addr     string
	conn     *client.Conn
	serverID uint32
}

func dialMySQL(addr, db string) (*client.Conn, error) {
	return client.ConnectWithTimeout(addr, "root", "", db, 10*time.Second,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
}

func benchMySQL(ctx context.Context, o *options) ([]row, error) {
	logf("MariaDB at %s", o.mysqlAddr)
	conn, err := dialMySQL(o.mysqlAddr, "")
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	for _, q := range mysqlSchema {
		if _, err := conn.Execute(q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	m := &mysqlBench{o: o, addr: o.mysqlAddr, conn: conn, serverID: 7100}
	w, err := m.newWriter()
	if err != nil {
		return nil, err
	}
	defer w.close()
	const src = "MariaDB"
	var rows []row

	if o.phases["raw"] || o.phases["drain"] {
		got, err := m.backlog(ctx, w, "drain", 0, newGen(o.seed, "d", o.payload))
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	for _, d := range liveVariants(o) {
		if !o.phases["live"] {
			break
		}
		logf("MariaDB live (%s): %d events/s for %v", d, o.liveRate, o.liveFor)
		res, err := liveWith(ctx, o, "mysql-live"+d.suffix(), m.sourceYAML("current"), w, newGen(o.seed+2, "l"+d.suffix(), o.payload), d)
		if err != nil {
			return rows, fmt.Errorf("live: %w", err)
		}
		rows = append(rows, row{
			source: src, phase: fmt.Sprintf("live %d ev/s, %d-row tx%s", o.liveRate, o.liveTx, d.label()),
			rows: int64(res.written.events), events: int64(res.written.events), seconds: res.written.took.Seconds(),
			latency: "log→ack " + latencyText(res.summary.LogToAck) + "; e2e " + latencyText(res.e2e),
			rss:     res.usage.peakRSS, cpu: res.usage.cpu,
			note: "binlog commit times are whole seconds: the relay's own measure is log→ack (read of the commit → ack); " +
				"e2e = writer's clock before INSERT → consumer",
		})
	}
	if o.phases["noise"] {
		got, err := m.backlog(ctx, w, "noise", o.noise, newGen(o.seed+3, "n", o.payload))
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	if o.phases["eos"] || o.phases["single"] {
		got, err := deliveryPhases(ctx, o, deliverySource{
			src: src, prefix: "mysql", w: w,
			starts: func(context.Context, int) ([]string, error) {
				pos0, err := m.flush()
				if err != nil {
					return nil, err
				}
				var out []string
				for i := 0; i < 2*o.repeat; i++ {
					out = append(out, m.sourceYAML(posText(pos0)))
				}
				return out, nil
			},
			done:     func(context.Context) {},
			liveYAML: func() string { return m.sourceYAML("current") },
			latency:  func(s *latencySummary) string { return "log→commit " + latencyText(s.LogToAck) },
		})
		rows = append(rows, got...)
		if err != nil {
			return rows, err
		}
	}
	if o.phases["big"] {
		pos0, err := m.flush()
		if err != nil {
			return rows, err
		}
		logf("MariaDB big: one transaction of %d rows", o.bigRows)
		t0 := time.Now()
		if err := w.big(ctx, newGen(o.seed+4, "b", o.payload), o.bigRows); err != nil {
			return rows, fmt.Errorf("write large transaction: %w", err)
		}
		logf("  written in %v", time.Since(t0).Round(time.Millisecond))
		res, err := drain(ctx, o, "mysql-big", m.sourceYAML(posText(pos0)), int64(o.bigRows), "")
		if err != nil {
			return rows, fmt.Errorf("big: %w", err)
		}
		rows = append(rows, row{source: src, phase: fmt.Sprintf("one %d-row transaction", o.bigRows),
			rows: int64(o.bigRows), events: int64(o.bigRows), seconds: res.seconds, rss: res.usage.peakRSS, cpu: res.usage.cpu})
	}
	return rows, nil
}

// backlog writes a backlog (noise share of the rows on other tables),
// measures the raw rates on it, then drains it with the relay.
func (m *mysqlBench) backlog(ctx context.Context, w *mysqlWriter, name string, noise float64, g *gen) ([]row, error) {
	o := m.o
	const src = "MariaDB"
	var rows []row
	pos0, err := m.flush()
	if err != nil {
		return nil, err
	}
	logf("MariaDB %s: writing %d rows (%.0f%% on other tables), transactions of 1–%d rows", name, o.rows, noise*100, o.maxTx)
	st, err := writeBacklog(ctx, w, g, o.rows, o.maxTx, noise)
	if err != nil {
		return nil, fmt.Errorf("write backlog: %w", err)
	}
	pos1, err := m.position()
	if err != nil {
		return nil, err
	}
	logf("  %d transactions, %d events, %d other rows in %v (%.0f rows/s); binlog %s → %s (%d MiB)", st.txns, st.events, st.noise,
		st.took.Round(time.Millisecond), float64(o.rows)/st.took.Seconds(), posText(pos0), posText(pos1), (pos1.Pos-pos0.Pos)>>20)
	phase := "backlog"
	if noise > 0 {
		phase = fmt.Sprintf("noise: backlog, %.0f%% other tables", noise*100)
	}
	var decodeSecs float64
	if o.phases["raw"] {
		var dec, tool runs
		var n int64
		for i := 0; i < o.repeat; i++ {
			got, secs, err := m.decodeOnly(ctx, pos0, pos1)
			if err != nil {
				return rows, fmt.Errorf("decode-only reader: %w", err)
			}
			n = got
			dec = append(dec, secs)
			logf("  raw go-mysql decode-only %d/%d: %d rows in %.2fs = %.0f rows/s", i+1, o.repeat, n, secs, float64(n)/secs)
		}
		decodeSecs = dec.median()
		rows = append(rows, row{source: src, phase: phase + " — raw: go-mysql BinlogSyncer decode-only", rows: n, seconds: decodeSecs, spread: dec.spread()})
		for i := 0; i < o.repeat; i++ {
			secs, err := m.mysqlbinlog(ctx, pos0, pos1)
			if err != nil {
				logf("  mysqlbinlog: %v", err)
				break
			}
			tool = append(tool, secs)
			logf("  raw mysqlbinlog %d/%d: %.2fs = %.0f rows/s", i+1, o.repeat, secs, float64(o.rows)/secs)
		}
		if len(tool) > 0 {
			rows = append(rows, row{source: src, phase: phase + " — raw: mysqlbinlog --read-from-remote-server --raw (bytes, no decoding)", rows: int64(o.rows), seconds: tool.median(), spread: tool.spread(), note: "context only"})
		}
	}
	if !o.phases["drain"] && noise == 0 || !o.phases["noise"] && noise > 0 {
		return rows, nil
	}
	t, u, err := drains(ctx, o, "mysql-"+name, func(int) string { return m.sourceYAML(posText(pos0)) }, int64(st.events))
	if err != nil {
		return rows, fmt.Errorf("%s: %w", name, err)
	}
	r := row{source: src, phase: phase + " — relay drain", rows: int64(o.rows), events: int64(st.events), seconds: t.median(), spread: t.spread(),
		rss: u.peakRSS, cpu: u.cpu}
	if decodeSecs > 0 {
		r.ratio = ratioText(float64(o.rows)/decodeSecs, r.rate(), "decode-only")
	}
	rows = append(rows, r)
	if noise > 0 && o.cleanup {
		// The same backlog again with the cleanup deleting beside the
		// drain (the log keeps the rows for the later runs).
		t, u, err := drainsWith(ctx, o, "mysql-"+name+"-cleanup", func(int) string { return m.sourceYAML(posText(pos0)) }, int64(st.events), delivery{cleanup: true})
		if err != nil {
			return rows, fmt.Errorf("%s with cleanup: %w", name, err)
		}
		rows = append(rows, row{source: src, phase: phase + " — relay drain, outbox.cleanup on", rows: int64(o.rows), events: int64(st.events), seconds: t.median(), spread: t.spread(),
			rss: u.peakRSS, cpu: u.cpu, ratio: ratioText(r.rate(), float64(o.rows)/t.median(), "drain without cleanup")})
	}
	if o.profile != "" {
		prefix := filepath.Join(o.profile, "mysql-"+name)
		logf("  profiled drain → %s.{cpu,allocs}.pprof", prefix)
		if _, err := drain(ctx, o, "mysql-"+name+"-profiled", m.sourceYAML(posText(pos0)), int64(st.events), prefix); err != nil {
			return rows, fmt.Errorf("%s (profiled): %w", name, err)
		}
	}
	return rows, nil
}

// posText is the relay's text form of a binlog position.
func posText(p gomysql.Position) string { return fmt.Sprintf("%s:%d", p.Name, p.Pos) }

func (m *mysqlBench) sourceYAML(start string) string {
	m.serverID++
	return fmt.Sprintf(`  type: mysql
  mysql:
    addr: %s
    user: root
    server_id: %d
    tables: [%s.outbox]
    start: %q`, m.addr, m.serverID, mysqlDB, start)
}

// flush starts a new binlog file (so that a backlog lies in one file) and
// returns the position after its header.
func (m *mysqlBench) flush() (gomysql.Position, error) {
	if _, err := m.conn.Execute("FLUSH BINARY LOGS"); err != nil {
		return gomysql.Position{}, err
	}
	return m.position()
}

func (m *mysqlBench) position() (gomysql.Position, error) {
	r, err := m.conn.Execute("SHOW MASTER STATUS")
	if err != nil {
		return gomysql.Position{}, err
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return gomysql.Position{}, errors.New("SHOW MASTER STATUS: no binlog")
	}
	f, _ := r.GetString(0, 0)
	p, _ := r.GetUint(0, 1)
	return gomysql.Position{Name: strings.Clone(f), Pos: uint32(p)}, nil
}

// decodeOnly reads the binlog from pos0 to pos1 with go-mysql's
// BinlogSyncer decoding every rows event, as the relay's source does, but
// with no mapping and no Kafka: the ceiling for the relay's MySQL source.
func (m *mysqlBench) decodeOnly(ctx context.Context, pos0, pos1 gomysql.Position) (rows int64, secs float64, err error) {
	host, portStr, _ := net.SplitHostPort(m.addr)
	port, _ := strconv.Atoi(portStr)
	m.serverID++
	start := time.Now()
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: m.serverID, Flavor: gomysql.MariaDBFlavor, Host: host, Port: uint16(port), User: "root",
		DisableRetrySync: true,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer syncer.Close()
	streamer, err := syncer.StartSync(pos0)
	if err != nil {
		return 0, 0, err
	}
	file := pos0.Name
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for {
		ev, err := streamer.GetEvent(rctx)
		if err != nil {
			return rows, 0, err
		}
		switch e := ev.Event.(type) {
		case *replication.RotateEvent:
			file = string(e.NextLogName)
		case *replication.RowsEvent:
			rows += int64(len(e.Rows))
		}
		if file == pos1.Name && ev.Header.LogPos >= pos1.Pos {
			return rows, time.Since(start).Seconds(), nil
		}
	}
}

// mysqlbinlog times mysqlbinlog --read-from-remote-server --raw over the
// backlog: the server's send rate of raw bytes, without row decoding. It
// reads to the end of the file, which is pos1 as long as nothing else was
// written since.
func (m *mysqlBench) mysqlbinlog(ctx context.Context, pos0, pos1 gomysql.Position) (float64, error) {
	if pos0.Name != pos1.Name {
		return 0, fmt.Errorf("backlog spans %s and %s", pos0.Name, pos1.Name)
	}
	bin, err := exec.LookPath("mysqlbinlog")
	if err != nil {
		if bin, err = exec.LookPath("mariadb-binlog"); err != nil {
			return 0, errors.New("mysqlbinlog not installed")
		}
	}
	host, port, _ := net.SplitHostPort(m.addr)
	dir, err := os.MkdirTemp(m.o.work, "mysqlbinlog-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, bin, "--read-from-remote-server", "--host="+host, "--port="+port, "--user=root",
		"--raw", "--result-file="+dir+"/", fmt.Sprintf("--start-position=%d", pos0.Pos), pos0.Name)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	fi, err := os.Stat(filepath.Join(dir, pos0.Name))
	if err != nil {
		return 0, err
	}
	if fi.Size() < int64(pos1.Pos-pos0.Pos) {
		return 0, fmt.Errorf("mysqlbinlog wrote %d bytes, want at least %d", fi.Size(), pos1.Pos-pos0.Pos)
	}
	return secs, nil
}

// mysqlWriter writes with plain-text statements (one round trip each).
type mysqlWriter struct {
	c  *client.Conn
	sb strings.Builder
}

func (m *mysqlBench) newWriter() (*mysqlWriter, error) {
	c, err := dialMySQL(m.addr, mysqlDB)
	if err != nil {
		return nil, err
	}
	return &mysqlWriter{c: c}, nil
}

func (w *mysqlWriter) close() { w.c.Close() }

func (w *mysqlWriter) exec(q string) error {
	r, err := w.c.Execute(q)
	if err != nil {
		if len(q) > 200 {
			q = q[:200] + "…"
		}
		return fmt.Errorf("%s: %w", q, err)
	}
	r.Close()
	return nil
}

func (w *mysqlWriter) insertEvents(evs []event) error {
	for start := 0; start < len(evs); start += 1000 {
		w.sb.Reset()
		w.sb.WriteString("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES ")
		for i, e := range evs[start:min(start+1000, len(evs))] {
			if i > 0 {
				w.sb.WriteByte(',')
			}
			fmt.Fprintf(&w.sb, "('%s','%s','%s','%s','%s')", e.id, e.aggType, e.aggID, e.typ, e.payload)
		}
		if err := w.exec(w.sb.String()); err != nil {
			return err
		}
	}
	return nil
}

func (w *mysqlWriter) insertNoise(rows []noiseRow) error {
	half := len(rows) / 2
	if half > 0 {
		w.sb.Reset()
		w.sb.WriteString("INSERT INTO orders (ref, total, note) VALUES ")
		for i, r := range rows[:half] {
			if i > 0 {
				w.sb.WriteByte(',')
			}
			fmt.Fprintf(&w.sb, "('%s',%d.%02d,'%s')", r.ref, r.qty*7, r.qty, r.note)
		}
		if err := w.exec(w.sb.String()); err != nil {
			return err
		}
	}
	if len(rows) > half {
		w.sb.Reset()
		w.sb.WriteString("INSERT INTO order_lines (ref, sku, qty, note) VALUES ")
		for i, r := range rows[half:] {
			if i > 0 {
				w.sb.WriteByte(',')
			}
			fmt.Fprintf(&w.sb, "('%s','%s',%d,'%s')", r.ref, r.sku, r.qty, r.note)
		}
		if err := w.exec(w.sb.String()); err != nil {
			return err
		}
	}
	return nil
}

func (w *mysqlWriter) tx(_ context.Context, evs []event, noise []noiseRow) error {
	if len(noise) == 0 && len(evs) <= 1000 {
		return w.insertEvents(evs) // autocommit: one statement, one transaction
	}
	if err := w.exec("BEGIN"); err != nil {
		return err
	}
	// Noise around the events, as an application writes its own rows
	// before and after the outbox row.
	first := len(noise) / 2
	if err := w.insertNoise(noise[:first]); err != nil {
		return err
	}
	if err := w.insertEvents(evs); err != nil {
		return err
	}
	if err := w.insertNoise(noise[first:]); err != nil {
		return err
	}
	return w.exec("COMMIT")
}

func (w *mysqlWriter) big(_ context.Context, g *gen, rows int) error {
	if err := w.exec("BEGIN"); err != nil {
		return err
	}
	evs := make([]event, 0, 1000)
	for left := rows; left > 0; {
		evs = evs[:0]
		for i := 0; i < min(1000, left); i++ {
			evs = append(evs, g.event(0))
		}
		left -= len(evs)
		if err := w.insertEvents(evs); err != nil {
			return err
		}
	}
	return w.exec("COMMIT")
}
