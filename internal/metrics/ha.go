package metrics

import (
	"sync"
)

// Standby instances (relay.ha): which pipelines this instance streams.
// A standby is healthy and ready — it is waiting, by design — so /readyz
// answers 200 on it; the pipeline's own readiness rules apply once it
// streams.

type haState struct {
	mu      sync.Mutex
	enabled bool
	active  map[string]bool
}

// HA registers the standby metrics for pipelines, all 0 (standing by).
func (m *Metrics) HA(pipelines []string) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	m.ha.enabled = true
	m.ha.active = map[string]bool{}
	for _, p := range pipelines {
		m.activeGauge.WithLabelValues(p).Set(0)
		m.assignments.WithLabelValues(p)
		m.takeovers.WithLabelValues(p)
	}
}

// Assigned counts an assignment of pipeline to this instance, and a
// takeover when another instance held it before.
func (m *Metrics) Assigned(pipeline string, takeover bool) {
	m.assignments.WithLabelValues(pipeline).Inc()
	if takeover {
		m.takeovers.WithLabelValues(pipeline).Inc()
	}
}

// Active says whether this instance streams pipeline.
func (m *Metrics) Active(pipeline string, on bool) {
	m.ha.mu.Lock()
	if m.ha.active == nil {
		m.ha.active = map[string]bool{}
	}
	m.ha.active[pipeline] = on
	m.ha.mu.Unlock()
	m.activeGauge.WithLabelValues(pipeline).Set(b2f(on))
}

// standby reports whether this instance is a standby streaming nothing.
func (m *Metrics) standby() bool {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if !m.ha.enabled {
		return false
	}
	for _, on := range m.ha.active {
		if on {
			return false
		}
	}
	return true
}
