package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

// Standby instances (relay.ha): three relay processes with the same
// relay.name and the position in Kafka; the Kafka group lets one stream.
// The kill test SIGKILLs the active one again and again while rows are
// written, and measures how long the group takes to hand the pipeline
// to another; the partition test pauses the active one past the session
// timeout (SIGSTOP) and resumes it once another streams. A read_committed
// consumer must see every row once, in per-key order.

// haName is the relay.name (and pipeline) of the standby tests.
const haName = "ha"

// haSessionTimeout is the group session timeout in the tests: 6s, as
// short as kfake, like Kafka, accepts (group.min.session.timeout.ms);
// RELAYTEST_HA_SESSION_TIMEOUT=10s measures the default.
func haSessionTimeout(t testing.TB) time.Duration {
	if s := os.Getenv("RELAYTEST_HA_SESSION_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 6*time.Second {
			t.Fatalf("RELAYTEST_HA_SESSION_TIMEOUT=%q: want a duration ≥ 6s", s)
		}
		return d
	}
	return 6 * time.Second
}

type haCluster struct {
	t       *testing.T
	bin     string
	cfgPath string
	dir     string
	env     []string
	slots   []*haSlot
	starts  int
}

type haSlot struct {
	addr string // its metrics endpoint
	c    *child
	gone bool // killed or exited, not restarted
}

func newHACluster(t *testing.T, tg crashTarget, broker string, n int) *haCluster {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(tg.yaml(broker, filepath.Join(dir, "unused.json"))), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &haCluster{t: t, bin: relayBinary(t), cfgPath: cfgPath, dir: dir,
		env: append(exactlyOnceEnv(haName), "OUTBOXRELAY_RELAY_HA_ENABLED=true",
			"OUTBOXRELAY_RELAY_HA_SESSION_TIMEOUT="+haSessionTimeout(t).String(), "OUTBOXRELAY_RELAY_HA_HEARTBEAT_INTERVAL=500ms")}
	for i := 0; i < n; i++ {
		h.slots = append(h.slots, &haSlot{addr: freeAddr(t)})
	}
	t.Cleanup(func() {
		for _, s := range h.slots {
			if s.c != nil {
				_ = s.c.cmd.Process.Signal(syscall.SIGCONT)
				_ = s.c.cmd.Process.Kill()
			}
		}
	})
	return h
}

// start (re)starts the instance of slot i.
func (h *haCluster) start(i int) {
	h.starts++
	s := h.slots[i]
	s.c = startChild(h.t, h.bin, h.cfgPath, "", filepath.Join(h.dir, fmt.Sprintf("relay-%d-%02d.log", i, h.starts)),
		append(h.env, "OUTBOXRELAY_METRICS_LISTEN="+s.addr)...)
	s.gone = false
}

