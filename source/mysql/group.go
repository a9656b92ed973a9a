package mysql

import (
	"time"

	"github.com/outboxrelay/outboxrelay/source"
)

// group is the binlog event group (one transaction) being read.
//
// Rows of a group are handed out only once nothing can discard them any
// more. A row can be discarded by a later ROLLBACK TO a savepoint set
// before it: servers write SAVEPOINT and, when a non-transactional table
// was changed in the transaction, ROLLBACK TO into the binlog, together
// with the rows in between. So rows before the group's first savepoint are
// final and may go out in pieces while the group is still being read; the
// rest wait in buf until the group ends. If they outgrow the buffer, the
// group is scanned to its end only to learn which rows survive (scanning),
// then read again from its start and handed out (replay): memory stays
// bounded whatever the transaction's size.
//
// Rows are numbered two ways: ord counts every outbox INSERT row of the
// group in log order; the index handed to the relay counts survivors only,
// so it does not depend on how the group was read.
type group struct {
	id         string   // txID of its first event: what records carry
	start      Position // the position before the group: it re-reads it
	file       string   // binlog file of its first event
	at         uint32   // offset of its first event
	length     uint64   // MySQL transaction_length (GTID event included); 0 unknown
	began      bool     // BEGIN-like opening: ends only at XID, COMMIT, ROLLBACK or XA_PREPARE
	standalone bool     // MariaDB FL_STANDALONE: its first query ends it
	xa         bool     // the events of an XA transaction: its rows publish at XA COMMIT
	gtid       *gtidAdd // its GTID, added to the executed set at its end
	commitTime time.Time
	// preciseTime: commitTime is MySQL's immediate_commit_timestamp (µs),
	// not a binlog timestamp (s).
	preciseTime bool

	seen     int    // outbox rows met so far (ordinals)
	marks    []mark // savepoints in force
	discard  []span // ordinals rolled back to a savepoint
	buf      []orow // survivors-to-be, not handed out yet
	handed   int    // survivors handed out or skipped: the next index
	skip     int    // survivors delivered before a restart: not handed out again
	scanning bool   // buf overflowed while a savepoint could still discard rows
	replay   *replayPlan
	// collect is set while the events of a prepared XA transaction are
	// read again to publish them at its XA COMMIT: the rows belong to the
	// commit's transaction (id, start, index), and the prepared group's
	// own GTID and end change nothing.
	collect *collectXA
}

type mark struct {
	name string
	ord  int
}

// span is the ordinals [from, to).
type span struct{ from, to int }

type orow struct {
	row source.Row
	ord int
}

// replayPlan is what a scan learnt about a group: which rows a savepoint
// rollback discarded, and how many survivors were handed out before.
type replayPlan struct {
	file    string
	at      uint32
	discard []span
	handed  int
}

// discarded reports whether ordinal o lies in one of spans.
func discarded(spans []span, o int) bool {
	for _, s := range spans {
		if o >= s.from && o < s.to {
			return true
		}
	}
	return false
}

// savepoint records SAVEPOINT name. A name set again replaces the old one,
// as the server does.
func (g *group) savepoint(name string) {
	g.release(name, false)
	g.marks = append(g.marks, mark{name: name, ord: g.seen})
}

// release drops savepoint name and, with andLater, every savepoint set
// after it (RELEASE SAVEPOINT; servers do not log it, but accept it).
func (g *group) release(name string, andLater bool) {
	for i := len(g.marks) - 1; i >= 0; i-- {
		if g.marks[i].name == name {
			if andLater {
				g.marks = g.marks[:i]
			} else {
				g.marks = append(g.marks[:i], g.marks[i+1:]...)
			}
			return
		}
	}
}

// rollbackTo applies ROLLBACK TO name: the rows since the savepoint are
// discarded; the savepoint stays, those set after it go. It reports false
// for a savepoint it does not know (the server refuses those, so they are
// not in the binlog).
func (g *group) rollbackTo(name string) bool {
	for i := len(g.marks) - 1; i >= 0; i-- {
		if g.marks[i].name != name {
			continue
		}
		from := g.marks[i].ord
		g.marks = g.marks[:i+1]
		if from < g.seen {
			g.discard = append(g.discard, span{from, g.seen})
		}
		n := len(g.buf)
		for n > 0 && g.buf[n-1].ord >= from {
			n--
		}
		clear(g.buf[n:])
		g.buf = g.buf[:n]
		return true
	}
	return false
}

// safeRows is how many rows at the front of buf no savepoint can discard.
func (g *group) safeRows() int {
	if g.replay != nil || len(g.marks) == 0 {
		return len(g.buf)
	}
	first := g.marks[0].ord
	n := 0
	for n < len(g.buf) && g.buf[n].ord < first {
		n++
	}
	return n
}

// take removes the first n rows of buf and returns the survivors to hand
// out (those delivered before a restart are skipped), with the index of
// the first one.
func (g *group) take(n int) ([]source.Row, int) {
	rows := make([]source.Row, 0, n)
	first := -1
	for _, r := range g.buf[:n] {
		if g.handed < g.skip {
			g.handed++
			continue
		}
		if first < 0 {
			first = g.handed
		}
		rows = append(rows, r.row)
		g.handed++
	}
	rest := copy(g.buf, g.buf[n:])
	clear(g.buf[rest:])
	g.buf = g.buf[:rest]
	if first < 0 {
		first = g.handed
	}
	return rows, first
}
