package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// idleAfter is how long a read may wait for the next transaction before
// the relay counts as caught up (seconds behind = 0).
const idleAfter = time.Second

// state is what readiness and the lag gauges are computed from. The
// decorators update it; the HTTP handlers and collectors read it.
type state struct {
	mu          sync.Mutex
	open        bool   // a reader is open and its last read did not fail
	gen         uint64 // the open reader's generation
	openedAt    time.Time
	lastErr     string
	stopping    bool      // reading was stopped on purpose (shutdown, pipeline restart)
	savedAt     time.Time // when the relay last wrote the checkpoint
	cpUpdated   time.Time // UpdatedAt of the newest checkpoint known
	inNextSince time.Time // zero unless a read is waiting
	lastCommit  time.Time // commit time of the last transaction read
	behind      float64   // seconds behind when streaming stopped
	// unproven: a session failed, and since then the checkpoint has not
	// moved: a reconnect alone is no recovery (the next session may fail
	// at the same place).
	unproven   bool
	unprovenBy string
}

// opened records a new reader and returns its generation.
func (s *state) opened(now time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	s.open, s.openedAt, s.lastErr = true, now, ""
	s.inNextSince = time.Time{}
	return s.gen
}

// failed records that reading stopped (gen 0: an open that failed).
func (s *state) failed(gen uint64, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != 0 && (gen != s.gen || !s.open) {
		return // an older reader, or one that already failed: keep its error
	}
	if s.open {
		s.behind = s.secondsBehindLocked(now)
	}
	s.open = false
	s.inNextSince = time.Time{}
	s.stopping = errors.Is(err, context.Canceled)
	switch {
	case s.stopping:
		s.lastErr = "reading stopped (shutting down, or restarting the pipeline after a failure)"
	case err != nil:
		s.lastErr = err.Error()
		s.unproven, s.unprovenBy = true, s.lastErr
	}
}

func (s *state) reading(gen uint64, now time.Time) {
	s.mu.Lock()
	if gen == s.gen {
		s.inNextSince = now
	}
	s.mu.Unlock()
}

func (s *state) read(gen uint64, commit time.Time) {
	s.mu.Lock()
	if gen == s.gen {
		s.inNextSince = time.Time{}
		if !commit.IsZero() {
			s.lastCommit = commit
		}
	}
	s.mu.Unlock()
}

func (s *state) saved(now, updated time.Time) {
	s.mu.Lock()
	s.savedAt = now
	s.cpUpdated = updated
	s.unproven = false
	s.mu.Unlock()
}

func (s *state) loaded(updated time.Time) {
	s.mu.Lock()
	if s.cpUpdated.IsZero() || updated.After(s.cpUpdated) {
		s.cpUpdated = updated
	}
	s.mu.Unlock()
}

func (s *state) checkpointSaved() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cpUpdated
}

func (s *state) isOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

func (s *state) secondsBehind(now time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		return s.behind
	}
	return s.secondsBehindLocked(now)
}

func (s *state) secondsBehindLocked(now time.Time) float64 {
	if s.lastCommit.IsZero() {
		return 0
	}
	if !s.inNextSince.IsZero() && now.Sub(s.inNextSince) >= idleAfter {
		return 0 // waiting for the server: caught up
	}
	return max(0, now.Sub(s.lastCommit).Seconds())
}

// quietly reports whether not being ready is expected (a shutdown).
func (s *state) quietly() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.open && s.stopping
}

// Ready reports whether the relay is streaming and either making progress
// (the checkpoint advanced within metrics.stall_timeout) or idle (nothing
// in flight), and if not, why.
func (m *Metrics) Ready(now time.Time) (bool, string) {
	if standby, ready, why := m.standby(); standby {
		return ready, why
	}
	inFlight := m.inFlight()
	s := &m.state
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open {
		if s.lastErr == "" {
			return false, "not streaming: not connected to the database log yet"
		}
		return false, "not streaming: " + s.lastErr
	}
	caughtUp := !s.inNextSince.IsZero() && now.Sub(s.inNextSince) >= idleAfter
	if s.unproven && !(caughtUp && inFlight == 0) {
		return false, "recovering: the checkpoint has not moved since the last failure (" + s.unprovenBy + ")"
	}
	if inFlight == 0 {
		return true, "streaming; nothing in flight"
	}
	progress := s.openedAt
	if s.savedAt.After(progress) {
		progress = s.savedAt
	}
	if stalled := now.Sub(progress); stalled >= m.cfg.StallTimeout {
		return false, fmt.Sprintf("stalled: %d record(s) in flight and the checkpoint has not advanced for %s", inFlight, stalled.Round(time.Second))
	}
	return true, fmt.Sprintf("streaming; %d record(s) in flight", inFlight)
}
