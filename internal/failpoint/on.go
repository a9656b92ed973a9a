//go:build failpoints

package failpoint

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether failpoints are compiled in.
const Enabled = true

// EnvVar arms failpoints: a comma-separated list of "name=probability"
// (kill on each hit with that probability) or "name@n" (kill on the n-th
// hit), e.g. RELAY_FAILPOINTS="produce-before-ack@20000,after-checkpoint=0.3".
// (Not OUTBOXRELAY_*: those are config keys.)
const EnvVar = "RELAY_FAILPOINTS"

type point struct {
	prob float64
	nth  int64 // > 0: kill on this hit
	hits atomic.Int64
}

var armed = parse(os.Getenv(EnvVar))

func parse(s string) map[string]*point {
	m := map[string]*point{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if name, n, ok := strings.Cut(item, "@"); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil || v < 1 {
				bad(item)
			}
			m[name] = &point{nth: v}
			continue
		}
		name, p, ok := strings.Cut(item, "=")
		f, err := strconv.ParseFloat(p, 64)
		if !ok || err != nil {
			bad(item)
		}
		m[name] = &point{prob: f}
	}
	return m
}

func bad(item string) {
	fmt.Fprintf(os.Stderr, "failpoint: %s: want name=probability or name@n, got %q\n", EnvVar, item)
	os.Exit(3)
}

// Inject kills the process with SIGKILL — no deferred functions, no
// flushing, like a power cut — when the point armed for name fires.
func Inject(name string) {
	p, ok := armed[name]
	if !ok {
		return
	}
	hit := p.hits.Add(1)
	if p.nth > 0 && hit != p.nth || p.nth == 0 && rand.Float64() >= p.prob {
		return
	}
	fmt.Fprintf(os.Stderr, "failpoint: %s (hit %d): SIGKILL\n", name, hit)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
