package relay

import (
	"math/bits"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Observer learns how long transactions take to get through the relay, for
// metrics. It is deliberately tiny so that a metrics exporter can replace
// the default (a histogram logged at debug level, see latencyLog) without
// touching the pipeline.
type Observer interface {
	// Acked is called once per transaction, in log order, when the
	// checkpoint watermark passes it: every record of it and of every
	// transaction before it has been acknowledged by the broker. commit is
	// the source's commit time (zero when the source does not tell;
	// MySQL/MariaDB binlog timestamps are whole seconds), read is when the
	// relay read the transaction's commit from the log, records is how many
	// records it produced.
	//
	// It runs on the sink's acknowledgement path with the checkpoint tracker
	// locked: it must be quick and must not block.
	Acked(commit, read time.Time, records int)
}

// latencyLog is the default Observer: log-linear histograms (about 6%
// resolution, like HDR histograms with one significant digit) of
// commit→ack and log→ack, summed over the relay's life and logged at debug
// level at the end of every session. scripts/bench.sh reads that line.
type latencyLog struct {
	mu                  sync.Mutex
	commit, read        histogram
	txns, records       int64
	commitTxns          int64 // transactions with a commit time
	wholeSecondCommits  int64 // of which without a sub-second part
	firstAck, lastAck   time.Time
	firstRead, lastRead time.Time
}

func (l *latencyLog) Acked(commit, read time.Time, records int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.txns == 0 {
		l.firstAck, l.firstRead = now, read
	}
	l.lastAck, l.lastRead = now, read
	l.txns++
	l.records += int64(records)
	if records == 0 {
		// Rows-less transactions (other tables, keepalive ends) are acked
		// as soon as they are read: they would only dilute the percentiles.
		return
	}
	l.read.add(now.Sub(read), int64(records))
	if !commit.IsZero() {
		l.commitTxns++
		if commit.Nanosecond() == 0 {
			l.wholeSecondCommits++
		}
		l.commit.add(now.Sub(commit), int64(records))
	}
}

// log writes the summary. Percentiles are per record.
func (l *latencyLog) log(log zerolog.Logger) {
	if e := log.Debug(); e.Enabled() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.txns == 0 {
			return
		}
		e.Int64("transactions", l.txns).Int64("records", l.records).
			Int64("first_ack_unix_ns", l.firstAck.UnixNano()).Int64("last_ack_unix_ns", l.lastAck.UnixNano()).
			Int64("first_read_unix_ns", l.firstRead.UnixNano()).Int64("last_read_unix_ns", l.lastRead.UnixNano()).
			Dict("commit_to_ack_us", l.commit.dict()).
			Dict("log_to_ack_us", l.read.dict()).
			// MySQL/MariaDB binlog timestamps: commit_to_ack is then only
			// good to a second, and log_to_ack is the measure to read.
			Bool("commit_times_whole_seconds", l.commitTxns > 0 && l.wholeSecondCommits == l.commitTxns).
			Msg("commit-to-ack latency")
	}
}

// histogram counts microsecond durations in log-linear buckets: 16 per
// power of two.
type histogram struct {
	counts [64 * 16]int64
	n      int64
	max    int64
}

func bucket(us int64) int {
	if us < 16 {
		return int(max(us, 0))
	}
	shift := bits.Len64(uint64(us)) - 5
	i := shift*16 + int(us>>shift)
	return min(i, 64*16-1)
}

// upper is the largest value of bucket i.
func upper(i int) int64 {
	if i < 16 {
		return int64(i)
	}
	shift := i/16 - 1
	m := int64(i%16 + 16)
	return (m+1)<<shift - 1
}

func (h *histogram) add(d time.Duration, n int64) {
	us := d.Microseconds()
	h.counts[bucket(us)] += n
	h.n += n
	h.max = max(h.max, us)
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return min(upper(i), h.max)
		}
	}
	return h.max
}

func (h *histogram) dict() *zerolog.Event {
	return zerolog.Dict().Int64("n", h.n).Int64("p50", h.quantile(0.50)).Int64("p90", h.quantile(0.90)).
		Int64("p99", h.quantile(0.99)).Int64("p999", h.quantile(0.999)).Int64("max", h.max)
}
