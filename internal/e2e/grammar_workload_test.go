package e2e

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// The log's grammar as a workload: transactions with savepoints (released,
// rolled back, nested), XA / two-phase transactions (committed at once,
// committed later from another session, rolled back after the prepare,
// committed in one phase), transactions over several tables, and (MariaDB)
// transactions that also change a non-transactional table, which makes
// the server write ROLLBACK TO and the rolled-back rows into the binlog.
// Each shape would break a relay that ends a transaction anywhere but at
// its real end or publishes a row that never committed.

type stepKind int

const (
	stInsert     stepKind = iota // insert events
	stSavepoint                  // SAVEPOINT name
	stRollbackTo                 // ROLLBACK TO SAVEPOINT name: the events since are gone
	stRelease                    // RELEASE SAVEPOINT name
	stNoise                      // n rows into the (transactional) noise table
	stNoiseNonTx                 // n rows into a non-transactional table (MariaDB MyISAM)
)

type step struct {
	kind   stepKind
	name   string
	events []event
	n      int
	multi  bool // stInsert: multi-row INSERTs of up to 500 rows
}

type endKind int

const (
	endCommit           endKind = iota
	endRollback                 // the whole transaction rolled back
	endXACommit                 // XA/2PC: prepare, then commit at once
	endXARollback               // prepare, then roll back: nothing may arrive
	endXAOnePhase               // XA COMMIT … ONE PHASE (Postgres: a plain commit)
	endXAPrepare                // prepare only, on a session of its own; a later txn commits it
	endCommitPrepared           // XA COMMIT (COMMIT PREPARED) of an earlier endXAPrepare
	endRollbackPrepared         // XA ROLLBACK (ROLLBACK PREPARED) of an earlier endXAPrepare
)

// grammarDialect is what writing the grammar workload needs beyond dialect.
type grammarDialect struct {
	dialect
	// prepared runs fn on a session of its own and prepares the
	// transaction under gid, then lets the session go: the prepared
	// transaction outlives it.
	prepared func(t testing.TB, gid string, fn func(d dialect))
	xaStart  func(gid string) []string // statements that open an XA/2PC transaction
	xaEnd    func(gid string) []string // … that end its first phase (prepare)
	// commitPrepared / rollbackPrepared / onePhase finish one.
	commitPrepared, rollbackPrepared func(gid string) string
	onePhase                         func(gid string) []string
	nonTx                            bool // a non-transactional noise table exists (nonTxNoise)
}

const nonTxNoiseTable = "noise_nontx"

