// Command bench measures outboxrelay against the raw rate of each database's
// replication log on this machine (docs/performance.md; issue 7). It is a
// development tool driven by scripts/bench.sh, which builds it, the relay and
// devkafka, and starts private database servers: the production binary never
// links it.
//
//	bench run   [flags]                         run the phases, print one table
//	bench relay [--cpuprofile F] [--memprofile F] -- ARGS...
//	                                            outboxrelay ARGS in this process, profiled
//
// The relay under test always runs as its own process (the built
// cmd/outboxrelay, or `bench relay` when profiling), so that its peak RSS
// (VmHWM) is its own; so does the development broker (cmd/devkafka),
// restarted for every phase because it keeps every record in memory.
//
// It owns only measurement: it must not reach into the relay's packages
// except through internal/cli for the profiled run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, "usage: bench run [flags] | bench relay [--cpuprofile F] [--memprofile F] -- ARGS...\n")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(cmdRun(os.Args[2:]))
	case "relay":
		os.Exit(cmdRelay(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "bench: unknown command %q\n", os.Args[1])
	os.Exit(2)
}

// cmdRelay runs the relay's own command line in this process with CPU and
// allocation profiles: the same code as cmd/outboxrelay, plus pprof.
func cmdRelay(args []string) int {
	fs := flag.NewFlagSet("bench relay", flag.ContinueOnError)
	cpu := fs.String("cpuprofile", "", "write a CPU profile here")
	mem := fs.String("memprofile", "", "write an allocation profile (allocs) here")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpu != "" {
		f, err := os.Create(*cpu)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench relay:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench relay:", err)
			return 1
		}
	}
	code := cli.Main(ctx, fs.Args(), os.Environ(), os.Stdout, os.Stderr)
	if *cpu != "" {
		pprof.StopCPUProfile()
	}
	if *mem != "" {
		f, err := os.Create(*mem)
		if err == nil {
			runtime.GC()
			err = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench relay: memprofile:", err)
		}
	}
	return code
}

// options of a run.
type options struct {
	sources     []string
	rows        int     // backlog rows
	bigRows     int     // rows of the single large transaction
	maxTx       int     // backlog transactions have 1..maxTx rows
	payload     int     // approximate payload bytes
	noise       float64 // share of backlog rows written to non-outbox tables in the noise phase
	cleanup     bool    // noise and live phases: run again with outbox.cleanup on
	liveRate    int     // events per second in the live phase
	liveFor     time.Duration
	liveTx      int // rows per transaction in the live phase
	phases      map[string]bool
	bin         string // directory with outboxrelay, devkafka and bench
	work        string
	profile     string // directory for pprof profiles of an extra, profiled drain
	partitions  int
	seed        int64
	tableOut    string
	kafkaExtra  string // KEY=VALUE,... added to the relay's kafka section
	repeat      int    // runs of each raw reader and relay drain per backlog
	mysqlAddr   string
	postgresDSN string
}

var allPhases = []string{"raw", "drain", "live", "noise", "big", "eos", "single"}

func cmdRun(args []string) int {
	var o options
	fs := flag.NewFlagSet("bench run", flag.ContinueOnError)
	sources := fs.String("sources", "mysql,postgres", "comma-separated: mysql (MariaDB), postgres")
	phases := fs.String("phases", strings.Join(allPhases, ","), "comma-separated subset of "+strings.Join(allPhases, ","))
	fs.IntVar(&o.rows, "rows", 500_000, "backlog rows (drain and noise phases)")
	fs.IntVar(&o.bigRows, "big-rows", 1_000_000, "rows of the single large transaction")
	fs.IntVar(&o.maxTx, "max-tx", 1000, "backlog transactions have 1..max-tx rows")
	fs.IntVar(&o.payload, "payload", 300, "approximate JSON payload bytes")
	fs.Float64Var(&o.noise, "noise", 0.9, "share of rows on non-outbox tables in the noise phase")
	fs.BoolVar(&o.cleanup, "noise-cleanup", false, "noise and live phases: run again with outbox.cleanup on (retention 1ms: rows are deleted as soon as covered), to compare with the plain runs")
	fs.IntVar(&o.liveRate, "live-rate", 5000, "events per second written in the live phase")
	fs.DurationVar(&o.liveFor, "live-for", 60*time.Second, "length of the live phase")
	fs.IntVar(&o.liveTx, "live-tx", 5, "rows per transaction in the live phase")
	fs.StringVar(&o.bin, "bin", "", "directory holding the outboxrelay, devkafka and bench binaries (required)")
	fs.StringVar(&o.work, "work", "", "scratch directory (required)")
	fs.StringVar(&o.profile, "profile", "", "also run a profiled drain per source and write CPU/alloc profiles here")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions per topic")
	fs.Int64Var(&o.seed, "seed", 1, "workload seed")
	fs.IntVar(&o.repeat, "repeat", 3, "runs of each raw reader and relay drain over each backlog (the table shows medians)")
	fs.StringVar(&o.tableOut, "table", "", "also write the result table (markdown) to this file")
	fs.StringVar(&o.kafkaExtra, "kafka", "", "KEY=VALUE,... settings for the relay's kafka section (e.g. compression=none), to compare against the defaults")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.repeat < 1 {
		o.repeat = 1
	}
	if o.bin == "" || o.work == "" {
		fmt.Fprintln(os.Stderr, "bench run: --bin and --work are required")
		return 2
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.phases[p] = true
		}
	}
	o.mysqlAddr = os.Getenv("RELAYTEST_MARIADB_ADDR")
	o.postgresDSN = os.Getenv("RELAYTEST_POSTGRES_DSN")
	for _, s := range strings.Split(*sources, ",") {
		switch s = strings.TrimSpace(s); s {
		case "mysql", "mariadb":
			if o.mysqlAddr == "" {
				fmt.Fprintln(os.Stderr, "bench run: RELAYTEST_MARIADB_ADDR is not set (start the server with scripts/mariadb.sh)")
				return 2
			}
			o.sources = append(o.sources, "mysql")
		case "postgres":
			if o.postgresDSN == "" {
				fmt.Fprintln(os.Stderr, "bench run: RELAYTEST_POSTGRES_DSN is not set (start the server with scripts/postgres.sh)")
				return 2
			}
			o.sources = append(o.sources, "postgres")
		case "":
		default:
			fmt.Fprintf(os.Stderr, "bench run: unknown source %q\n", s)
			return 2
		}
	}

	if err := os.MkdirAll(o.work, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench run:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rows []row
	var failed error
	for _, s := range o.sources {
		var got []row
		var err error
		switch s {
		case "mysql":
			got, err = benchMySQL(ctx, &o)
		case "postgres":
			got, err = benchPostgres(ctx, &o)
		}
		rows = append(rows, got...)
		if err != nil {
			logf("%s: FAILED: %v", s, err)
			failed = errors.Join(failed, fmt.Errorf("%s: %w", s, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	table := renderTable(rows, &o)
	fmt.Print(table)
	if o.tableOut != "" {
		if err := os.WriteFile(o.tableOut, []byte(table), 0o644); err != nil {
			logf("write %s: %v", o.tableOut, err)
		}
	}
	if failed != nil {
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
