package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// Many pipelines (pipelines:): four databases on one MariaDB (or
// Postgres) server, each its own pipeline (its own source with its own
// server_id or slot, position key and transactional id), spread by the standby group over two relay
// processes. Killing one moves its pipelines to the other; restarting it
// moves some back. A read_committed consumer must see every row once,
// in per-key order, and no pipeline may be seen active on both instances
// at once.

const pipelineCount = 4

func pipelineName(i int) string { return fmt.Sprintf("shard%d", i) }

// pipelineDB is one pipeline's database in the test: its source section
// (indented as an item of pipelines), a writer, and its position's order.
type pipelineDB struct {
	source  string
	dialect func(t testing.TB) dialect
}

// pipelinesTarget is the test's databases on one server (one log).
type pipelinesTarget struct {
	dbs            []pipelineDB
	serverPosition func(t testing.TB) string
	compare        func(a, b string) (int, error)
}

// pipelinesConfig is the YAML of one relay with one pipeline per
// database; relay.name, exactly-once and relay.ha come from the env.
func pipelinesConfig(tg pipelinesTarget, broker string, dir string) string {
	var b strings.Builder
	b.WriteString("pipelines:\n")
	for i, db := range tg.dbs {
		fmt.Fprintf(&b, "  - name: %s\n    source:\n%s", pipelineName(i), db.source)
	}
	b.WriteString(relaySections(broker, filepath.Join(dir, "unused.json")))
	return b.String()
}

func pipelinesMySQL(t *testing.T) pipelinesTarget {
	var tg pipelinesTarget
	for i := 0; i < pipelineCount; i++ {
		db := testdb.MariaDB(t)
		db.Exec(t, mysqlSchema, mysqlNoise)
		tg.dbs = append(tg.dbs, pipelineDB{
			source: fmt.Sprintf(`      type: mysql
      mysql:
        addr: %s
        user: %s
        password: %q
        server_id: %d
        tables: [%s.outbox]
        start: current
        heartbeat: 1s
`, db.Addr, db.User, db.Password, testdb.ServerID(), db.DB),
			dialect: func(t testing.TB) dialect { return mysqlGrammarDialect(t, db) },
		})
		if i == 0 {
			tg.serverPosition = db.Position // one server: one binlog for every database
		}
	}
	tg.compare = mysqlCompare
	return tg
}