// makeGrammarPlan makes n transactions of the shapes above over their own
// aggregates (prefix-agg-N). A few hold a savepoint before a large part.
// XA transaction ids start with scope (the test's database): they are
// global on the server, which tests share.
func makeGrammarPlan(seed int64, prefix, scope string, n int, nonTx bool) plan {
	rng := rand.New(rand.NewSource(seed))
	seq := map[string]int{}
	next := 0
	mk := func() event {
		agg := fmt.Sprintf("%s-agg-%d", prefix, rng.Intn(12))
		e := event{ID: fmt.Sprintf("%s-%06d", prefix, next), AggType: "order", AggID: agg, Type: "Grammar"}
		next++
		e.Payload = fmt.Sprintf(`{"id":%q,"n":%d}`, e.ID, rng.Intn(1000))
		return e
	}
	events := func(k int) []event {
		out := make([]event, k)
		for i := range out {
			out[i] = mk()
		}
		return out
	}
	var p plan
	// commit assigns sequence numbers to a transaction's surviving
	// events, in commit order, and adds them to what must arrive.
	commit := func(steps []step) {
		gone := map[string]bool{}
		var marks []struct {
			name string
			at   int
		}
		var kept []event
		for _, s := range steps {
			switch s.kind {
			case stInsert:
				kept = append(kept, s.events...)
			case stSavepoint:
				marks = append(marks, struct {
					name string
					at   int
				}{s.name, len(kept)})
			case stRollbackTo:
				for i := len(marks) - 1; i >= 0; i-- {
					if marks[i].name == s.name {
						for _, e := range kept[marks[i].at:] {
							gone[e.ID] = true
						}
						kept = kept[:marks[i].at]
						marks = marks[:i+1]
						break
					}
				}
			}
		}
		for _, e := range kept {
			seq[e.AggID]++
			e.Seq = seq[e.AggID]
			p.Want = append(p.Want, e)
		}
	}
	var delayed []struct {
		gid   string
		steps []step
		due   int
	}
	for i := 0; i < n; i++ {
		var tx txn
		gid := fmt.Sprintf("%s-%s-xa-%d", scope, prefix, i)
		switch i % 12 {
		case 0: // released savepoint before a large part (the shape)
			size := 300
			if i%48 == 0 {
				size = 2600 // more than a piece: read to the end, then again
			}
			tx.Steps = []step{{kind: stInsert, events: events(2)}, {kind: stSavepoint, name: "s"},
				{kind: stInsert, events: events(size)}, {kind: stRelease, name: "s"}}
		case 1: // rolled back to a savepoint
			tx.Steps = []step{{kind: stInsert, events: events(1)}, {kind: stSavepoint, name: "a"},
				{kind: stInsert, events: events(2)}, {kind: stRollbackTo, name: "a"}, {kind: stInsert, events: events(1)}}
		case 2: // nested
			tx.Steps = []step{{kind: stSavepoint, name: "sp_outer"}, {kind: stInsert, events: events(1)},
				{kind: stSavepoint, name: "sp_inner"}, {kind: stInsert, events: events(2)}, {kind: stRollbackTo, name: "sp_inner"},
				{kind: stInsert, events: events(1)}, {kind: stSavepoint, name: "sp_inner"}, {kind: stInsert, events: events(1)},
				{kind: stRelease, name: "sp_outer"}, {kind: stInsert, events: events(1)}}
		case 3: // several tables
			tx.Steps = []step{{kind: stNoise, n: 2}, {kind: stInsert, events: events(2)}, {kind: stNoise, n: 1}, {kind: stInsert, events: events(1)}}
		case 4:
			tx.Steps, tx.End = []step{{kind: stInsert, events: events(2)}}, endXACommit
		case 5:
			tx.Steps, tx.End = []step{{kind: stInsert, events: events(2)}}, endXARollback
		case 6:
			tx.Steps, tx.End = []step{{kind: stInsert, events: events(2)}}, endXAOnePhase
		case 7: // prepared now, committed a few transactions later
			tx.Steps, tx.End = []step{{kind: stInsert, events: events(3)}}, endXAPrepare
			delayed = append(delayed, struct {
				gid   string
				steps []step
				due   int
			}{gid, tx.Steps, i + 3})
		case 8: // mixed engines: the binlog holds ROLLBACK TO and the rows it discards
			if nonTx {
				tx.Steps = []step{{kind: stInsert, events: events(1)}, {kind: stNoiseNonTx, n: 1}, {kind: stSavepoint, name: "m"},
					{kind: stInsert, events: events(2)}, {kind: stNoiseNonTx, n: 1}, {kind: stRollbackTo, name: "m"}, {kind: stInsert, events: events(1)}}
			} else {
				tx.Steps = []step{{kind: stInsert, events: events(1)}, {kind: stSavepoint, name: "m"},
					{kind: stInsert, events: events(2)}, {kind: stRollbackTo, name: "m"}, {kind: stInsert, events: events(1)}}
			}
		case 9: // rolled back whole, with a savepoint inside
			tx.Steps, tx.End = []step{{kind: stInsert, events: events(1)}, {kind: stSavepoint, name: "r"}, {kind: stInsert, events: events(1)}}, endRollback
		default:
			tx.Steps = []step{{kind: stInsert, events: events(1 + rng.Intn(4))}}
		}
		tx.GID = gid
		switch tx.End {
		case endCommit, endXACommit, endXAOnePhase:
			commit(tx.Steps)
		}
		p.Txns = append(p.Txns, tx)
		for j := 0; j < len(delayed); j++ {
			if delayed[j].due == i {
				p.Txns = append(p.Txns, txn{End: endCommitPrepared, GID: delayed[j].gid})
				commit(delayed[j].steps)
				delayed = append(delayed[:j], delayed[j+1:]...)
				j--
			}
		}
	}
	for _, d := range delayed {
		p.Txns = append(p.Txns, txn{End: endCommitPrepared, GID: d.gid})
		commit(d.steps)
	}
	return p
}

// interleave merges the transactions of a and b (spreading b evenly over
// a), keeping each one's order; their aggregates must be disjoint.
func interleave(a, b plan) plan {
	out := plan{Want: append(append([]event{}, a.Want...), b.Want...)}
	j := 0
	for i, tx := range a.Txns {
		out.Txns = append(out.Txns, tx)
		for ; j < len(b.Txns) && j*len(a.Txns) <= i*len(b.Txns); j++ {
			out.Txns = append(out.Txns, b.Txns[j])
		}
	}
	out.Txns = append(out.Txns, b.Txns[j:]...)
	return out
}

