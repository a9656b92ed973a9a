package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

// Info describes the relay being measured.
type Info struct {
	// Source is the source kind ("mysql", "postgres").
	Source string
	// Version of the relay, for outboxrelay_build_info.
	Version string
	// Position turns a checkpoint's text into a number that grows with the
	// log (Postgres: the LSN), for outboxrelay_checkpoint_position; nil or
	// ok=false when the source has none.
	Position func(pos string) (v float64, ok bool)
	// RetainsWAL: the source can say how much log the server keeps for the
	// relay (a WALRetainer), for outboxrelay_source_retained_wal_bytes.
	RetainsWAL bool
}

// Metrics holds the relay's collectors and readiness state. Create it with
// New, wrap the components with Source, SinkFactory, Store and Observer,
// and serve it with Serve.
type Metrics struct {
	cfg  Config
	info Info
	log  zerolog.Logger
	reg  *prometheus.Registry

	eventsRead     prometheus.Counter
	txnsRead       prometheus.Counter
	reconnects     prometheus.Counter
	sourceErrors   prometheus.Counter
	behindBytes    prometheus.Gauge
	retainedWAL    prometheus.Gauge
	produced       *prometheus.CounterVec
	produceErrors  *prometheus.CounterVec
	badRows        *prometheus.CounterVec
	checkpointPos  prometheus.Gauge
	snapshotRows   *prometheus.CounterVec
	snapshotActive atomic.Int32 // 1 while a snapshot is being handed out
	checkpointTime prometheus.Gauge
	commitToAck    prometheus.Histogram
	readToAck      prometheus.Histogram
	topics         sync.Map // topic → *topicCounters
	sink           atomic.Pointer[meteredSink]
	opens          atomic.Int64
	state          state
	cpMu           sync.Mutex
	cpPosition     string
	readyLogged    atomic.Int32 // 0 unknown, 1 ready, 2 not ready
	cleanup        cleanupMetrics
	activeGauge    *prometheus.GaugeVec
	assignments    *prometheus.CounterVec
	takeovers      *prometheus.CounterVec
	ha             haState
}

type topicCounters struct {
	produced, errors prometheus.Counter
}

