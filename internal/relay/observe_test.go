package relay

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	prev := -1
	for us := int64(0); us < 1<<22; us += 1 + us/64 {
		b := bucket(us)
		if b < prev {
			t.Fatalf("bucket(%d) = %d, below bucket of a smaller value (%d)", us, b, prev)
		}
		prev = b
		if u := upper(b); u < us || float64(u-us) > 0.07*float64(us)+1 {
			t.Fatalf("upper(bucket(%d)) = %d: not within 7%% above", us, u)
		}
	}
}

func TestLatencyLogQuantiles(t *testing.T) {
	t.Parallel()
	var l latencyLog
	now := time.Now()
	// 99 transactions of one record read 1 ms ago, one of 100 records read
	// 100 ms ago: per record, p50 is ~100 ms, and p99 too.
	for i := 0; i < 99; i++ {
		l.Acked(time.Time{}, now.Add(-time.Millisecond), 1)
	}
	l.Acked(time.Time{}, now.Add(-100*time.Millisecond), 100)
	l.Acked(time.Time{}, now, 0) // rows-less: counted, not in percentiles
	var buf bytes.Buffer
	l.log(zerolog.New(&buf).Level(zerolog.DebugLevel))
	var got struct {
		Transactions int64 `json:"transactions"`
		Records      int64 `json:"records"`
		Read         struct {
			N, P50, P99, Max int64
		} `json:"log_to_ack_us"`
		Commit struct{ N int64 } `json:"commit_to_ack_us"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if got.Transactions != 101 || got.Records != 199 || got.Read.N != 199 || got.Commit.N != 0 {
		t.Fatalf("counts: %s", buf.Bytes())
	}
	if got.Read.P50 < 100_000 || got.Read.P50 > 110_000 || got.Read.Max < 100_000 {
		t.Fatalf("p50 %d µs, max %d µs, want ~100 ms: %s", got.Read.P50, got.Read.Max, buf.Bytes())
	}

	// Above debug level nothing is logged.
	buf.Reset()
	l.log(zerolog.New(&buf).Level(zerolog.InfoLevel))
	if buf.Len() != 0 {
		t.Fatalf("logged at info level: %s", buf.Bytes())
	}
}
