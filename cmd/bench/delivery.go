package main

import (
	"context"
	"fmt"
)

// deliverySource is what the delivery phases need from a source's bench.
type deliverySource struct {
	src, prefix string // "MariaDB", "mysql"
	w           writer
	// starts prepares, before a backlog is written, the source sections
	// of n relays that will each drain all of it (Postgres: a slot each).
	starts func(ctx context.Context, n int) ([]string, error)
	// done runs after the drains (dropping slots).
	done func(ctx context.Context)
	// liveYAML is the source section of a live relay.
	liveYAML func() string
	// latency picks the relay's own latency measure for this source.
	latency func(s *latencySummary) string
}

// deliveryPhases measures exactly-once against at-least-once on the same
// backlogs, in the same run: a drain of transactions of 1..max-tx rows
// (phase eos), a drain of single-row transactions — the common outbox
// shape — (phase single, half the rows), and a live phase (eos).
// At-least-once is counted here the way exactly-once must be, by a
// read_committed consumer, so the ratios compare like with like.
func deliveryPhases(ctx context.Context, o *options, s deliverySource) ([]row, error) {
	var rows []row
	type backlog struct {
		phase string
		rows  int
		maxTx int
		seed  int64
	}
	var backlogs []backlog
	if o.phases["eos"] {
		backlogs = append(backlogs, backlog{"backlog", o.rows, o.maxTx, o.seed + 10})
	}
	if o.phases["single"] {
		backlogs = append(backlogs, backlog{"single-row transactions", o.rows / 2, 1, o.seed + 11})
	}
	for _, bl := range backlogs {
		starts, err := s.starts(ctx, 2*o.repeat)
		if err != nil {
			return rows, err
		}
		logf("%s %s: writing %d rows, transactions of 1–%d rows", s.src, bl.phase, bl.rows, bl.maxTx)
		st, err := writeBacklog(ctx, s.w, newGen(bl.seed, fmt.Sprintf("x%d", bl.seed), o.payload), bl.rows, bl.maxTx, 0)
		if err != nil {
			return rows, fmt.Errorf("write %s: %w", bl.phase, err)
		}
		logf("  %d transactions, %d events in %v", st.txns, st.events, st.took)
		var rates [2]float64
		for k, d := range []delivery{{consume: true}, {eos: true, consume: true}} {
			off := k * o.repeat
			t, u, err := drainsWith(ctx, o, fmt.Sprintf("%s-%s-%s", s.prefix, slug(bl.phase), d), func(i int) string { return starts[off+i] }, int64(st.events), d)
			if err != nil {
				return rows, fmt.Errorf("%s (%s): %w", bl.phase, d, err)
			}
			r := row{source: s.src, phase: fmt.Sprintf("%s — relay drain, %s", bl.phase, d), rows: int64(bl.rows), events: int64(st.events),
				seconds: t.median(), spread: t.spread(), rss: u.peakRSS, cpu: u.cpu}
			rates[k] = r.rate()
			if k == 1 {
				r.ratio = ratioText(rates[0], rates[1], "at-least-once")
			}
			rows = append(rows, r)
		}
		s.done(ctx)
	}
	if o.phases["eos"] {
		logf("%s live, exactly-once: %d events/s for %v", s.src, o.liveRate, o.liveFor)
		res, err := liveWith(ctx, o, s.prefix+"-live-eos", s.liveYAML(), s.w, newGen(o.seed+12, "le", o.payload), delivery{eos: true})
		if err != nil {
			return rows, fmt.Errorf("live (exactly-once): %w", err)
		}
		s.done(ctx)
		rows = append(rows, row{
			source: s.src, phase: fmt.Sprintf("live %d ev/s, %d-row tx, exactly-once", o.liveRate, o.liveTx),
			rows: int64(res.written.events), events: int64(res.written.events), seconds: res.written.took.Seconds(),
			latency: s.latency(res.summary) + "; e2e " + latencyText(res.e2e),
			rss:     res.usage.peakRSS, cpu: res.usage.cpu,
			note: "exactly-once: records are visible once their Kafka transaction commits (relay.commit_interval 100ms by default); " +
				"the relay's measure runs to that commit, e2e to a read_committed consumer",
		})
	}
	return rows, nil
}

func slug(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	return string(b)
}
