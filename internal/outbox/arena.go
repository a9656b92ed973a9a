package outbox

import (
	"strconv"

	"github.com/outboxrelay/outboxrelay/sink"
)

// arena hands out the small pieces every record needs (its header slice,
// the index header's digits, the position header's bytes) from chunks
// shared by many records, instead of a few allocations per record: the
// profiles of a backlog drain showed allocation and GC as a large share of
// the relay's CPU (docs/performance.md).
//
// A piece handed out is never handed out again nor written to: a chunk is
// only ever filled further, and freed by the GC once every record holding
// a piece of it is gone. Used by the Mapper's goroutine only.
type arena struct {
	hdrs    []sink.Header
	digits  []byte
	lastTx  string
	txBytes []byte
	scratch []byte // topic rendering
}

const arenaChunk = 4096

// headers returns an empty slice with room for n headers.
func (a *arena) headers(n int) []sink.Header {
	if cap(a.hdrs)-len(a.hdrs) < n {
		a.hdrs = make([]sink.Header, 0, max(arenaChunk, n))
	}
	s := a.hdrs[len(a.hdrs) : len(a.hdrs) : len(a.hdrs)+n]
	a.hdrs = a.hdrs[:len(a.hdrs)+n]
	return s
}

// int returns i's decimal digits.
func (a *arena) int(i int) []byte {
	if cap(a.digits)-len(a.digits) < 20 {
		a.digits = make([]byte, 0, arenaChunk)
	}
	start := len(a.digits)
	a.digits = strconv.AppendInt(a.digits, int64(i), 10)
	return a.digits[start:len(a.digits):len(a.digits)]
}

// txID returns id's bytes, shared by the records of one transaction.
func (a *arena) txID(id string) []byte {
	if id != a.lastTx || a.txBytes == nil {
		a.lastTx, a.txBytes = id, []byte(id)
	}
	return a.txBytes
}
