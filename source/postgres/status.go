package postgres

import (
	"github.com/jackc/pglogrepl"
)

// statusPositions computes the three positions of a standby status update.
//
// Flush and apply are what the server may release WAL up to, so they are the
// durable position: the start position (a checkpoint, or the slot's own
// confirmed_flush_lsn) or the newest position the relay acknowledged,
// whichever is later — never what was merely received. Write is what was
// received, and never behind flush.
//
// pglogrepl.SendStandbyStatusUpdate copies write into flush and apply when
// those are 0, which would confirm unacknowledged WAL: so when flush is 0
// (no position known yet) write is 0 too, and the server, which ignores a 0
// flush, learns nothing.
func statusPositions(start, acked, received pglogrepl.LSN) (write, flush, apply pglogrepl.LSN) {
	flush = max(start, acked)
	if flush == 0 {
		return 0, 0, 0
	}
	return max(received, flush), flush, flush
}

// quietEnd decides whether to hand out a rows-less transaction ending at
// walEnd, so that a quiet outbox on a busy database lets the slot advance.
// That is safe only outside a transaction, once every transaction end handed
// out has been acknowledged (so the new end cannot overtake a record still in
// flight), and only forwards. The relay checkpoints that end and acknowledges
// it; only then does the flush position move: the flush never passes the
// durable checkpoint.
func quietEnd(inTx bool, lastEnd, acked, walEnd pglogrepl.LSN) (pglogrepl.LSN, bool) {
	if inTx || acked < lastEnd || walEnd <= lastEnd {
		return 0, false
	}
	return walEnd, true
}