// New registers every collector on a registry of its own (plus the Go
// runtime and process collectors).
func New(cfg Config, info Info, log zerolog.Logger) *Metrics {
	cfg.SetDefaults()
	m := &Metrics{cfg: cfg, info: info, log: log, reg: prometheus.NewRegistry()}
	f := factory{m.reg}
	m.eventsRead = f.counter("outboxrelay_source_events_read_total", "Outbox events (rows of outbox tables and outbox logical messages) read from the database log.")
	m.txnsRead = f.counter("outboxrelay_source_transactions_read_total", "Committed transactions read from the database log, including those that touched no outbox table.")
	m.reconnects = f.counter("outboxrelay_source_reconnects_total", "Times the relay connected to the database log again after the first connection (after an outage or a restart of the pipeline).")
	m.sourceErrors = f.counter("outboxrelay_source_errors_total", "Failed attempts to connect to or read the database log; each is retried with backoff from the checkpoint.")
	m.behindBytes = f.gauge("outboxrelay_source_behind_bytes", "Bytes of binlog/WAL between the checkpoint and the server's current position, as the server reports it (polled every metrics.status_interval).")
	m.retainedWAL = prometheus.NewGauge(prometheus.GaugeOpts{Name: "outboxrelay_source_retained_wal_bytes", Help: "PostgreSQL: bytes of WAL the server keeps for the relay's replication slot (from its restart_lsn to the current position)."})
	if info.RetainsWAL {
		m.reg.MustRegister(m.retainedWAL)
	}
	m.produced = f.counterVec("outboxrelay_records_produced_total", "Records Kafka acknowledged, by topic.", "topic")
	m.produceErrors = f.counterVec("outboxrelay_produce_errors_total", "Records Kafka refused or that failed after the producer's retries, by topic; the relay then restarts from its checkpoint.", "topic")
	m.badRows = f.counterVec("outboxrelay_bad_rows_total", "Outbox rows that could not be turned into a record, by reason and by the outbox.on_bad_row policy applied (fail, skip, dead-letter).", "reason", "policy")
	m.snapshotRows = f.counterVec("outboxrelay_snapshot_rows_total", "Rows read from the outbox tables by the initial snapshot (start: snapshot), by table; a snapshot taken again after a restart counts its rows again.", "table")
	f.gaugeFunc("outboxrelay_snapshot_running", "1 while the relay hands out the initial snapshot of the outbox tables (start: snapshot), else 0.", func() float64 { return float64(m.snapshotActive.Load()) })
	m.checkpointPos = f.gauge("outboxrelay_checkpoint_position", "The durable checkpoint as a number that grows with the log (PostgreSQL: the LSN in bytes; MySQL/MariaDB: binlog file number × 2^32 + offset).")
	m.checkpointTime = f.gauge("outboxrelay_checkpoint_timestamp_seconds", "Unix time when the durable checkpoint was last written.")
	m.commitToAck = f.histogram("outboxrelay_commit_to_ack_seconds", "End-to-end lag per transaction with outbox records: from its commit in the database to Kafka's acknowledgement of its last record. MariaDB (and MySQL before 8.0.1) log commit times in whole seconds, so there this reads up to 1 s high and its sub-second buckets stay empty: see outboxrelay_read_to_ack_seconds.",
		[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600})
	m.readToAck = f.histogram("outboxrelay_read_to_ack_seconds", "Per transaction with outbox records: from reading its commit from the log to Kafka's acknowledgement of its last record; precise on every source (the relay's clock), unlike outboxrelay_commit_to_ack_seconds on MariaDB.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60})
	m.cleanup = newCleanupMetrics(f)
	m.activeGauge = f.gaugeVec("outboxrelay_active", "relay.ha: 1 on the instance that streams the pipeline, 0 on a standby.", "pipeline")
	m.assignments = f.counterVec("outboxrelay_ha_assignments_total", "relay.ha: times the standby group assigned the pipeline to this instance.", "pipeline")
	m.takeovers = f.counterVec("outboxrelay_ha_takeovers_total", "relay.ha: assignments of the pipeline to this instance that another instance held before (a failover or a move).", "pipeline")
	f.gaugeFunc("outboxrelay_records_in_flight", "Records sent to Kafka and not yet acknowledged.", func() float64 { return float64(m.inFlight()) })
	f.gaugeFunc("outboxrelay_source_behind_seconds", "Seconds between now and the commit time of the last transaction read (whole seconds on MariaDB); 0 while the relay waits for new transactions (caught up).", func() float64 { return m.state.secondsBehind(time.Now()) })
	f.gaugeFunc("outboxrelay_checkpoint_age_seconds", "Seconds since the durable checkpoint was last written (0 before the first); it grows while the database is idle.", func() float64 {
		t := m.state.checkpointSaved()
		if t.IsZero() {
			return 0
		}
		return time.Since(t).Seconds()
	})
	f.gaugeFunc("outboxrelay_source_streaming", "1 while the relay is connected to the database log and reading, else 0.", func() float64 { return b2f(m.state.isOpen()) })
	f.gaugeFunc("outboxrelay_ready", "1 when /readyz answers 200 (streaming and making progress or idle), else 0.", func() float64 {
		ok, _ := m.Ready(time.Now())
		return b2f(ok)
	})
	bi := prometheus.NewGauge(prometheus.GaugeOpts{Name: "outboxrelay_build_info", Help: "The relay's version and source kind (value 1).",
		ConstLabels: prometheus.Labels{"version": info.Version, "source": info.Source}})
	bi.Set(1)
	m.reg.MustRegister(bi, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the collectors live (for tests and extra exporters).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// BadRow counts one bad outbox row under the policy applied. It is the
// relay's BadRowHook.
func (m *Metrics) BadRow(reason, policy string) {
	m.badRows.WithLabelValues(reason, policy).Inc()
}

func (m *Metrics) topic(name string) *topicCounters {
	if tc, ok := m.topics.Load(name); ok {
		return tc.(*topicCounters)
	}
	tc := &topicCounters{produced: m.produced.WithLabelValues(name), errors: m.produceErrors.WithLabelValues(name)}
	actual, _ := m.topics.LoadOrStore(name, tc)
	return actual.(*topicCounters)
}

// inFlight counts the records of the current sink not yet acknowledged. A
// sink abandoned after a failure may never see its last acks; it no
// longer counts once the next session has its own.
func (m *Metrics) inFlight() int64 {
	if s := m.sink.Load(); s != nil {
		return s.inflight.Load()
	}
	return 0
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// factory registers collectors on one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeFunc(name, help string, fn func() float64) {
	f.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}
