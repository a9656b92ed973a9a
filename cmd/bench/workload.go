package main

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"time"
)

// event is one outbox row.
type event struct {
	id, aggType, aggID, typ string
	payload                 string
}

// noiseRow is one row of a non-outbox table.
type noiseRow struct {
	ref, sku, note string
	qty            int
}

// gen makes the workload: ~payload-byte JSON payloads of letters, digits and
// JSON punctuation only (no quotes or backslashes to escape in SQL).
type gen struct {
	rng     *rand.Rand
	prefix  string
	n       int
	payload int
	pad     string
}

func newGen(seed int64, prefix string, payload int) *gen {
	pad := make([]byte, 4096)
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789 "
	r := rand.New(rand.NewSource(seed))
	for i := range pad {
		pad[i] = letters[r.Intn(len(letters))]
	}
	return &gen{rng: rand.New(rand.NewSource(seed + 1)), prefix: prefix, payload: payload, pad: string(pad)}
}

var aggTypes = []string{"order", "customer", "payment"}
var eventTypes = []string{"Created", "Updated", "Shipped", "Paid"}

// event returns the next event; ts (µs, 0: none) goes into the payload.
func (g *gen) event(ts int64) event {
	g.n++
	e := event{
		id:      fmt.Sprintf("%s-%09d", g.prefix, g.n),
		aggType: aggTypes[g.rng.Intn(len(aggTypes))],
		aggID:   "agg-" + strconv.Itoa(g.rng.Intn(10000)),
		typ:     eventTypes[g.rng.Intn(len(eventTypes))],
	}
	head := fmt.Sprintf(`{"id":"%s","aggregate":"%s","type":"%s","ts":%d,"amount":%d,"note":"`, e.id, e.aggID, e.typ, ts, g.rng.Intn(1000000))
	n := max(g.payload-len(head)-2, 0)
	off := g.rng.Intn(len(g.pad) - n)
	e.payload = head + g.pad[off:off+n] + `"}`
	return e
}

func (g *gen) noise() noiseRow {
	g.n++
	n := max(g.payload-60, 0)
	off := g.rng.Intn(len(g.pad) - n)
	return noiseRow{ref: fmt.Sprintf("%s-n%09d", g.prefix, g.n), sku: "sku-" + strconv.Itoa(g.rng.Intn(5000)), qty: 1 + g.rng.Intn(9), note: g.pad[off : off+n]}
}

// writer writes transactions to one database.
type writer interface {
	// tx writes one transaction: noise rows on the non-outbox tables
	// interleaved with the events.
	tx(ctx context.Context, evs []event, noise []noiseRow) error
	close()
}

// backlogStats says what a backlog holds.
type backlogStats struct {
	txns, events, noise int
	took                time.Duration
}

// writeBacklog writes rows rows in transactions of 1..maxTx rows, a share
// noiseShare of them on non-outbox tables; the last row is an event, so that
// the relay's last acknowledgement marks the end of the backlog.
func writeBacklog(ctx context.Context, w writer, g *gen, rows, maxTx int, noiseShare float64) (backlogStats, error) {
	var st backlogStats
	start := time.Now()
	left := rows
	lastLog := time.Now()
	for left > 0 {
		n := min(1+g.rng.Intn(maxTx), left)
		left -= n
		var evs []event
		var noise []noiseRow
		for i := 0; i < n; i++ {
			if noiseShare > 0 && g.rng.Float64() < noiseShare && !(left == 0 && i == n-1) {
				noise = append(noise, g.noise())
			} else {
				evs = append(evs, g.event(0))
			}
		}
		if err := w.tx(ctx, evs, noise); err != nil {
			return st, err
		}
		st.txns++
		st.events += len(evs)
		st.noise += len(noise)
		if time.Since(lastLog) > 10*time.Second {
			logf("  … %d of %d rows written", rows-left, rows)
			lastLog = time.Now()
		}
	}
	st.took = time.Since(start)
	return st, nil
}

// writeBig writes one transaction of rows events, in statements of 1000.
type bigWriter interface {
	big(ctx context.Context, g *gen, rows int) error
}

// liveStats says what the live writer achieved.
type liveStats struct {
	events int
	took   time.Duration
}

// writeLive writes rate events per second in transactions of perTx events
// for d, paced against the schedule (a late transaction is not made up by
// sleeping less later than the schedule allows: the writer never bursts
// beyond catching up).
func writeLive(ctx context.Context, w writer, g *gen, rate, perTx int, d time.Duration) (liveStats, error) {
	interval := time.Duration(float64(time.Second) * float64(perTx) / float64(rate))
	start := time.Now()
	total := int(float64(rate) * d.Seconds() / float64(perTx))
	var st liveStats
	for i := 0; i < total; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		evs := make([]event, perTx)
		ts := time.Now().UnixMicro()
		for j := range evs {
			evs[j] = g.event(ts)
		}
		if err := w.tx(ctx, evs, nil); err != nil {
			return st, err
		}
		st.events += perTx
	}
	st.took = time.Since(start)
	return st, nil
}
