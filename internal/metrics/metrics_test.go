package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/mem"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/sink/sinktest"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/sourcetest"
)

type pos = sourcetest.Pos

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func newTestMetrics(stall time.Duration) *Metrics {
	return New(Config{Listen: "127.0.0.1:0", StallTimeout: stall}, Info{Source: "postgres", Version: "test",
		Position: func(s string) (float64, bool) { return float64(len(s)), true }, RetainsWAL: true}, zerolog.Nop())
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// TestMetricsFollowThePipeline drives the decorators as the relay does and
// reads the results through /metrics and /readyz.
func TestMetricsFollowThePipeline(t *testing.T) {
	t.Parallel()
	m := newTestMetrics(time.Minute)
	h := m.Handler()
	ctx := context.Background()

	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected") {
		t.Fatalf("/readyz before the first connection: %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}

	commit := time.Now().Add(-2 * time.Second)
	first := &sourcetest.Reader{Txs: []*source.Tx{
		{ID: "1", Rows: make([]source.Row, 3), End: pos("0/10"), CommitTime: commit},
		{ID: "2", End: pos("0/20")},
	}, Err: errors.New("connection reset by peer")}
	second := &sourcetest.Reader{TableList: []*schema.Table{{}}}
	src := m.Source(&sourcetest.Source{Name: "mysql", Start: "0/10", Readers: []source.Reader{first, second}, Err: errors.New("connection refused")})
	store := m.Store(&mem.Store{})
	fs := &sinktest.Sink{Hold: true}
	newSink := m.SinkFactory(func(context.Context) (sink.Sink, error) { return fs, nil })
	obs := m.Observer()

	r, err := src.Open(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Tables()) != 0 {
		t.Fatal("the decorator invents tables")
	}
	snk, _ := newSink(ctx)
	tx, _ := r.Next(ctx)
	for range tx.Rows {
		_ = snk.Send(ctx, sink.Record{Topic: "outbox.event.order"}, func(error) {})
	}
	_ = snk.Send(ctx, sink.Record{Topic: "outbox.event.customer"}, func(error) {})
	if got := m.inFlight(); got != 4 {
		t.Fatalf("in flight %d, want 4", got)
	}
	if ok, why := m.Ready(time.Now()); !ok {
		t.Fatalf("not ready while streaming with records in flight for a moment: %s", why)
	}
	if behind := m.state.secondsBehind(time.Now()); behind < 1.5 {
		t.Fatalf("seconds behind %.1f, want about 2", behind)
	}
	fs.AckAll(nil)
	obs.Acked(commit, time.Now().Add(-10*time.Millisecond), 3)
	obs.Acked(time.Time{}, time.Now(), 0) // rows-less: not observed
	_ = store.Save(ctx, checkpoint.Checkpoint{Source: "postgres", Position: "0/20", UpdatedAt: time.Now()})
	if _, err := r.Next(ctx); err != nil {
		t.Fatal(err)
	}

	if got := value(t, m.produced.WithLabelValues("outbox.event.order")); got != 3 {
		t.Errorf("records produced to outbox.event.order = %v, want 3", got)
	}
	if got := value(t, m.eventsRead); got != 3 {
		t.Errorf("events read = %v, want 3", got)
	}
	if got := value(t, m.txnsRead); got != 2 {
		t.Errorf("transactions read = %v, want 2", got)
	}
	var hist dto.Metric
	if err := m.commitToAck.Write(&hist); err != nil || hist.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("commit-to-ack histogram: %v, %d samples, want 1", err, hist.GetHistogram().GetSampleCount())
	}
	_, body := get(t, h, "/metrics")
	for _, want := range []string{
		`outboxrelay_commit_to_ack_seconds_count 1`,
		`outboxrelay_commit_to_ack_seconds_bucket{le="2.5"} 1`,
		`outboxrelay_read_to_ack_seconds_count 1`,
		`outboxrelay_records_produced_total{topic="outbox.event.customer"} 1`,
		`outboxrelay_records_in_flight 0`,
		`outboxrelay_checkpoint_position 4`,
		`outboxrelay_source_streaming 1`,
		`outboxrelay_ready 1`,
		`outboxrelay_build_info{source="postgres",version="test"} 1`,
		`# TYPE outboxrelay_bad_rows_total counter`,
		`outboxrelay_source_retained_wal_bytes 0`,
	} {
		if want == `# TYPE outboxrelay_bad_rows_total counter` {
			m.BadRow("null_key", "skip") // a vector shows once it has a child
			_, body = get(t, h, "/metrics")
		}
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The database goes away: the read fails, readiness drops at once.
	if _, err := r.Next(ctx); err == nil {
		t.Fatal("want the reader's error")
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "connection reset") {
		t.Fatalf("/readyz after a failed read: %d %q", code, body)
	}
	_ = r.Close() // keeps the first error as the reason
	if _, why := m.Ready(time.Now()); !strings.Contains(why, "connection reset") {
		t.Fatalf("reason after Close: %q", why)
	}
	// The relay reconnects: ready again, and a reconnect is counted.
	r2, err := src.Open(ctx, "0/20")
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Tables()) != 1 {
		t.Fatal("the decorator hides the reader's tables")
	}
	// A reconnect alone is no recovery: not ready until the checkpoint
	// moves again.
	if ok, why := m.Ready(time.Now()); ok || !strings.Contains(why, "recovering") {
		t.Fatalf("ready=%v (%s) right after reconnecting, before the checkpoint moved", ok, why)
	}
	_ = store.Save(ctx, checkpoint.Checkpoint{Source: "postgres", Position: "0/30", UpdatedAt: time.Now()})
	if ok, why := m.Ready(time.Now()); !ok {
		t.Fatalf("not ready once the checkpoint moved after reconnecting: %s", why)
	}
	if got := value(t, m.reconnects); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}
	// An open that fails keeps it not ready and counts an error.
	_ = r2.Close()
	if _, err := src.Open(ctx, "0/20"); err == nil {
		t.Fatal("want the open error")
	}
	if ok, why := m.Ready(time.Now()); ok || !strings.Contains(why, "connection refused") {
		t.Fatalf("ready=%v (%s) while the database refuses connections", ok, why)
	}
	if got := value(t, m.sourceErrors); got != 2 {
		t.Errorf("source errors = %v, want 2", got)
	}
}

