package metrics

import (
	"fmt"
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
	member  bool   // in the standby group
	out     string // why not
	// onlyHA: the pipelines are not measured (a config with several:
	// see OnlyHA), so readiness is membership alone.
	onlyHA bool
}

// OnlyHA says that the source, sink and store of the pipelines are not
// measured (a config with several pipelines, whose single-pipeline
// collectors would mix them up): /readyz then answers whether this
// instance is in the standby group, streaming or not.
func (m *Metrics) OnlyHA() {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	m.ha.onlyHA = true
}

// HA registers the standby metrics for pipelines, all 0 (standing by).
func (m *Metrics) HA(pipelines []string) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	m.ha.enabled = true
	m.ha.active = map[string]bool{}
	m.ha.out = "joining the standby group"
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

// Member says whether this instance is in the standby group, and if not
// why (joining, or the error that put it out).
func (m *Metrics) Member(in bool, why string) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	m.ha.member, m.ha.out = in, why
}

// standby reports whether this instance is a standby streaming nothing,
// and if so whether it is ready (in the group) and why.
func (m *Metrics) standby() (standby, ready bool, why string) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if !m.ha.enabled {
		return false, false, ""
	}
	if m.ha.onlyHA {
		n := 0
		for _, on := range m.ha.active {
			if on {
				n++
			}
		}
		if !m.ha.member {
			return true, false, "not in the standby group: " + m.ha.out
		}
		return true, true, fmt.Sprintf("in the standby group, streaming %d pipeline(s) (relay.ha; pipelines are not measured one by one)", n)
	}
	for _, on := range m.ha.active {
		if on {
			return false, false, ""
		}
	}
	if !m.ha.member {
		return true, false, "standby, not in the group: " + m.ha.out
	}
	return true, true, "standing by: another instance streams the pipeline (relay.ha)"
}
