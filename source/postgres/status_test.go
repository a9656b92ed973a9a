package postgres

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestStatusPositions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		start, acked, received pglogrepl.LSN
		write, flush, apply    pglogrepl.LSN
	}{
		{"nothing acked yet: flush is the start, never 0", 100, 0, 500, 500, 100, 100},
		{"nothing received yet", 100, 0, 0, 100, 100, 100},
		{"flush never beyond acked", 100, 200, 500, 500, 200, 200},
		{"everything acked", 100, 500, 500, 500, 500, 500},
		{"ack older than start (checkpoint ahead of ack) keeps the start", 300, 200, 400, 400, 300, 300},
		{"write never behind flush", 100, 400, 300, 400, 400, 400},
		{"no position at all: all 0, so pglogrepl cannot copy write into flush", 0, 0, 500, 0, 0, 0},
		{"start 0 but acked", 0, 50, 500, 500, 50, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, f, a := statusPositions(tt.start, tt.acked, tt.received)
			if w != tt.write || f != tt.flush || a != tt.apply {
				t.Fatalf("statusPositions(%d, %d, %d) = %d, %d, %d; want %d, %d, %d",
					tt.start, tt.acked, tt.received, w, f, a, tt.write, tt.flush, tt.apply)
			}
			if f > max(tt.start, tt.acked) {
				t.Fatalf("flush %d beyond the durable position", f)
			}
			if w != 0 && f == 0 {
				t.Fatal("flush 0 with write set: pglogrepl would send write as flush")
			}
		})
	}
}

func TestQuietEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		inTx                   bool
		lastEnd, acked, walEnd pglogrepl.LSN
		want                   pglogrepl.LSN
		ok                     bool
	}{
		{"all acked, WAL moved on", false, 100, 100, 900, 900, true},
		{"inside a transaction", true, 100, 100, 900, 0, false},
		{"last end not acked yet", false, 100, 99, 900, 0, false},
		{"WAL end not beyond the last end", false, 100, 100, 100, 0, false},
		{"WAL end behind the last end (keepalive sent mid-transaction)", false, 100, 100, 50, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := quietEnd(tt.inTx, tt.lastEnd, tt.acked, tt.walEnd)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("quietEnd = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
