package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/cli"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/source/mysql"
)

// Operations: the metrics endpoint and probes while records flow and the
// database goes away, and the process's signal handling (the real binary).

// opsConfig is the relay's YAML for db with metrics on listen; kafkaExtra
// lines go under kafka.
func opsConfig(db *testdb.MySQL, broker, cpPath, start, listen string, kafkaExtra ...string) string {
	yaml := strings.Replace(mysqlRelayConfig(db, broker, cpPath, start), "    heartbeat: 1s\n", "    heartbeat: 1s\n    connect_timeout: 2s\n", 1)
	yaml = withLines(yaml, "kafka", strings.Join(kafkaExtra, "\n"))
	return withLines(yaml, "metrics", "listen: "+listen+"\nstatus_interval: 1s")
}

// httpGet returns the status and body of url ("" and 0 when it cannot
// connect).
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls url until it answers status.
func waitStatus(t *testing.T, url string, status int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := httpGet(url)
		if code == status {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d (%q) after %s, want %d", url, code, strings.TrimSpace(body), within, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricSum adds up the samples of one metric (all label sets) in a
// Prometheus text exposition.
func metricSum(body, name string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	code, body := httpGet(base + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return body
}

func mustMetric(t *testing.T, body, name string) float64 {
	t.Helper()
	v, ok := metricSum(body, name)
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	return v
}

// TestIntegrationMetricsAndReadiness: with metrics on, the counters and
// the commit→ack histogram move as records flow; /readyz answers 200
// while streaming, 503 within seconds of the database being killed, and
// 200 again once it is back.
func TestIntegrationMetricsAndReadiness(t *testing.T) {
	t.Parallel()
	srv, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	cfg, err := config.Parse([]byte(opsConfig(db, broker.Addr(), cpPath, "current", "127.0.0.1:0")), nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	svc, err := cli.NewService(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := svc.Listen()
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("relay did not stop")
		}
		svc.Store.Close()
	})

	if code, _ := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	waitStatus(t, base+"/readyz", http.StatusOK, 30*time.Second)

	p := makePlan(41, "m", 40, 400, 10, 3)
	d := mysqlDialect(db.Conn(t))
	p.write(t, d, 0, 20)
	first := p.committedBefore(20)
	collect(t, broker, first, time.Minute)
	waitMetric(t, base, "outboxrelay_records_produced_total", float64(first))
	body := scrape(t, base)
	if v := mustMetric(t, body, "outboxrelay_source_events_read_total"); v != float64(first) {
		t.Errorf("events read %v, want %d", v, first)
	}
	lagCount := mustMetric(t, body, "outboxrelay_commit_to_ack_seconds_count")
	if lagCount < 1 || !strings.Contains(body, `outboxrelay_commit_to_ack_seconds_bucket{le="+Inf"}`) {
		t.Errorf("commit-to-ack histogram: count %v", lagCount)
	}
	for _, name := range []string{"outboxrelay_records_in_flight", "outboxrelay_checkpoint_age_seconds", "outboxrelay_checkpoint_timestamp_seconds",
		"outboxrelay_checkpoint_position", "outboxrelay_source_behind_seconds", "outboxrelay_read_to_ack_seconds_count", "outboxrelay_source_transactions_read_total"} {
		mustMetric(t, body, name)
	}
	// Positions are numbers, never labels: a label per position would be
	// a new series for every checkpoint.
	if v := mustMetric(t, body, "outboxrelay_checkpoint_position"); v <= 0 {
		t.Errorf("outboxrelay_checkpoint_position %v", v)
	}
	if strings.Contains(body, `position="`) {
		t.Error("a metric carries the position as a label")
	}

	// More records: the counters and the histogram move.
	p.write(t, d, 20, len(p.Txns))
	waitMetric(t, base, "outboxrelay_records_produced_total", float64(len(p.Want)))
	body = scrape(t, base)
	if v := mustMetric(t, body, "outboxrelay_commit_to_ack_seconds_count"); v <= lagCount {
		t.Errorf("commit-to-ack count did not grow: %v then %v", lagCount, v)
	}
	waitMetricAbove(t, base, "outboxrelay_source_behind_bytes", -1) // polled every status_interval

	// The database goes away: not ready within seconds, with the reason.
	srv.Kill(t)
	killed := time.Now()
	why := waitStatus(t, base+"/readyz", http.StatusServiceUnavailable, 10*time.Second)
	t.Logf("/readyz 503 %s after the kill: %s", time.Since(killed).Round(time.Millisecond), strings.TrimSpace(why))
	if !strings.Contains(why, "not streaming") {
		t.Errorf("/readyz reason %q", why)
	}
	if code, _ := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the outage: %d (the process is alive: liveness must not restart it)", code)
	}
	if v := mustMetric(t, scrape(t, base), "outboxrelay_source_streaming"); v != 0 {
		t.Errorf("outboxrelay_source_streaming %v during the outage", v)
	}
	time.Sleep(time.Second)
	srv.Start(t)
	waitStatus(t, base+"/readyz", http.StatusOK, time.Minute)
	body = scrape(t, base)
	if v := mustMetric(t, body, "outboxrelay_source_reconnects_total"); v < 1 {
		t.Errorf("reconnects %v after the database came back", v)
	}
	if v := mustMetric(t, body, "outboxrelay_source_errors_total"); v < 1 {
		t.Errorf("source errors %v after an outage", v)
	}
	if n := strings.Count(logs.String(), `"message":"not ready"`); n < 1 {
		t.Errorf("readiness loss logged %d times", n)
	}
}

func waitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, _ := metricSum(scrape(t, base), name)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 30s, want %v", name, v, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitMetricAbove(t *testing.T, base, name string, above float64) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := httpGet(base + "/metrics") // the endpoint may not be up yet
		if v, ok := metricSum(body, name); ok && v > above {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not above %v after 30s", name, above)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a loopback address nothing listens on (for a child
// process's metrics endpoint).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// txnEnd returns the end of the transaction that starts at id (file:offset
// of its GTID event): the position after its Xid event, and its GTID.
func txnEnd(t *testing.T, db *testdb.MySQL, id string) (string, string) {
	t.Helper()
	p, err := mysql.ParsePosition(id)
	if err != nil {
		t.Fatal(err)
	}
	c := db.Conn(t)
	r := testdb.Exec(t, c, fmt.Sprintf("SHOW BINLOG EVENTS IN '%s' FROM %d LIMIT 1000", p.File, p.Offset))
	gtid := ""
	for i := 0; i < r.RowNumber(); i++ {
		typ, _ := r.GetStringByName(i, "Event_type")
		info, _ := r.GetStringByName(i, "Info")
		if i == 0 && typ == "Gtid" {
			gtid = strings.TrimPrefix(strings.TrimSpace(info), "BEGIN GTID ")
			gtid = strings.Fields(gtid)[0]
		}
		if typ == "Xid" {
			end, _ := r.GetIntByName(i, "End_log_pos")
			return fmt.Sprintf("%s:%d", p.File, end), strings.Clone(gtid)
		}
	}
	t.Fatalf("no Xid event after %s", id)
	return "", ""
}

// TestIntegrationSIGTERMWithRecordsInFlight runs the real binary against a
// slow broker node (so records are in flight) and stops it with SIGTERM:
// it exits 0, what reached Kafka is exactly the first k transactions, and
// the checkpoint is the end of the k-th: the last acknowledged one.
func TestIntegrationSIGTERMWithRecordsInFlight(t *testing.T) {
	t.Parallel()
	_, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker, err := devbroker.Start(devbroker.Options{Brokers: 3, Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	broker.DelayProduce(0, 400*time.Millisecond)
	bin := relayBinary(t)

	start := db.Position(t)
	p := noDeletes(makePlan(43, "sig", 300, 3000, 30, 0))
	p.write(t, mysqlDialect(db.Conn(t)), 0, len(p.Txns))

	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := filepath.Join(dir, "relay.yaml")
	listen := freeAddr(t)
	// A small in-flight cap keeps the relay reading while acks trickle in.
	yaml := opsConfig(db, broker.Addr(), cpPath, start, listen, "max_message_bytes: 4096", "max_in_flight_bytes: 16384")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, bin, cfgPath, "", filepath.Join(dir, "relay.log"))
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
		}
	})
	base := "http://" + listen
	// Stop while records are on their way: some acknowledged, some not.
	deadline := time.Now().Add(time.Minute)
	for {
		if code, body := httpGet(base + "/metrics"); code == http.StatusOK {
			produced, _ := metricSum(body, "outboxrelay_records_produced_total")
			inFlight, _ := metricSum(body, "outboxrelay_records_in_flight")
			if produced > 0 && inFlight > 0 {
				t.Logf("SIGTERM with %v records acknowledged and %v in flight", produced, inFlight)
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("never saw records both acknowledged and in flight; log:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		if code := exitCode(err); code != 0 {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("exit code %d after SIGTERM, want 0; log:\n%s", code, b)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the relay did not exit within 45s of SIGTERM")
	}

	recs := collectAll(t, broker)
	seen := map[string]int{}
	txOf := map[string]string{} // event id → transaction id (position header)
	for _, r := range recs {
		id, _ := r.Header(outbox.HeaderID)
		seen[id]++
		txOf[id], _ = r.Header(outbox.HeaderPosition)
	}
	// What reached Kafka is a prefix of the committed events, ending at a
	// transaction boundary, each once.
	k := len(seen)
	for i, e := range p.Want {
		n := seen[e.ID]
		switch {
		case i < k && n != 1:
			t.Fatalf("event %d (%s) arrived %d times; %d distinct events arrived", i, e.ID, n, k)
		case i >= k && n != 0:
			t.Fatalf("event %d (%s) arrived after a gap", i, e.ID)
		}
	}
	if k == 0 || k == len(p.Want) {
		t.Fatalf("%d of %d events arrived: the stop did not happen mid-stream", k, len(p.Want))
	}
	boundary := false
	for n := 1; n <= len(p.Txns); n++ {
		if p.committedBefore(n) == k {
			boundary = true
			break
		}
	}
	if !boundary {
		t.Fatalf("%d events arrived: the last transaction arrived only in part", k)
	}
	lastTx := txOf[p.Want[k-1].ID]
	end, gtid := txnEnd(t, db, lastTx)
	cp := readCheckpoint(t, cpPath)
	// Started by file and offset, the relay tracks no GTID set; with one,
	// it must be the last transaction's.
	filePos, cpGTID, hasGTID := strings.Cut(cp, "@")
	if filePos != end || (hasGTID && cpGTID != gtid) {
		t.Fatalf("checkpoint %s, want %s (GTID %s): the end of the last transaction in Kafka (which starts at %s)", cp, end, gtid, lastTx)
	}
	t.Logf("%d of %d events (%d transactions) in Kafka; checkpoint %s is the end of the last one", k, len(p.Want), countTxns(p, k), cp)
}

func countTxns(p plan, events int) int {
	for n := 0; n <= len(p.Txns); n++ {
		if p.committedBefore(n) == events {
			return n
		}
	}
	return -1
}

// TestIntegrationSecondSignalForcesExit: the first SIGTERM waits for
// in-flight records (here, forever: the broker never answers); a second
// one exits at once with 128+15, and the checkpoint covers nothing that
// was not acknowledged.
func TestIntegrationSecondSignalForcesExit(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 3)
	broker.DelayProduce(0, time.Hour) // one node: no produce is answered
	bin := relayBinary(t)
	start := db.Position(t)
	p := makePlan(44, "two", 5, 50, 5, 0)
	p.write(t, mysqlDialect(db.Conn(t)), 0, len(p.Txns))

	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := filepath.Join(dir, "relay.yaml")
	listen := freeAddr(t)
	if err := os.WriteFile(cfgPath, []byte(opsConfig(db, broker.Addr(), cpPath, start, listen)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, bin, cfgPath, "", filepath.Join(dir, "relay.log"))
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
		}
	})
	waitMetricAbove(t, "http://"+listen, "outboxrelay_records_in_flight", 0)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		b, _ := os.ReadFile(c.log)
		t.Fatalf("exited (%v) on the first SIGTERM although records were in flight; log:\n%s", err, b)
	case <-time.After(1500 * time.Millisecond):
	}
	second := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		if code := exitCode(err); code != 128+int(syscall.SIGTERM) {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("exit code %d after the second SIGTERM, want %d; log:\n%s", code, 128+int(syscall.SIGTERM), b)
		}
		t.Logf("exited %s after the second SIGTERM", time.Since(second).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the second SIGTERM did not end the process within 5s")
	}
	b, _ := os.ReadFile(c.log)
	if !strings.Contains(string(b), "second terminated") {
		t.Errorf("no line about the forced exit in the log:\n%s", b)
	}
	// Nothing was acknowledged, so the checkpoint must not have moved past
	// the first outbox transaction (which starts at start).
	if cp := readCheckpoint(t, cpPath); cp != "" {
		if c, err := mysqlCompare(cp, start); err != nil || c > 0 {
			t.Fatalf("checkpoint %s is beyond %s although no record was acknowledged (%v)", cp, start, err)
		}
	}
}
