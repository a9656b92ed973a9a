package metrics

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Source measures src: connections (reconnects, failures), transactions
// and events read, the lag of the last one read, and whether it streams.
func (m *Metrics) Source(src relay.Source) relay.Source {
	return &meteredSource{Source: src, m: m}
}

type meteredSource struct {
	relay.Source
	m *Metrics
}

func (s *meteredSource) Open(ctx context.Context, from string) (source.Reader, error) {
	m := s.m
	r, err := s.Source.Open(ctx, from)
	if err != nil {
		if ctx.Err() == nil {
			m.sourceErrors.Inc()
		}
		m.state.failed(0, err, time.Now())
		return nil, err
	}
	if m.opens.Add(1) > 1 {
		m.reconnects.Inc()
	}
	return &meteredReader{Reader: r, m: m, gen: m.state.opened(time.Now())}, nil
}

type meteredReader struct {
	source.Reader
	m   *Metrics
	gen uint64
}

func (r *meteredReader) Next(ctx context.Context) (*source.Tx, error) {
	m := r.m
	m.state.reading(r.gen, time.Now())
	tx, err := r.Reader.Next(ctx)
	if err != nil {
		// Whatever ends reading (a lost connection, a failing sink that
		// stopped the pipeline, a shutdown) ends streaming until the next
		// Open.
		if !errors.Is(err, context.Canceled) && !errors.Is(err, source.ErrEndOfRange) {
			m.sourceErrors.Inc()
		}
		m.state.failed(r.gen, err, time.Now())
		return nil, err
	}
	if n := len(tx.Rows); n > 0 {
		m.eventsRead.Add(float64(n))
	}
	if tx.Snapshot {
		m.snapshotPiece(tx)
	}
	if tx.End != nil {
		m.txnsRead.Inc()
	}
	m.state.read(r.gen, tx.CommitTime)
	return tx, nil
}

// snapshotPiece counts the rows of a piece of the snapshot by table.
func (m *Metrics) snapshotPiece(tx *source.Tx) {
	if tx.End != nil {
		m.snapshotActive.Store(0)
	} else {
		m.snapshotActive.Store(1)
	}
	var t *schema.Table
	n := 0
	flush := func() {
		if n > 0 {
			m.snapshotRows.WithLabelValues(t.FullName()).Add(float64(n))
		}
	}
	for _, row := range tx.Rows {
		if row.Table != t {
			flush()
			t, n = row.Table, 0
		}
		n++
	}
	flush()
}

func (r *meteredReader) Close() error {
	r.m.snapshotActive.Store(0)
	// Without a failed read before, the session ended for another reason
	// (e.g. Kafka could not be reached), which the relay logs.
	r.m.state.failed(r.gen, errors.New("the pipeline stopped; the relay's log says why and it retries with backoff"), time.Now())
	return r.Reader.Close()
}

// SinkFactory measures every sink it makes: records acknowledged and
// refused by topic, and records in flight.
func (m *Metrics) SinkFactory(f relay.SinkFactory) relay.SinkFactory {
	return func(ctx context.Context) (sink.Sink, error) {
		s, err := f(ctx)
		if err != nil {
			return nil, err
		}
		ms := &meteredSink{Sink: s, m: m}
		m.sink.Store(ms)
		return ms, nil
	}
}

type meteredSink struct {
	sink.Sink
	m        *Metrics
	inflight atomic.Int64
}

func (s *meteredSink) Send(ctx context.Context, r sink.Record, ack sink.AckFunc) error {
	tc := s.m.topic(r.Topic)
	s.inflight.Add(1)
	err := s.Sink.Send(ctx, r, func(err error) {
		if err == nil {
			tc.produced.Inc()
		} else {
			tc.errors.Inc()
		}
		s.inflight.Add(-1)
		ack(err)
	})
	if err != nil {
		s.inflight.Add(-1)
		// A record refused for its size is a bad row (counted as such),
		// a cancelled send is a shutdown.
		if ctx.Err() == nil && !errors.Is(err, sink.ErrTooLarge) {
			tc.errors.Inc()
		}
	}
	return err
}

// Store measures the checkpoint: its position, when it was written, and
// (for readiness) whether it advances.
func (m *Metrics) Store(s checkpoint.Store) checkpoint.Store {
	return &meteredStore{Store: s, m: m}
}

type meteredStore struct {
	checkpoint.Store
	m *Metrics
}

func (s *meteredStore) Load(ctx context.Context) (checkpoint.Checkpoint, error) {
	cp, err := s.Store.Load(ctx)
	if err == nil {
		s.m.setCheckpoint(cp)
		s.m.state.loaded(cp.UpdatedAt)
	}
	return cp, err
}

func (s *meteredStore) Save(ctx context.Context, cp checkpoint.Checkpoint) error {
	err := s.Store.Save(ctx, cp)
	if err == nil {
		s.m.setCheckpoint(cp)
		s.m.state.saved(time.Now(), cp.UpdatedAt)
	}
	return err
}

// Committed records a position an exactly-once relay committed in Kafka
// with the records it covers (its store's Save is not called then).
func (m *Metrics) Committed(cp checkpoint.Checkpoint) {
	m.setCheckpoint(cp)
	m.state.saved(time.Now(), cp.UpdatedAt)
}

func (m *Metrics) setCheckpoint(cp checkpoint.Checkpoint) {
	m.cpMu.Lock()
	defer m.cpMu.Unlock()
	if cp.Position != m.cpPosition {
		m.cpPosition = cp.Position
		if m.info.Position != nil {
			if v, ok := m.info.Position(cp.Position); ok {
				m.checkpointPos.Set(v)
			}
		}
	}
	if !cp.UpdatedAt.IsZero() {
		m.checkpointTime.Set(float64(cp.UpdatedAt.UnixNano()) / 1e9)
	}
}

// checkpointPosition is the newest checkpoint's text ("" before any).
func (m *Metrics) checkpointPosition() string {
	m.cpMu.Lock()
	defer m.cpMu.Unlock()
	return m.cpPosition
}

// Observer is the relay's Observer: it records the commit→ack and
// read→ack latency of every transaction with records.
func (m *Metrics) Observer() relay.Observer { return observer{m} }

type observer struct{ m *Metrics }

func (o observer) Acked(commit, read time.Time, records int) {
	if records == 0 {
		// Rows-less transactions are acknowledged as soon as they are
		// read: they would only dilute the latencies.
		return
	}
	now := time.Now()
	o.m.readToAck.Observe(now.Sub(read).Seconds())
	if !commit.IsZero() {
		o.m.commitToAck.Observe(max(0, now.Sub(commit).Seconds()))
	}
}
