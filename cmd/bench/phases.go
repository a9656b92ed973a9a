package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// row is one line of the result table.
type row struct {
	source, phase string
	rows          int64 // log rows the phase covers (events and ignored rows)
	events        int64
	seconds       float64
	spread        string // min–max seconds over the repeated runs
	ratio         string // drain rate / raw rate on the same backlog
	latency       string
	rss           int64
	cpu           time.Duration
	note          string
}

func (r row) rate() float64 {
	if r.seconds <= 0 {
		return 0
	}
	return float64(r.rows) / r.seconds
}

// runs summarises repeated timings of one measurement: the median is what
// the table shows, with the spread beside it.
type runs []float64

func (r runs) median() float64 {
	if len(r) == 0 {
		return 0
	}
	s := append([]float64(nil), r...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func (r runs) spread() string {
	if len(r) < 2 {
		return ""
	}
	s := append([]float64(nil), r...)
	sort.Float64s(s)
	return fmt.Sprintf("%.2f–%.2f", s[0], s[len(s)-1])
}

// drains runs drain o.repeat times (sourceYAML(i) for run i) and returns the
// timings, the highest peak RSS and the median run's CPU time.
func drains(ctx context.Context, o *options, name string, sourceYAML func(i int) string, want int64) (runs, usage, error) {
	return drainsWith(ctx, o, name, sourceYAML, want, atLeastOnce)
}

// delivery is how a bench relay delivers, and how the bench counts what
// it delivered.
type delivery struct {
	eos     bool // relay.delivery exactly-once, positions in Kafka
	consume bool // count with a read_committed consumer (transaction markers take offsets)
	cleanup bool // outbox.cleanup on, deleting rows as soon as they are covered
}

var atLeastOnce = delivery{}

// liveVariants are the live phase's runs: plain, and with --noise-cleanup
// once more with the cleanup deleting beside the stream (where, unlike a
// backlog drain, it deletes all along: each round's position is near the
// end of the log).
func liveVariants(o *options) []delivery {
	if o.cleanup {
		return []delivery{atLeastOnce, {cleanup: true}}
	}
	return []delivery{atLeastOnce}
}

// suffix tells apart the work directories (and ids) of a variant's run.
func (d delivery) suffix() string {
	if d.cleanup {
		return "-cleanup"
	}
	return ""
}

// label is a variant's addition to a result row's phase.
func (d delivery) label() string {
	if d.cleanup {
		return ", outbox.cleanup on"
	}
	return ""
}

func (d delivery) String() string {
	s := "at-least-once"
	if d.eos {
		s = "exactly-once"
	}
	if d.cleanup {
		s += ", cleanup on"
	}
	return s
}

func drainsWith(ctx context.Context, o *options, name string, sourceYAML func(i int) string, want int64, d delivery) (runs, usage, error) {
	var t runs
	var u usage
	var cpus []time.Duration
	for i := 0; i < o.repeat; i++ {
		prof := "" // with --profile, every run is profiled
		if o.profile != "" {
			prof = filepath.Join(o.profile, fmt.Sprintf("%s-%d", name, i+1))
		}
		res, err := drainWith(ctx, o, fmt.Sprintf("%s-%d", name, i+1), sourceYAML(i), want, prof, d)
		if err != nil {
			return t, u, err
		}
		logf("  relay drain (%s) %d/%d: %.2fs, %.0f events/s, peak RSS %d MiB, CPU %.1fs", d, i+1, o.repeat, res.seconds, float64(want)/res.seconds, res.usage.peakRSS>>20, res.usage.cpu.Seconds())
		t = append(t, res.seconds)
		u.peakRSS = max(u.peakRSS, res.usage.peakRSS)
		cpus = append(cpus, res.usage.cpu)
	}
	sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
	u.cpu = cpus[len(cpus)/2]
	return t, u, nil
}

// relayRun is what one relay process did.
type relayRun struct {
	seconds float64 // from process start to the last acknowledgement
	usage   usage
	summary *latencySummary
}

// writeRelayConfig writes a relay configuration: sourceYAML is the body of
// the source: section, indented by two spaces.
func writeRelayConfig(dir, sourceYAML, broker, kafkaExtra string, d delivery) (string, error) {
	extra := ""
	for _, kv := range strings.Split(kafkaExtra, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			k, v, _ := strings.Cut(kv, "=")
			extra += fmt.Sprintf("  %s: %s\n", k, v)
		}
	}
	cfg := fmt.Sprintf(`source:
%s
kafka:
  brokers: [%s]
%scheckpoint:
  file:
    path: %s
`, sourceYAML, broker, extra, filepath.Join(dir, "checkpoint.json"))
	if d.eos {
		cfg += "  type: kafka\nrelay:\n  name: bench\n  delivery: exactly-once\n"
	}
	if d.cleanup {
		// Rows go as soon as the checkpoint covers them: the cleanup
		// deletes while the relay drains, its worst case for the stream.
		cfg += "outbox:\n  cleanup:\n    enabled: true\n    retention: 1ms\n    interval: 1s\n"
	}
	p := filepath.Join(dir, "relay.yaml")
	return p, os.WriteFile(p, []byte(cfg), 0o600)
}

// drain runs a fresh broker and the relay until want records are in Kafka.
func drain(ctx context.Context, o *options, name, sourceYAML string, want int64, profilePrefix string) (relayRun, error) {
	return drainWith(ctx, o, name, sourceYAML, want, profilePrefix, atLeastOnce)
}

func drainWith(ctx context.Context, o *options, name, sourceYAML string, want int64, profilePrefix string, d delivery) (relayRun, error) {
	var res relayRun
	b, p, err := startRun(ctx, o, name, sourceYAML, profilePrefix, d)
	if err != nil {
		return res, err
	}
	defer b.stop()
	defer p.kill()
	if err := waitDelivered(ctx, b.addr, o, want, p, 30*time.Minute, d); err != nil {
		return res, err
	}
	u, s, err := p.stop()
	res.usage, res.summary = u, s
	if err != nil {
		return res, err
	}
	if s.Records < want {
		return res, fmt.Errorf("relay acknowledged %d records, want %d", s.Records, want)
	}
	res.seconds = float64(s.LastAck-p.started.UnixNano()) / 1e9
	return res, nil
}

// startRun starts a fresh broker and a relay on it in o.work/name, the
// relay profiled when prof is not "".
func startRun(ctx context.Context, o *options, name, sourceYAML, prof string, d delivery) (*broker, *relayProc, error) {
	dir := filepath.Join(o.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	b, err := startBroker(ctx, o, filepath.Join(dir, "devkafka.log"))
	if err != nil {
		return nil, nil, err
	}
	cfg, err := writeRelayConfig(dir, sourceYAML, b.addr, o.kafkaExtra, d)
	if err != nil {
		b.stop()
		return nil, nil, err
	}
	p, err := startRelay(o, cfg, filepath.Join(dir, "relay.log"), prof)
	if err != nil {
		b.stop()
		return nil, nil, err
	}
	return b, p, nil
}

// liveResult is what the live phase measured.
type liveResult struct {
	relayRun
	written liveStats
	e2e     quantiles
}

// live runs a fresh broker and the relay from the current position, writes
// at a fixed rate, and waits until every event is in Kafka.
func live(ctx context.Context, o *options, name, sourceYAML string, w writer, g *gen) (liveResult, error) {
	return liveWith(ctx, o, name, sourceYAML, w, g, atLeastOnce)
}

func liveWith(ctx context.Context, o *options, name, sourceYAML string, w writer, g *gen, d delivery) (liveResult, error) {
	var res liveResult
	prof := "" // with --profile, the live relay is profiled (idle-ish costs)
	if o.profile != "" {
		prof = filepath.Join(o.profile, name)
	}
	b, p, err := startRun(ctx, o, name, sourceYAML, prof, d)
	if err != nil {
		return res, err
	}
	defer b.stop()
	defer p.kill()
	if err := p.waitStreaming(ctx); err != nil {
		return res, err
	}
	c := startConsumer(ctx, b.addr)
	time.Sleep(500 * time.Millisecond) // let the consumer join before the first write
	logf("  writing %d events/s in transactions of %d for %v", o.liveRate, o.liveTx, o.liveFor)
	res.written, err = writeLive(ctx, w, g, o.liveRate, o.liveTx, o.liveFor)
	if err != nil {
		c.stop()
		return res, err
	}
	if err := waitDelivered(ctx, b.addr, o, int64(res.written.events), p, 5*time.Minute, d); err != nil {
		c.stop()
		return res, err
	}
	res.e2e = durationQuantiles(c.wait(res.written.events, 30*time.Second))
	u, s, err := p.stop()
	res.usage, res.summary = u, s
	return res, err
}

func ms(us int64) string { return fmt.Sprintf("%.1f", float64(us)/1000) }

// latencyText renders p50/p99/max in ms.
func latencyText(q quantiles) string {
	if q.N == 0 {
		return "n/a"
	}
	return ms(q.P50) + " / " + ms(q.P99) + " / " + ms(q.Max)
}

func ratioText(raw, relay float64, rawName string) string {
	if raw <= 0 || relay <= 0 {
		return ""
	}
	return fmt.Sprintf("**%.2f×** %s", relay/raw, rawName)
}
