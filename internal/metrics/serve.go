package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outboxrelay/outboxrelay/source"
)

// StatusSource is what the poller asks about the checkpoint: how far the
// server's log is ahead of it (the position tools' Status).
type StatusSource interface {
	Status(ctx context.Context, pos string) (source.PositionStatus, error)
}

// WALRetainer is a source that can say how much WAL the server keeps for
// the relay (PostgreSQL).
type WALRetainer interface {
	RetainedWAL(ctx context.Context) (int64, error)
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil}))
	// Liveness: the process runs and answers. Restarting it would not fix
	// a database or broker outage, which the relay waits out by itself.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := m.Ready(time.Now())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	return mux
}

// Serve serves the endpoint on ln and polls status (may be nil) every
// metrics.status_interval, until the returned stop is called. It logs
// each change of readiness once.
func (m *Metrics) Serve(ln net.Listener, status StatusSource) (stop func()) {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	go func() {
		defer wg.Done()
		m.watch(ctx, status)
	}()
	m.log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz and /readyz")
	return func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
		wg.Wait()
	}
}

// watch logs readiness changes and polls the server's view of the
// checkpoint.
func (m *Metrics) watch(ctx context.Context, status StatusSource) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var nextPoll time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			m.logReadiness(now)
			if status != nil && !now.Before(nextPoll) {
				nextPoll = now.Add(m.cfg.StatusInterval)
				m.poll(ctx, status)
			}
		}
	}
}

func (m *Metrics) logReadiness(now time.Time) {
	ok, why := m.Ready(now)
	v := int32(2)
	if ok {
		v = 1
	}
	if m.readyLogged.Swap(v) == v {
		return
	}
	switch {
	case ok:
		m.log.Info().Str("state", why).Msg("ready")
	case m.state.quietly():
		m.log.Info().Str("reason", why).Msg("not ready")
	default:
		m.log.Warn().Str("reason", why).Msg("not ready")
	}
}

func (m *Metrics) poll(ctx context.Context, status StatusSource) {
	pos := m.checkpointPosition()
	if pos == "" || !m.state.isOpen() {
		return // nothing to compare, or the database is away anyway
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := status.Status(pctx, pos)
	if err != nil {
		m.log.Debug().Err(err).Msg("cannot read the server's position for outboxrelay_source_behind_bytes")
	} else if st.BehindBytes >= 0 {
		m.behindBytes.Set(float64(st.BehindBytes))
	}
	if r, ok := status.(WALRetainer); ok {
		if n, err := r.RetainedWAL(pctx); err == nil && n >= 0 {
			m.retainedWAL.Set(float64(n))
		}
	}
}
