package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"defaults", Config{}, ""},
		{"short session", Config{SessionTimeout: 500 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond}, "session_timeout"},
		{"slow heartbeat", Config{SessionTimeout: 6 * time.Second, HeartbeatInterval: 3 * time.Second}, "heartbeat_interval"},
		{"bad topic", Config{Topic: "a b"}, "topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.cfg
			c.SetDefaults()
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// observer records what the lease tells metrics.
type observer struct {
	mu                  sync.Mutex
	assigned, takeovers int
	active              bool
}

func (o *observer) Assigned(_ string, takeover bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.assigned++
	if takeover {
		o.takeovers++
	}
}

func (o *observer) Active(_ string, on bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active = on
}

func (o *observer) Member(bool, string) {}

func (o *observer) snapshot() (assigned, takeovers int, active bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.assigned, o.takeovers, o.active
}

type member struct {
	obs     *observer
	running chan int // a pipeline started (its index)
	cancel  context.CancelFunc
	done    chan error
}

func startMember(t *testing.T, broker string, cfg Config, fail error) *member {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	sc.ClientID = "test"
	m := &member{obs: &observer{}, running: make(chan int, 16), done: make(chan error, 1)}
	run := func(ctx context.Context, i int) error {
		m.running <- i
		if fail != nil {
			return fail
		}
		<-ctx.Done()
		return nil
	}
	l := New(cfg, Options{Group: "g", Topic: "lease.test", Pipelines: []string{"p"}, Brokers: []string{broker}, Client: sc, Observer: m.obs}, run, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-m.done })
	return m
}

func waitRunning(t *testing.T, m *member, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-m.running:
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("the pipeline did not start within %s", within)
	}
	return 0
}

// TestIntegrationLeaseHandover: against kfake's group coordinator, one of
// two members streams the pipeline, the other stands by; when the holder
// leaves (its context ends: a SIGTERM), the standby takes over within a
// few seconds, and counts it as a takeover.
func TestIntegrationLeaseHandover(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	cfg := Config{SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond}
	a := startMember(t, b.Addr(), cfg, nil)
	waitRunning(t, a, 30*time.Second)
	s := startMember(t, b.Addr(), cfg, nil)
	// The standby joins: the sticky assignment leaves the pipeline where
	// it is.
	select {
	case <-s.running:
		t.Fatal("the pipeline moved to the standby when it joined")
	case <-time.After(3 * time.Second):
	}
	if _, _, on := a.obs.snapshot(); !on {
		n, tk, on := a.obs.snapshot()
		t.Fatalf("the first member stopped streaming when the standby joined (%d %d %v)", n, tk, on)
	}
	a.cancel()
	err = <-a.done
	a.done <- err // for Cleanup
	if err != nil {
		t.Fatalf("the first member's Run: %v", err)
	}
	took := waitRunning(t, s, 10*time.Second)
	t.Logf("takeover after the holder left: %s", took)
	if took > 3*time.Second {
		t.Errorf("takeover took %s after a clean leave, want ≤ 3s", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, tk, on := s.obs.snapshot()
		if n == 1 && tk == 1 && on {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby: %d assignments, %d takeovers, active %v; want 1, 1, true", n, tk, on)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIntegrationLeaseFailureStops: a pipeline's failure ends Run with it.
func TestIntegrationLeaseFailureStops(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	boom := errors.New("boom")
	m := startMember(t, b.Addr(), Config{SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond}, boom)
	select {
	case err := <-m.done:
		m.done <- err // for Cleanup
		if !errors.Is(err, boom) {
			t.Fatalf("Run returned %v, want the pipeline's failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop after the pipeline failed")
	}
}

// TestIntegrationLeaseSpreadsPipelines: four pipelines over two members
// are spread two and two; when one member leaves, its pipelines move to
// the other, which then runs all four, each exactly once.
func TestIntegrationLeaseSpreadsPipelines(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	names := []string{"p0", "p1", "p2", "p3"}
	type runs struct {
		mu      sync.Mutex
		running map[int]int // pipeline → members running it now
		maxed   bool        // a pipeline ran on two members at once
	}
	all := &runs{running: map[int]int{}}
	start := func(mine map[int]bool, mu *sync.Mutex) (context.CancelFunc, chan error) {
		sc := sarama.NewConfig()
		sc.Version = sarama.V2_8_0_0
		sc.ClientID = "test"
		run := func(ctx context.Context, i int) error {
			all.mu.Lock()
			all.running[i]++
			if all.running[i] > 1 {
				all.maxed = true
			}
			all.mu.Unlock()
			mu.Lock()
			mine[i] = true
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			delete(mine, i)
			mu.Unlock()
			all.mu.Lock()
			all.running[i]--
			all.mu.Unlock()
			return nil
		}
		l := New(Config{SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond},
			Options{Group: "g", Topic: "lease.spread", Pipelines: names, Brokers: []string{b.Addr()}, Client: sc},
			run, zerolog.New(zerolog.NewTestWriter(t)))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		return cancel, done
	}
	var muA, muB sync.Mutex
	a, b2 := map[int]bool{}, map[int]bool{}
	cancelA, doneA := start(a, &muA)
	cancelB, doneB := start(b2, &muB)
	defer func() { cancelB(); <-doneB }()
	count := func(m map[int]bool, mu *sync.Mutex) int {
		mu.Lock()
		defer mu.Unlock()
		return len(m)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: member a runs %d, member b %d", what, count(a, &muA), count(b2, &muB))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("spread two and two", func() bool { return count(a, &muA) == 2 && count(b2, &muB) == 2 })
	cancelA()
	if err := <-doneA; err != nil {
		t.Fatalf("member a's Run: %v", err)
	}
	waitFor("member b runs all four", func() bool { return count(a, &muA) == 0 && count(b2, &muB) == 4 })
	all.mu.Lock()
	defer all.mu.Unlock()
	if all.maxed {
		t.Error("a pipeline ran on two members at once")
	}
}

// TestIntegrationLeaseTopicTooSmall: a lease topic with fewer partitions
// than pipelines stops Run with the fix, instead of retrying.
func TestIntegrationLeaseTopicTooSmall(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{Partitions: 1, Topics: []string{"lease.small"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	l := New(Config{}, Options{Group: "g", Topic: "lease.small", Pipelines: []string{"a", "b"}, Brokers: []string{b.Addr()}, Client: sc},
		func(ctx context.Context, _ int) error { <-ctx.Done(); return nil }, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = l.Run(ctx)
	if !isPermanent(err) || !contains(err.Error(), "--partitions 2") {
		t.Fatalf("Run: %v, want the permanent error naming the fix", err)
	}
}