// writeGrammar writes one transaction with steps.
func writeGrammar(t testing.TB, g *grammarDialect, tx txn) {
	t.Helper()
	must := func(d dialect, q string, args ...any) {
		t.Helper()
		if err := d.exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	body := func(d dialect) {
		for _, s := range tx.Steps {
			switch s.kind {
			case stInsert:
				per := 1
				if s.multi {
					per = 500
				}
				for start := 0; start < len(s.events); start += per {
					var vals []string
					var args []any
					for _, e := range s.events[start:min(start+per, len(s.events))] {
						n := len(args)
						vals = append(vals, fmt.Sprintf("(%s,%s,%s,%s,%s)", d.placeholder(n+1), d.placeholder(n+2), d.placeholder(n+3), d.placeholder(n+4), d.placeholder(n+5)))
						args = append(args, e.ID, e.AggType, e.AggID, e.Type, e.Payload)
					}
					must(d, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES "+strings.Join(vals, ","), args...)
				}
			case stSavepoint:
				must(d, "SAVEPOINT "+s.name)
			case stRollbackTo:
				must(d, "ROLLBACK TO SAVEPOINT "+s.name)
			case stRelease:
				must(d, "RELEASE SAVEPOINT "+s.name)
			case stNoise:
				for range s.n {
					must(d, d.noiseSQL, "grammar")
				}
			case stNoiseNonTx:
				for range s.n {
					must(d, "INSERT INTO "+nonTxNoiseTable+" (note) VALUES ("+d.placeholder(1)+")", "grammar")
				}
			}
		}
	}
	d := g.dialect
	run := func(qs []string) {
		for _, q := range qs {
			must(d, q)
		}
	}
	switch tx.End {
	case endCommit, endRollback:
		must(d, "BEGIN")
		body(d)
		if tx.End == endRollback {
			must(d, "ROLLBACK")
		} else {
			must(d, "COMMIT")
		}
	case endXACommit, endXARollback:
		run(g.xaStart(tx.GID))
		body(d)
		run(g.xaEnd(tx.GID))
		if tx.End == endXACommit {
			must(d, g.commitPrepared(tx.GID))
		} else {
			must(d, g.rollbackPrepared(tx.GID))
		}
	case endXAOnePhase:
		run(g.xaStart(tx.GID))
		body(d)
		run(g.onePhase(tx.GID))
	case endXAPrepare:
		g.prepared(t, tx.GID, body)
	case endCommitPrepared:
		must(d, g.commitPrepared(tx.GID))
	case endRollbackPrepared:
		must(d, g.rollbackPrepared(tx.GID))
	}
}

// mysqlGrammar is the MariaDB/MySQL form: XA statements; a prepared XA
// transaction survives its session's disconnect (MariaDB ≥ 10.5, MySQL ≥ 5.7).
func mysqlGrammar(d dialect, fresh func(t testing.TB) (dialect, func())) *grammarDialect {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	g := &grammarDialect{
		dialect:          d,
		xaStart:          func(gid string) []string { return []string{"XA START " + q(gid)} },
		xaEnd:            func(gid string) []string { return []string{"XA END " + q(gid), "XA PREPARE " + q(gid)} },
		commitPrepared:   func(gid string) string { return "XA COMMIT " + q(gid) },
		rollbackPrepared: func(gid string) string { return "XA ROLLBACK " + q(gid) },
		onePhase:         func(gid string) []string { return []string{"XA END " + q(gid), "XA COMMIT " + q(gid) + " ONE PHASE"} },
		nonTx:            true,
	}
	g.prepared = func(t testing.TB, gid string, fn func(d dialect)) {
		t.Helper()
		other, done := fresh(t)
		defer done()
		for _, s := range g.xaStart(gid) {
			if err := other.exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		fn(other)
		for _, s := range g.xaEnd(gid) {
			if err := other.exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	return g
}

// postgresGrammar is the Postgres form: PREPARE TRANSACTION / COMMIT
// PREPARED (pgoutput v1 sends a prepared transaction when it commits).
func postgresGrammar(d dialect) *grammarDialect {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	g := &grammarDialect{
		dialect:          d,
		xaStart:          func(string) []string { return []string{"BEGIN"} },
		xaEnd:            func(gid string) []string { return []string{"PREPARE TRANSACTION " + q(gid)} },
		commitPrepared:   func(gid string) string { return "COMMIT PREPARED " + q(gid) },
		rollbackPrepared: func(gid string) string { return "ROLLBACK PREPARED " + q(gid) },
		onePhase:         func(string) []string { return []string{"COMMIT"} },
	}
	g.prepared = func(t testing.TB, gid string, fn func(d dialect)) {
		t.Helper()
		// A prepared transaction leaves its session at once.
		for _, s := range append(g.xaStart(gid), "") {
			if s == "" {
				fn(d)
				continue
			}
			if err := d.exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		for _, s := range g.xaEnd(gid) {
			if err := d.exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	return g
}
