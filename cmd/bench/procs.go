package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// broker is a devkafka process.
type broker struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// topics are the topics the workload's aggregate types map to with the
// default outbox.topic template.
var topics = []string{"outbox.event.order", "outbox.event.customer", "outbox.event.payment"}

func startBroker(ctx context.Context, o *options, logPath string) (*broker, error) {
	args := []string{"serve", "--listen", "127.0.0.1:0", "--partitions", strconv.Itoa(o.partitions)}
	for _, t := range topics {
		args = append(args, "--topic", t)
	}
	cmd := exec.Command(filepath.Join(o.bin, "devkafka"), args...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start devkafka: %w", err)
	}
	b := &broker{cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "devkafka listening on "); ok {
				addrc <- a
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(b.done)
	}()
	select {
	case b.addr = <-addrc:
		return b, nil
	case <-b.done:
		return nil, fmt.Errorf("devkafka exited at start (log %s)", logPath)
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	b.stop()
	return nil, fmt.Errorf("devkafka did not start (log %s)", logPath)
}

func (b *broker) stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// relayProc is a running relay.
type relayProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	exitErr error

	mu        sync.Mutex
	streaming bool
	summary   *latencySummary
	lastLines []string
	seen      chan struct{} // closed once the relay logged that it streams
}

// latencySummary is the relay's "commit-to-ack latency" debug line
// (internal/relay/observe.go).
type latencySummary struct {
	Transactions   int64     `json:"transactions"`
	Records        int64     `json:"records"`
	FirstAck       int64     `json:"first_ack_unix_ns"`
	LastAck        int64     `json:"last_ack_unix_ns"`
	CommitToAck    quantiles `json:"commit_to_ack_us"`
	LogToAck       quantiles `json:"log_to_ack_us"`
	WholeSecCommit bool      `json:"commit_times_whole_seconds"`
}

type quantiles struct {
	N    int64 `json:"n"`
	P50  int64 `json:"p50"`
	P90  int64 `json:"p90"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p999"`
	Max  int64 `json:"max"`
}

// startRelay runs the relay on config cfgPath, as the built binary or, with
// a profile prefix, profiled in the bench binary.
func startRelay(o *options, cfgPath, logPath, profilePrefix string) (*relayProc, error) {
	var cmd *exec.Cmd
	relayArgs := []string{"run", "--config", cfgPath, "--log-level", "debug"}
	if profilePrefix != "" {
		args := append([]string{"relay", "--cpuprofile", profilePrefix + ".cpu.pprof", "--memprofile", profilePrefix + ".allocs.pprof", "--"}, relayArgs...)
		cmd = exec.Command(filepath.Join(o.bin, "bench"), args...)
	} else {
		cmd = exec.Command(filepath.Join(o.bin, "outboxrelay"), relayArgs...)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	p := &relayProc{cmd: cmd, done: make(chan struct{}), seen: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start relay: %w", err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(io.TeeReader(errPipe, logFile))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.line(sc.Text())
		}
	}()
	go func() {
		<-scanned
		p.exitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *relayProc) line(l string) {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal([]byte(l), &m) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastLines = append(p.lastLines, l)
	if len(p.lastLines) > 20 {
		p.lastLines = p.lastLines[1:]
	}
	switch m.Message {
	case "streaming binlog", "streaming replication slot":
		if !p.streaming {
			p.streaming = true
			close(p.seen)
		}
	case "commit-to-ack latency":
		var s latencySummary
		if json.Unmarshal([]byte(l), &s) == nil {
			p.summary = &s
		}
	}
}

// waitStreaming waits until the relay logged that it streams.
func (p *relayProc) waitStreaming(ctx context.Context) error {
	select {
	case <-p.seen:
		return nil
	case <-p.done:
		return fmt.Errorf("relay exited at start: %v\n%s", p.exitErr, p.tail())
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(60 * time.Second):
		return fmt.Errorf("relay did not start streaming within 60s\n%s", p.tail())
	}
}

func (p *relayProc) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lastLines, "\n")
}

func (p *relayProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// usage is the relay's peak RSS and CPU time so far.
type usage struct {
	peakRSS int64 // bytes (VmHWM)
	cpu     time.Duration
}

func procUsage(pid int) (usage, error) {
	var u usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			u.peakRSS = kb << 10
		}
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	s := string(st)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 13 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			stt, _ := strconv.ParseInt(f[12], 10, 64)
			u.cpu = time.Duration(ut+stt) * time.Second / 100 // USER_HZ
		}
	}
	return u, nil
}

// stop reads the relay's usage, sends SIGTERM and waits for the summary
// it logs on the way out.
func (p *relayProc) stop() (usage, *latencySummary, error) {
	u, uerr := procUsage(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return u, nil, errors.New("relay did not stop within 90s of SIGTERM")
	}
	if uerr != nil {
		return u, nil, fmt.Errorf("read relay usage: %w", uerr)
	}
	p.mu.Lock()
	s := p.summary
	p.mu.Unlock()
	if p.exitErr != nil {
		return u, s, fmt.Errorf("relay exited with %v\n%s", p.exitErr, p.tail())
	}
	if s == nil {
		return u, nil, fmt.Errorf("relay logged no latency summary\n%s", p.tail())
	}
	return u, s, nil
}

// kill ends the relay at once (cleanup after a failure).
func (p *relayProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