// get fetches path from slot i's endpoint, quickly: a paused instance
// does not answer.
func (h *haCluster) get(i int, path string) (int, string) {
	c := http.Client{Timeout: 300 * time.Millisecond}
	resp, err := c.Get("http://" + h.slots[i].addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// active reports whether slot i says it streams the pipeline.
func (h *haCluster) active(i int) bool {
	if h.slots[i].gone || h.slots[i].c == nil {
		return false
	}
	code, body := h.get(i, "/metrics")
	if code != http.StatusOK {
		return false
	}
	v, ok := metricSum(body, `outboxrelay_active{pipeline="`+haName+`"}`)
	return ok && v == 1
}

// waitActive waits until an instance other than except streams, and
// returns it and how long that took.
func (h *haCluster) waitActive(except int, within time.Duration) (int, time.Duration) {
	h.t.Helper()
	start := time.Now()
	for {
		for i := range h.slots {
			if i != except && h.active(i) {
				return i, time.Since(start)
			}
		}
		if time.Since(start) > within {
			h.t.Fatalf("no instance (but %d) streams the pipeline after %s; logs:\n%s", except, within, h.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTakeover waits until slot i's log says it took the pipeline over
// for why, and its outboxrelay_ha_takeovers_total counts it.
func (h *haCluster) waitTakeover(i int, why ...string) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		logged := false
		for _, line := range strings.Split(readFile(h.slots[i].c.log), "\n") {
			for _, w := range why {
				logged = logged || strings.Contains(line, "this instance took over the pipeline") && strings.Contains(line, w)
			}
		}
		_, body := h.get(i, "/metrics")
		n, _ := metricSum(body, `outboxrelay_ha_takeovers_total{pipeline="`+haName+`"}`)
		if logged && n >= 1 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("instance %d: logged a takeover because %q: %v, outboxrelay_ha_takeovers_total %v; log:\n%s", i, why, logged, n, readFile(h.slots[i].c.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *haCluster) logs() string {
	paths, _ := filepath.Glob(filepath.Join(h.dir, "relay-*.log"))
	var b strings.Builder
	for _, p := range paths {
		l, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "--- %s\n%s", filepath.Base(p), l)
	}
	return b.String()
}

// stopAll sends SIGTERM to every live instance; each must exit 0.
func (h *haCluster) stopAll() {
	h.t.Helper()
	for i, s := range h.slots {
		if s.gone || s.c == nil {
			continue
		}
		_ = s.c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.c.done:
			if err != nil {
				l, _ := os.ReadFile(s.c.log)
				h.t.Errorf("instance %d exited with %v after SIGTERM; log:\n%s", i, err, l)
			}
		case <-time.After(60 * time.Second):
			h.t.Errorf("instance %d did not exit within 60s of SIGTERM", i)
		}
		s.gone = true
	}
}

// haRun is one standby test's database, broker and workload.
type haRun struct {
	t        *testing.T
	tg       crashTarget
	broker   *devbroker.Broker
	h        *haCluster
	position func() string
	p        plan
	writing  chan struct{} // closed once the writer is done
}

func startHARun(t *testing.T, tg crashTarget, instances int, seed int64, spread time.Duration) *haRun {
	broker, err := devbroker.Start(devbroker.Options{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	store := kafkaPositions(t, broker.Addr(), haName)
	if tg.prepare != nil {
		tg.prepare(t)
	}
	r := &haRun{t: t, tg: tg, broker: broker, h: newHACluster(t, tg, broker.Addr(), instances),
		position: func() string { return loadPosition(t, store) }, writing: make(chan struct{})}
	for i := 0; i < instances; i++ {
		r.h.start(i)
	}
	a, took := r.h.waitActive(-1, 90*time.Second)
	t.Logf("instance %d streams first (%s after start)", a, took.Round(time.Millisecond))
	r.waitPosition("the first holder stores its start", func(p string) bool { return p != "" })
	// The standbys are ready (/readyz 200) and say they stand by.
	for i := range r.h.slots {
		if i == a {
			continue
		}
		waitStatus(t, "http://"+r.h.slots[i].addr+"/readyz", http.StatusOK, 30*time.Second)
		if r.h.active(i) {
			t.Fatalf("instance %d streams too", i)
		}
	}
	// The crash harness's workload: mixed sizes, rollbacks, savepoints,
	// XA, several tables (and mixed engines on MariaDB), spread over the
	// test.
	r.p = interleave(makePlan(seed, "h", 240, 4800, 30, 10), makeGrammarPlan(seed+1, "hg", tg.scope, 100, tg.nonTx))
	d := tg.dialect(t)
	pace := spread / time.Duration(len(r.p.Txns))
	go func() {
		defer close(r.writing)
		for i := range r.p.Txns {
			r.p.write(t, d, i, i+1)
			time.Sleep(pace)
		}
	}()
	return r
}

func (r *haRun) writerDone() bool {
	select {
	case <-r.writing:
		return true
	default:
		return false
	}
}

func (r *haRun) waitPosition(what string, ok func(string) bool) string {
	r.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if p := r.position(); ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: position %q after 90s; logs:\n%s", what, r.position(), r.h.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moved waits until the position moves past from (or the writer is done
// and there is nothing more to move to) and returns how long it took.
func (r *haRun) moved(what, from string) time.Duration {
	start := time.Now()
	r.waitPosition(what, func(p string) bool {
		if p != from {
			return true
		}
		if !r.writerDone() {
			return false
		}
		c, err := r.tg.compare(p, r.tg.serverPosition(r.t))
		return err == nil && c >= 0
	})
	return time.Since(start)
}

// finish lets the writer end, waits until the position covers every
// write, stops every instance and checks what a read_committed consumer
// sees: 0 lost, 0 unexpected, 0 duplicates, 0 per-key order violations.
func (r *haRun) finish(label string) crashReport {
	t := r.t
	<-r.writing
	end := r.tg.serverPosition(t)
	r.waitPosition("the pipeline reaches the end of the writes", func(s string) bool {
		c, err := r.tg.compare(s, end)
		return s != "" && err == nil && c >= 0
	})
	r.h.stopAll()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{r.broker.Addr()}, `outbox\.event\..*`, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep := analyzeCrash(t, recs, r.p.Want, nil, map[string]bool{}, r.tg.compare)
	t.Logf("%s: %d records, %d distinct, lost %d, unexpected %d, duplicates %d, per-key order violations %d",
		label, rep.records, rep.distinct, rep.lost, rep.unexpected, rep.duplicates, rep.orderViolations)
	if rep.lost != 0 || rep.unexpected != 0 || rep.duplicates != 0 || rep.orderViolations != 0 {
		t.Errorf("%s: want 0 lost, 0 unexpected, 0 duplicates, 0 order violations", label)
	}
	return rep
}

// haKills is how many times the kill test SIGKILLs the active instance.
const haKills = 10

func runHAKill(t *testing.T, tg crashTarget) {
	session := haSessionTimeout(t)
	r := startHARun(t, tg, 3, 41, haKills*(session+time.Second))
	h := r.h
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	var takeovers, commits []time.Duration
	var slow []string
	for k := 0; k < haKills; k++ {
		a, _ := h.waitActive(-1, 60*time.Second)
		// It streams under load: its commits move the position.
		r.moved(fmt.Sprintf("kill %d: instance %d commits", k, a), r.position())
		time.Sleep(time.Duration(200+rng.Intn(1300)) * time.Millisecond)
		at := r.position()
		_ = h.slots[a].c.cmd.Process.Signal(syscall.SIGKILL)
		<-h.slots[a].c.done
		killed := time.Now()
		h.slots[a].gone = true
		b, took := h.waitActive(a, 60*time.Second)
		commit := time.Since(killed) + r.moved(fmt.Sprintf("kill %d: instance %d commits after the takeover", k, b), at)
		takeovers, commits = append(takeovers, took), append(commits, commit)
		if took > session+6*time.Second {
			slow = append(slow, fmt.Sprintf("kill %d took %s; logs:\n%s", k, took, h.logs()))
			if d := os.Getenv("RELAYTEST_HA_KEEP"); d != "" {
				_ = exec.Command("cp", "-r", h.dir, d).Run()
			}
		}
		t.Logf("kill %d: instance %d SIGKILLed at %s; instance %d streams after %s, commits after %s",
			k, a, at, b, took.Round(time.Millisecond), commit.Round(time.Millisecond))
		// The new holder says why it took over, and counts it. The
		// restart of the instance killed before makes the group rebalance
		// (eager: the holder releases and takes the pipeline again); a
		// kill that lands in that round finds the pipeline released, and
		// the log rightly says so.
		h.waitTakeover(b, "left the group without releasing the pipeline", "the previous holder released it (rebalance)")
		// A platform restarts it: it joins as a standby.
		h.start(a)
	}
	// SIGTERM: the active instance drains, commits and leaves the group
	// at once.
	a, _ := h.waitActive(-1, 60*time.Second)
	_ = h.slots[a].c.cmd.Process.Signal(syscall.SIGTERM)
	termed := time.Now()
	b, termTook := h.waitActive(a, 30*time.Second)
	if err := <-h.slots[a].c.done; err != nil {
		t.Errorf("instance %d exited with %v after SIGTERM", a, err)
	}
	h.slots[a].gone = true
	t.Logf("SIGTERM: instance %d stopped; instance %d streams after %s", a, b, time.Since(termed).Round(time.Millisecond))
	h.waitTakeover(b, "the previous holder released it (shutdown)")
	r.finish("standby kill test")
	med, max := durStats(takeovers)
	cmed, cmax := durStats(commits)
	t.Logf("takeover after SIGKILL (relay.ha.session_timeout %s, heartbeat 500ms), %d kills: streaming again median %s, max %s; first commit median %s, max %s; after SIGTERM %s",
		session, len(takeovers), med, max, cmed, cmax, termTook.Round(time.Millisecond))
	if max > session+6*time.Second {
		t.Errorf("a takeover after SIGKILL took %s, want ≤ session timeout + 6s:\n%s", max, strings.Join(slow, "\n"))
	}
	if termTook > 3*time.Second {
		t.Errorf("takeover after SIGTERM took %s, want ≤ 3s", termTook)
	}
}

func durStats(ds []time.Duration) (median, max time.Duration) {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond)
}

// runHAPartition pauses the active instance past the session timeout.
// Another takes over; resumed, the old one must stop streaming — exit
// fenced (3) or step down to a standby — and make nothing visible.
func runHAPartition(t *testing.T, tg crashTarget) {
	r := startHARun(t, tg, 3, 43, 30*time.Second)
	h := r.h
	a, _ := h.waitActive(-1, 60*time.Second)
	r.moved("the first holder commits", r.position())
	time.Sleep(300 * time.Millisecond)
	if err := h.slots[a].c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := r.position()
	b, took := h.waitActive(a, 60*time.Second)
	t.Logf("paused instance %d at %s; instance %d streams after %s", a, paused, b, took.Round(time.Millisecond))
	r.moved("the new holder commits", paused)
	// Stops it logged before (a standby joining restarts the holder's
	// pipeline in the rebalance round): stepping down is one more.
	stopsBefore := strings.Count(readFile(h.slots[a].c.log), "stopped streaming the pipeline")
	if err := h.slots[a].c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	outcome := ""
	deadline := time.Now().Add(30 * time.Second)
	for outcome == "" {
		select {
		case err := <-h.slots[a].c.done:
			h.slots[a].gone = true
			l, _ := os.ReadFile(h.slots[a].c.log)
			if exitCode(err) != 3 || !strings.Contains(string(l), "fenced") {
				t.Fatalf("the resumed ex-holder exited with %v, want 3 (fenced); log:\n%s", err, l)
			}
			outcome = "exited 3 (fenced)"
		case <-time.After(100 * time.Millisecond):
			if code, _ := h.get(a, "/readyz"); code != 0 && !h.active(a) && strings.Count(readFile(h.slots[a].c.log), "stopped streaming the pipeline") > stopsBefore {
				outcome = "stepped down to a standby"
			}
		}
		if outcome == "" && time.Now().After(deadline) {
			t.Fatalf("the resumed ex-holder neither exited nor stepped down within 30s; logs:\n%s", h.logs())
		}
	}
	t.Logf("the resumed ex-holder %s", outcome)
	if !h.active(b) {
		t.Errorf("instance %d no longer streams after the ex-holder came back", b)
	}
	r.finish("standby partition test")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
