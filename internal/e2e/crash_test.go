package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	ckafka "github.com/outboxrelay/outboxrelay/checkpoint/kafka"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
)

// The crash harness runs the real outboxrelay binary (built with the
// failpoints tag) as a child process while a writer inserts outbox rows with
// a per-aggregate sequence number, and kills it with SIGKILL over and over:
// at random moments and at chosen points (failpoints). After a final clean
// run it reads everything from Kafka and counts lost records, duplicates,
// per-key order violations, and duplicates of records from before the
// checkpoint the relay restarted from (which must never happen).

// crashTarget adapts the harness to one source.
type crashTarget struct {
	// yaml returns the relay's config for a broker and checkpoint path.
	yaml func(broker, cpPath string) string
	// conn returns a fresh dialect (connection) for the writer.
	dialect func(t testing.TB) dialect
	// serverPosition returns the end of the log now, in checkpoint form.
	serverPosition func(t testing.TB) string
	// compare orders two positions (checkpoint or header text).
	compare func(a, b string) (int, error)
	// prepare, if set, runs before anything is written (e.g. creating a
	// Postgres slot: a slot sees only WAL written after its creation).
	prepare func(t testing.TB)
	// nonTx: the database has a non-transactional table for the grammar
	// workload's mixed-engine transactions (MariaDB).
	nonTx bool
	// scope starts the grammar workload's XA transaction ids (the test's
	// database: they are global on the server).
	scope string
	// eos runs the relay with relay.delivery exactly-once and its
	// position in Kafka: then not even a duplicate is allowed.
	eos bool
}

// crashName is the relay.name of the harness's exactly-once relays.
const crashName = "crash"

// crashCycles is 50 by default; RELAYTEST_CRASH_CYCLES=200 for a long run.
func crashCycles(t testing.TB) int {
	if s := os.Getenv("RELAYTEST_CRASH_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 4 {
			t.Fatalf("RELAYTEST_CRASH_CYCLES=%q: want a number ≥ 4", s)
		}
		return n
	}
	return 50
}

// relayBinary builds cmd/outboxrelay with failpoints compiled in.
func relayBinary(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(t.TempDir(), "outboxrelay")
	cmd := exec.Command(goBin, "build", "-tags", "failpoints", "-o", out, "./cmd/outboxrelay")
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build relay: %v\n%s", err, b)
	}
	return out
}

type topicPartition struct {
	topic     string
	partition int32
}

// kill is what the harness knew right after one SIGKILL.
type kill struct {
	mode       string
	checkpoint string                   // durable checkpoint after the kill ("" if none yet)
	ends       map[topicPartition]int64 // next offset per partition after the kill
}

type child struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startChild(t testing.TB, bin, cfgPath, failpoints, logPath string, env ...string) *child {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = append(append(os.Environ(), "RELAY_FAILPOINTS="+failpoints), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() {
		c.done <- cmd.Wait()
		f.Close()
	}()
	return c
}

func endOffsets(t testing.TB, broker string) map[topicPartition]int64 {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	client, err := sarama.NewClient([]string{broker}, cfg)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer client.Close()
	topics, err := client.Topics()
	if err != nil {
		t.Fatal(err)
	}
	ends := map[topicPartition]int64{}
	for _, topic := range topics {
		if !strings.HasPrefix(topic, "outbox.event.") {
			continue
		}
		parts, err := client.Partitions(topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				t.Fatal(err)
			}
			ends[topicPartition{topic, p}] = off
		}
	}
	return ends
}

func readCheckpoint(t testing.TB, path string) string {
	t.Helper()
	s, _ := file.New(file.Config{Path: path})
	return loadPosition(t, s)
}

