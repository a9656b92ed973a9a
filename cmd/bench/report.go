package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// renderTable prints the results as one markdown table plus the machine.
func renderTable(rows []row, o *options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\noutboxrelay bench — %s — %s\n\n", time.Now().Format("2006-01-02 15:04"), machine())
	fmt.Fprintf(&b, "backlog %d rows (transactions of 1–%d rows, ~%d B payloads), noise %.0f%%, live %d ev/s for %v, large transaction %d rows\n\n",
		o.rows, o.maxTx, o.payload, o.noise*100, o.liveRate, o.liveFor, o.bigRows)
	if o.repeat > 1 {
		fmt.Fprintf(&b, "raw readers and relay drains: median of %d runs over the same backlog (min–max seconds in brackets); drain / raw = ratio of the medians' rates\n\n", o.repeat)
	}
	b.WriteString("| source | phase | log rows | events | seconds | rows/s | drain / raw | latency p50 / p99 / max (ms) | relay peak RSS | relay CPU |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |\n")
	for _, r := range rows {
		events, rss, cpu := "", "", ""
		if r.events > 0 {
			events = fmt.Sprint(r.events)
		}
		if r.rss > 0 {
			rss = fmt.Sprintf("%d MiB", r.rss>>20)
		}
		if r.cpu > 0 {
			cpu = fmt.Sprintf("%.1f s", r.cpu.Seconds())
		}
		secs := fmt.Sprintf("%.2f", r.seconds)
		if r.spread != "" {
			secs += " (" + r.spread + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			r.source, r.phase, r.rows, events, secs, kilo(r.rate()), r.ratio, r.latency, rss, cpu)
	}
	var notes []string
	for _, r := range rows {
		if r.note != "" && r.note != "context only" {
			notes = append(notes, fmt.Sprintf("- %s, %s: %s", r.source, r.phase, r.note))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}

func kilo(v float64) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0fk", v/1000)
}

// machine describes the CPU and memory.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %d GiB", (kb+(1<<19))>>20)
		}
	}
	return fmt.Sprintf("%d × %s%s, %s", runtime.NumCPU(), model, mem, runtime.Version())
}
