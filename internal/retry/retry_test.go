package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestDoLogsOncePerOutageAndStopsOnPermanent(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	calls := 0
	errFatal := errors.New("fatal")
	err := Do(context.Background(), log, Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}, func(ctx context.Context, healthy func()) error {
		calls++
		switch {
		case calls <= 3:
			return fmt.Errorf("broker down (attempt %d)", calls) // the text varies within one outage
		case calls == 4:
			healthy()
			return errors.New("broker down")
		}
		return Stop(errFatal)
	})
	if !errors.Is(err, errFatal) {
		t.Fatalf("err = %v, want the permanent cause", err)
	}
	if calls != 5 {
		t.Fatalf("calls = %d, want 5", calls)
	}
	out := buf.String()
	if n := strings.Count(out, "transient failure"); n != 2 {
		t.Errorf("logged %d outages, want 2 (one before, one after recovery):\n%s", n, out)
	}
	if n := strings.Count(out, "recovered"); n != 1 {
		t.Errorf("logged %d recoveries, want 1:\n%s", n, out)
	}
}

func TestDoReturnsNilWhenCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	err := Do(ctx, zerolog.Nop(), Policy{Initial: time.Hour}, func(ctx context.Context, _ func()) error {
		cancel()
		return errors.New("transient")
	})
	if err != nil {
		t.Fatalf("err = %v, want nil after cancel", err)
	}
}