// loadPosition is the position s holds ("" if none).
func loadPosition(t testing.TB, s checkpoint.Store) string {
	t.Helper()
	cp, err := s.Load(context.Background())
	if errors.Is(err, checkpoint.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return cp.Position
}

// exactlyOnceEnv turns a test relay's configuration into an exactly-once
// one with its position in Kafka (the environment overrides the file).
func exactlyOnceEnv(name string) []string {
	return []string{"OUTBOXRELAY_RELAY_NAME=" + name, "OUTBOXRELAY_RELAY_DELIVERY=exactly-once", "OUTBOXRELAY_CHECKPOINT_TYPE=kafka"}
}

// kafkaPositions reads the position of relay name from the Kafka store,
// read_committed, as a starting relay does.
func kafkaPositions(t testing.TB, broker, name string) checkpoint.Store {
	t.Helper()
	s, err := ckafka.New(ckafka.Config{Topic: ckafka.DefaultTopic}, name, kafka.Config{Brokers: []string{broker}}, ckafka.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// bigTxn is one transaction of n rows (multi-row INSERTs) over its own
// aggregates, so their sequence numbers are independent of the rest, with
// a savepoint (released) after its first two rows: the rows after it could
// be rolled back until the transaction ends, so a reader cannot hand them
// out early and must not end the transaction at the savepoint.
func bigTxn(prefix string, n, aggregates int) txn {
	var events []event
	seq := map[string]int{}
	for i := 0; i < n; i++ {
		agg := fmt.Sprintf("big-%d", i%aggregates)
		seq[agg]++
		events = append(events, event{
			ID: fmt.Sprintf("%s-big-%06d", prefix, i), AggType: "bulk", AggID: agg, Type: "Imported", Seq: seq[agg],
			Payload: fmt.Sprintf(`{"row":%d,"seq":%d}`, i, seq[agg]),
		})
	}
	return txn{Events: events, Steps: []step{
		{kind: stInsert, events: events[:2]}, {kind: stSavepoint, name: "big"},
		{kind: stInsert, events: events[2:], multi: true}, {kind: stRelease, name: "big"},
	}}
}

type crashReport struct {
	kills, records, distinct, lost, unexpected, duplicates, orderViolations, staleDuplicates, killsInsideBig int
	final                                                                                                    string // the position stored after the final clean run
}

func runCrashHarness(t *testing.T, tg crashTarget) crashReport {
	cycles := crashCycles(t)
	bin := relayBinary(t)
	// Three nodes: partition leaders on different nodes acknowledge
	// independently, so acks arrive out of log order, as in a real cluster.
	broker, err := devbroker.Start(devbroker.Options{Brokers: 3, Partitions: 6})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	// One slow node: acknowledgements arrive out of log order, and a
	// checkpoint taken at the newest acknowledgement would cover records
	// still on their way — the harness must catch that.
	const slowAck = 200 * time.Millisecond
	broker.DelayProduce(0, slowAck)
	dir := t.TempDir()
	cpPath := filepath.Join(dir, "checkpoint.json")
	cfgPath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(cfgPath, []byte(tg.yaml(broker.Addr(), cpPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	readCheckpoint := func(t testing.TB, path string) string { return readCheckpoint(t, path) }
	if tg.eos {
		env = exactlyOnceEnv(crashName)
		store := kafkaPositions(t, broker.Addr(), crashName)
		readCheckpoint = func(t testing.TB, _ string) string { return loadPosition(t, store) }
	}

	if tg.prepare != nil {
		tg.prepare(t)
	}
	// The first start resolves the configured start (current) and stores
	// it before anything is written: every later run resumes from there.
	first := startChild(t, bin, cfgPath, "", filepath.Join(dir, "relay-first.log"), env...)
	for deadline := time.Now().Add(time.Minute); readCheckpoint(t, cpPath) == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(first.log)
			t.Fatalf("the first run stored no start position; log:\n%s", b)
		}
	}
	_ = first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.done
	// Mixed sizes, rollbacks, and the log's grammar: savepoints, XA /
	// two-phase transactions (some committed later from another session),
	// several tables, mixed engines.
	small := interleave(makePlan(11, "c", 400, 8000, 40, 10), makeGrammarPlan(12, "cg", tg.scope, 160, tg.nonTx))
	big := bigTxn("c", 50000, 16)
	want := append(append([]event{}, small.Want...), big.Events...)
	bigIDs := map[string]bool{}
	for _, e := range big.Events {
		bigIDs[e.ID] = true
	}

	// The writer spreads the small transactions over the cycles and writes
	// the big one a third of the way in — once a cycle armed to kill inside
	// it has started (bigGo), so that the kill cannot miss it however fast
	// the relay is. Fewer than 20,000 rows precede it.
	writerDone, bigReady, bigGo := make(chan struct{}), make(chan struct{}), make(chan struct{})
	d := tg.dialect(t)
	pace := time.Duration(cycles) * 700 * time.Millisecond / time.Duration(len(small.Txns))
	go func() {
		defer close(writerDone)
		third := len(small.Txns) / 3
		for i := range small.Txns {
			if i == third {
				close(bigReady)
				<-bigGo
				p := plan{Txns: []txn{big}}
				p.write(t, d, 0, 1)
			}
			small.write(t, d, i, i+1)
			time.Sleep(pace)
		}
	}()

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	modes := []string{"", "produce-before-ack=0.005", "ack-before-checkpoint=0.3", "after-checkpoint=0.3"}
	if tg.eos {
		// Between produce and commit, with the EndTxn on its way (during
		// the commit), and right after it.
		modes = []string{"", "produce-before-ack=0.005", "before-commit=0.3", "endtxn-sent=0.3", "after-commit=0.3"}
	}
	var kills []kill
	bigKills := []string{"produce-before-ack@20000", "produce-before-ack@40000"}
	bigArmed := false
	firedInsideBig := 0 // failpoint kills that certainly hit the big transaction
	for i := 0; i < cycles; i++ {
		mode := modes[i%len(modes)]
		wait := time.Duration(100+rng.Intn(1400)) * time.Millisecond
		if !bigArmed {
			select {
			case <-bigReady:
				bigArmed = true
			default:
			}
		}
		insideBig := false
		if bigArmed && len(bigKills) > 0 {
			// Kill inside the big transaction. Fewer than 8,000 small rows
			// precede it, so the 20,000th and 40,000th records a run sends
			// are necessarily its own.
			mode, bigKills = bigKills[0], bigKills[1:]
			wait, insideBig = time.Minute, true
		}
		c := startChild(t, bin, cfgPath, mode, filepath.Join(dir, fmt.Sprintf("relay-%03d.log", i)), env...)
		if insideBig && len(bigKills) == 1 {
			close(bigGo) // the first armed run is up: write the big transaction
		}
		select {
		case <-c.done: // a failpoint fired
		case <-time.After(wait):
			_ = c.cmd.Process.Signal(syscall.SIGKILL)
			<-c.done
		}
		if insideBig {
			if b, _ := os.ReadFile(c.log); strings.Contains(string(b), "failpoint: produce-before-ack") {
				firedInsideBig++
			}
		}
		// Requests the dead relay had already sent may still be written by
		// the slow node: wait them out before noting where this run ended.
		time.Sleep(slowAck + 50*time.Millisecond)
		kills = append(kills, kill{mode: mode, checkpoint: readCheckpoint(t, cpPath), ends: endOffsets(t, broker.Addr())})
	}
	if !bigArmed {
		close(bigGo) // too few cycles to reach it: let the writer finish
	}
	<-writerDone
	if len(bigKills) > 0 {
		t.Fatalf("the writer reached the big transaction too late for the kills inside it (%d cycles)", cycles)
	}

	// Final clean run: until the checkpoint reaches the end of the writes,
	// then SIGTERM, which must exit 0.
	end := tg.serverPosition(t)
	c := startChild(t, bin, cfgPath, "", filepath.Join(dir, "relay-final.log"), env...)
	deadline := time.Now().Add(3 * time.Minute)
	// Signals are handled once it has logged that it is starting.
	for b, _ := os.ReadFile(c.log); !strings.Contains(string(b), "outboxrelay starting"); b, _ = os.ReadFile(c.log) {
		if time.Now().After(deadline) {
			t.Fatalf("final run did not start; log:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		cp := readCheckpoint(t, cpPath)
		if cp != "" {
			if cmp, err := tg.compare(cp, end); err == nil && cmp >= 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("final run did not reach %s (checkpoint %s) in 3m; log:\n%s", end, cp, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		if err != nil {
			b, _ := os.ReadFile(c.log)
			t.Fatalf("relay exited with %v after SIGTERM; log:\n%s", err, b)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("relay did not exit within 60s of SIGTERM")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{broker.Addr()}, `outbox\.event\..*`, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep := analyzeCrash(t, recs, want, kills, bigIDs, tg.compare)
	rep.final = readCheckpoint(t, cpPath)
	// Kafka shows a kill inside the big transaction when some but not all
	// of its records reached it before the kill; the failpoint's own log
	// shows it even when none had (a loaded machine).
	rep.killsInsideBig = max(rep.killsInsideBig, firedInsideBig)
	mode := "at-least-once"
	if tg.eos {
		mode = "exactly-once"
	}
	t.Logf("crash harness (%s): %d kills, %d records, %d distinct, lost %d, unexpected %d, duplicates %d, per-key order violations %d, duplicates from before the restart checkpoint %d, kills inside the 50,000-row transaction %d",
		mode, rep.kills, rep.records, rep.distinct, rep.lost, rep.unexpected, rep.duplicates, rep.orderViolations, rep.staleDuplicates, rep.killsInsideBig)
	if rep.lost != 0 || rep.unexpected != 0 || rep.orderViolations != 0 || rep.staleDuplicates != 0 {
		t.Errorf("crash harness found lost %d, unexpected %d, order violations %d, stale duplicates %d; want 0 of each", rep.lost, rep.unexpected, rep.orderViolations, rep.staleDuplicates)
	}
	if tg.eos && rep.duplicates != 0 {
		t.Errorf("exactly-once: %d duplicates visible to a read_committed consumer, want 0", rep.duplicates)
	}
	if rep.kills != cycles {
		t.Errorf("%d kills, want %d", rep.kills, cycles)
	}
	if rep.killsInsideBig < 1 {
		t.Errorf("no kill landed inside the 50,000-row transaction")
	}
	return rep
}

// analyzeCrash assigns every record to the run that produced it (from the
// partition end offsets recorded at each kill) and checks the guarantees.
func analyzeCrash(t *testing.T, recs []devbroker.Record, want []event, kills []kill, bigIDs map[string]bool, compare func(a, b string) (int, error)) crashReport {
	rep := crashReport{kills: len(kills), records: len(recs)}
	byID := map[string]event{}
	for _, e := range want {
		byID[e.ID] = e
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Topic != recs[j].Topic {
			return recs[i].Topic < recs[j].Topic
		}
		if recs[i].Partition != recs[j].Partition {
			return recs[i].Partition < recs[j].Partition
		}
		return recs[i].Offset < recs[j].Offset
	})
	runOf := func(r devbroker.Record) int {
		tp := topicPartition{r.Topic, r.Partition}
		n := 0
		for _, k := range kills {
			if k.ends[tp] <= r.Offset {
				n++
			}
		}
		return n
	}
	seen := map[string]bool{}
	// Per topic+key, the sequence numbers of first copies must increase.
	// (They need not be consecutive: an aggregate's events spread over
	// topics by aggregatetype; losses are counted separately.)
	last := map[string]int{}
	bigPerRun := map[int]int{}
	report := 0
	for _, r := range recs {
		id, _ := r.Header(outbox.HeaderID)
		e, ok := byID[id]
		if !ok {
			rep.unexpected++
			if report++; report <= 10 {
				t.Errorf("unexpected record (rolled back, never committed, or foreign) %s", r)
			}
			continue
		}
		run := runOf(r)
		if bigIDs[id] {
			bigPerRun[run]++
		}
		if seen[id] {
			rep.duplicates++
			// A duplicate must come from a run that restarted at a
			// checkpoint at or before its transaction.
			if run > 0 && kills[run-1].checkpoint != "" {
				// Covered by the checkpoint: its transaction ends before
				// it, or the checkpoint points inside its transaction
				// past its index ("+N": N rows delivered).
				pos, _ := r.Header(outbox.HeaderPosition)
				idx, _ := r.Header(outbox.HeaderIndex)
				i, _ := strconv.Atoi(idx)
				if c, err := compare(pos+"+"+strconv.Itoa(i+1), kills[run-1].checkpoint); err != nil || c <= 0 {
					rep.staleDuplicates++
					if report++; report <= 10 {
						t.Errorf("duplicate %s at %s re-sent by run %d, which restarted at checkpoint %s", id, pos, run, kills[run-1].checkpoint)
					}
				}
			}
			continue
		}
		seen[id] = true
		k := r.Topic + "/" + e.AggID
		if e.Seq <= last[k] {
			rep.orderViolations++
			if report++; report <= 10 {
				t.Errorf("key %s: first copy of seq %d arrived after the first copy of seq %d", k, e.Seq, last[k])
			}
		}
		last[k] = e.Seq
	}
	rep.distinct = len(seen)
	for _, e := range want {
		if !seen[e.ID] {
			rep.lost++
			if report++; report <= 10 {
				t.Errorf("lost %s (key %s seq %d)", e.ID, e.AggID, e.Seq)
			}
		}
	}
	for run, n := range bigPerRun {
		if run < len(kills) && n > 0 && n < len(bigIDs) {
			rep.killsInsideBig++
		}
	}
	return rep
}
