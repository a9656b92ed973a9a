package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cleanupMetrics measure the outbox cleanup (outbox.cleanup); they stay 0
// while it is off.
type cleanupMetrics struct {
	deleted prometheus.Counter
	oldest  prometheus.Gauge
}

func newCleanupMetrics(f factory) cleanupMetrics {
	return cleanupMetrics{
		deleted: f.counter("outboxrelay_cleanup_rows_deleted_total", "Delivered outbox rows the cleanup (outbox.cleanup) deleted."),
		oldest:  f.gauge("outboxrelay_cleanup_oldest_row_age_seconds", "Age of the oldest row left in any outbox table (by outbox.cleanup.column), measured after each cleanup round; 0 when they are empty or the cleanup is off."),
	}
}

// CleanupDeleted counts rows the cleanup deleted.
func (m *Metrics) CleanupDeleted(_ string, n int64) { m.cleanup.deleted.Add(float64(n)) }

// CleanupOldest sets the oldest row's age (0 when ok is false).
func (m *Metrics) CleanupOldest(age time.Duration, ok bool) {
	if !ok {
		age = 0
	}
	m.cleanup.oldest.Set(age.Seconds())
}