// TestReadinessStall: records in flight and a checkpoint that stands still
// for longer than stall_timeout make the relay not ready; an idle relay
// (nothing in flight) stays ready however old its checkpoint.
func TestReadinessStall(t *testing.T) {
	t.Parallel()
	m := newTestMetrics(5 * time.Second)
	ctx := context.Background()
	src := m.Source(&sourcetest.Source{Readers: []source.Reader{&sourcetest.Reader{}}})
	if _, err := src.Open(ctx, ""); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if ok, _ := m.Ready(now.Add(time.Hour)); !ok {
		t.Fatal("an idle relay must stay ready")
	}
	fs := &sinktest.Sink{Hold: true}
	snk, _ := m.SinkFactory(func(context.Context) (sink.Sink, error) { return fs, nil })(ctx)
	_ = snk.Send(ctx, sink.Record{Topic: "t"}, func(error) {})
	if ok, _ := m.Ready(now.Add(time.Second)); !ok {
		t.Fatal("not ready one second into a send")
	}
	ok, why := m.Ready(now.Add(10 * time.Second))
	if ok || !strings.Contains(why, "stalled") {
		t.Fatalf("ready=%v (%s) with a record in flight for 10s and no checkpoint progress", ok, why)
	}
	// A new sink (after a session restart) replaces the stuck one.
	fresh, _ := m.SinkFactory(func(context.Context) (sink.Sink, error) { return &sinktest.Sink{Hold: true}, nil })(ctx)
	_ = fresh
	if ok, why := m.Ready(now.Add(10 * time.Second)); !ok {
		t.Fatalf("the abandoned sink's records still count: %s", why)
	}
}

// TestSecondsBehindIsZeroWhenCaughtUp: waiting for the next transaction
// means the relay has read everything.
func TestSecondsBehindIsZeroWhenCaughtUp(t *testing.T) {
	t.Parallel()
	var s state
	gen := s.opened(time.Now())
	s.read(gen, time.Now().Add(-30*time.Second))
	if b := s.secondsBehind(time.Now()); b < 29 {
		t.Fatalf("behind %.0fs, want 30", b)
	}
	s.reading(gen, time.Now())
	if b := s.secondsBehind(time.Now().Add(2 * idleAfter)); b != 0 {
		t.Fatalf("behind %.0fs while waiting for the server, want 0", b)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Listen: ":9464"}, true},
		{Config{Listen: "127.0.0.1:9464"}, true},
		{Config{Listen: "9464"}, false},
		{Config{StallTimeout: time.Millisecond}, false},
	} {
		tc.cfg.SetDefaults()
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v", tc.cfg, err)
		}
	}
}

// TestSnapshotMetrics: snapshot pieces count their rows by table, and the
// running gauge is 1 until the piece that ends the snapshot (or Close).
func TestSnapshotMetrics(t *testing.T) {
	t.Parallel()
	m := newTestMetrics(time.Minute)
	a := &schema.Table{Schema: "shop", Name: "outbox"}
	b := &schema.Table{Schema: "billing", Name: "outbox"}
	rows := func(ts ...*schema.Table) []source.Row {
		out := make([]source.Row, len(ts))
		for i, t := range ts {
			out[i] = source.Row{Table: t}
		}
		return out
	}
	m.snapshotPiece(&source.Tx{Snapshot: true, Rows: rows(a, a, a)})
	if m.snapshotActive.Load() != 1 {
		t.Fatal("snapshot not running after its first piece")
	}
	m.snapshotPiece(&source.Tx{Snapshot: true, Rows: rows(a, b, b)})
	m.snapshotPiece(&source.Tx{Snapshot: true, Rows: rows(b), End: pos("9")})
	if m.snapshotActive.Load() != 0 {
		t.Fatal("snapshot still running after its last piece")
	}
	if got := value(t, m.snapshotRows.WithLabelValues("shop.outbox")); got != 4 {
		t.Errorf("shop.outbox: %v rows, want 4", got)
	}
	if got := value(t, m.snapshotRows.WithLabelValues("billing.outbox")); got != 3 {
		t.Errorf("billing.outbox: %v rows, want 3", got)
	}
}