func pipelinesPostgres(t *testing.T) pipelinesTarget {
	var tg pipelinesTarget
	for i := 0; i < pipelineCount; i++ {
		db := setupPostgres(t)
		db.Exec(t,
			"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
			"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
		tg.dbs = append(tg.dbs, pipelineDB{
			source: fmt.Sprintf(`      type: postgres
      postgres:
        dsn: %q
        slot: %s
        publication: %s
        tables: [public.outbox]
        status_interval: 1s
`, db.DSN, db.Slot, db.Publication),
			dialect: func(t testing.TB) dialect { return postgresGrammarDialect(t, db) },
		})
		if i == 0 {
			// One server: one WAL for every database.
			tg.serverPosition = func(t testing.TB) string { return db.QueryString(t, "SELECT pg_current_wal_lsn()::text") }
		}
	}
	tg.compare = postgresCompare
	return tg
}

// holders reads which pipelines each live instance says it streams.
func (h *haCluster) holders() [][]bool {
	out := make([][]bool, len(h.slots))
	for i, s := range h.slots {
		out[i] = make([]bool, pipelineCount)
		if s.gone || s.c == nil {
			continue
		}
		code, body := h.get(i, "/metrics")
		if code != http.StatusOK {
			continue
		}
		for p := range out[i] {
			v, ok := metricSum(body, `outboxrelay_active{pipeline="`+pipelineName(p)+`"}`)
			out[i][p] = ok && v == 1
		}
	}
	return out
}

// waitSpread waits until every pipeline is streamed by exactly one
// instance and ok(counts per instance) holds; it returns the holders.
func (h *haCluster) waitSpread(what string, within time.Duration, ok func(counts []int) bool) [][]bool {
	h.t.Helper()
	start := time.Now()
	for {
		hs := h.holders()
		counts := make([]int, len(hs))
		each := true
		for p := 0; p < pipelineCount; p++ {
			n := 0
			for i := range hs {
				if hs[i][p] {
					n++
					counts[i]++
				}
			}
			each = each && n == 1
		}
		if each && ok(counts) {
			h.t.Logf("%s after %s: pipelines per instance %v", what, time.Since(start).Round(time.Millisecond), counts)
			return hs
		}
		if time.Since(start) > within {
			h.t.Fatalf("%s: not within %s (pipelines per instance %v, holders %v); logs:\n%s", what, within, counts, hs, h.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownAggregates gives p's aggregates ids of their own (prefix), so that
// the keys of two pipelines' plans, whose relative order nothing defines,
// never meet.
func ownAggregates(p plan, prefix string) plan {
	for i := range p.Want {
		p.Want[i].AggID = prefix + p.Want[i].AggID
	}
	for i := range p.Txns {
		for j := range p.Txns[i].Events {
			p.Txns[i].Events[j].AggID = prefix + p.Txns[i].Events[j].AggID
		}
	}
	return p
}

// TestIntegrationHAPipelinesMySQL: 4 pipelines over 2 instances under
// load; SIGKILL one: the other takes its pipelines over; restarted, it
// gets some back; 0 lost, 0 duplicates, per-key order kept.
func TestIntegrationHAPipelinesMySQL(t *testing.T) {
	t.Parallel()
	runHAPipelines(t, pipelinesMySQL(t))
}

// TestIntegrationHAPipelinesPostgres: the same with 4 Postgres
// databases, each its own slot.
func TestIntegrationHAPipelinesPostgres(t *testing.T) {
	t.Parallel()
	runHAPipelines(t, pipelinesPostgres(t))
}

func runHAPipelines(t *testing.T, tg pipelinesTarget) {
	broker, err := devbroker.Start(devbroker.Options{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	yaml := pipelinesConfig(tg, broker.Addr(), t.TempDir())
	h := newHACluster(t, crashTarget{yaml: func(string, string) string { return yaml }}, broker.Addr(), 2)
	h.start(0)
	h.start(1)
	both := func(c []int) bool { return c[0] > 0 && c[1] > 0 }
	h.waitSpread("spread over both instances", 60*time.Second, both)

	// Watch: a pipeline active on both instances at once is a failure
	// (the read of the first is repeated after the second said it
	// streams, so a move between the two reads does not count).
	stopWatch := make(chan struct{})
	var watchWG sync.WaitGroup
	var overlaps []string
	var slotsMu sync.Mutex // the watcher reads h.slots, the test restarts them
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(100 * time.Millisecond):
			}
			slotsMu.Lock()
			hs := h.holders()
			for p := 0; p < pipelineCount; p++ {
				if hs[0][p] && hs[1][p] {
					if again := h.holders(); again[0][p] && again[1][p] {
						overlaps = append(overlaps, fmt.Sprintf("%s at %s", pipelineName(p), time.Now().Format(time.StampMilli)))
					}
				}
			}
			slotsMu.Unlock()
		}
	}()

	// One writer per database, spread over ~30s.
	var want []event
	var plans []plan
	for i := range tg.dbs {
		p := ownAggregates(makePlan(int64(50+i), fmt.Sprintf("m%d", i), 150, 1500, 12, 6), fmt.Sprintf("m%d-", i))
		plans = append(plans, p)
		want = append(want, p.Want...)
	}
	var writers sync.WaitGroup
	for i, db := range tg.dbs {
		writers.Add(1)
		go func(p plan, d dialect) {
			defer writers.Done()
			pace := 30 * time.Second / time.Duration(len(p.Txns))
			for j := range p.Txns {
				p.write(t, d, j, j+1)
				time.Sleep(pace)
			}
		}(plans[i], db.dialect(t))
	}

	time.Sleep(8 * time.Second)
	victim := 0
	hs := h.holders()
	var moved []string
	for p := 0; p < pipelineCount; p++ {
		if hs[victim][p] {
			moved = append(moved, pipelineName(p))
		}
	}
	if len(moved) == 0 {
		t.Fatalf("instance %d streams nothing to move", victim)
	}
	_ = h.slots[victim].c.cmd.Process.Signal(syscall.SIGKILL)
	<-h.slots[victim].c.done
	slotsMu.Lock()
	h.slots[victim].gone = true
	slotsMu.Unlock()
	killed := time.Now()
	h.waitSpread(fmt.Sprintf("instance %d SIGKILLed (it streamed %v): instance 1 streams all", victim, moved), 30*time.Second,
		func(c []int) bool { return c[1] == pipelineCount })
	took := time.Since(killed)
	if lim := haSessionTimeout(t) + 6*time.Second; took > lim {
		t.Errorf("the takeover took %s, want ≤ %s", took, lim)
	}
	// The survivor says, per pipeline, that it took it over from one that
	// vanished (once it has read the lease records: up to 5s after it
	// started streaming).
	for _, name := range moved {
		deadline := time.Now().Add(15 * time.Second)
		for found := false; !found; time.Sleep(100 * time.Millisecond) {
			log := readFile(h.slots[1].c.log)
			for _, line := range strings.Split(log, "\n") {
				found = found || strings.Contains(line, `"pipeline":"`+name+`"`) && strings.Contains(line, "this instance took over the pipeline") &&
					strings.Contains(line, "left the group without releasing the pipeline")
			}
			if !found && time.Now().After(deadline) {
				t.Fatalf("instance 1 did not log taking %s over from the killed instance; log:\n%s", name, log)
			}
		}
	}
	// Restarted, it joins and the group moves pipelines back to it.
	slotsMu.Lock()
	h.start(victim)
	slotsMu.Unlock()
	h.waitSpread("instance 0 restarted", 60*time.Second, both)

	writers.Wait()
	end := tg.serverPosition(t)
	for i := range tg.dbs {
		store := kafkaPositions(t, broker.Addr(), haName+"."+pipelineName(i))
		deadline := time.Now().Add(60 * time.Second)
		for {
			p := loadPosition(t, store)
			if c, err := tg.compare(p, end); p != "" && err == nil && c >= 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pipeline %s: position %q, want ≥ %s; logs:\n%s", pipelineName(i), p, end, h.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	close(stopWatch)
	watchWG.Wait()
	h.stopAll()
	if len(overlaps) > 0 {
		t.Errorf("pipelines active on both instances at once: %v", overlaps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `outbox\.event\..*`, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep := analyzeCrash(t, recs, want, nil, map[string]bool{}, tg.compare)
	t.Logf("4 pipelines over 2 instances: %d records, %d distinct, lost %d, unexpected %d, duplicates %d, per-key order violations %d; takeover after SIGKILL %s",
		rep.records, rep.distinct, rep.lost, rep.unexpected, rep.duplicates, rep.orderViolations, took.Round(time.Millisecond))
	if rep.lost != 0 || rep.unexpected != 0 || rep.duplicates != 0 || rep.orderViolations != 0 {
		t.Errorf("want 0 lost, 0 unexpected, 0 duplicates, 0 order violations")
	}
}
