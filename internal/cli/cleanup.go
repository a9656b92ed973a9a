package cli

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/cleanup"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/metrics"
	"github.com/outboxrelay/outboxrelay/source"
)

// durable is the relay's durable position as this process knows it: the
// last checkpoint it saved (or, exactly-once, committed), else the
// store's. The cleanup deletes only rows it covers.
type durable struct {
	store  Store
	mu     sync.Mutex
	pos    string
	peeked time.Time // the last read of the store (at most one a second: the Kafka store reads a topic)
}

func (d *durable) saved(cp checkpoint.Checkpoint) {
	d.mu.Lock()
	d.pos = cp.Position
	d.mu.Unlock()
}

func (d *durable) position(ctx context.Context) (string, error) {
	d.mu.Lock()
	pos, peeked := d.pos, d.peeked
	d.mu.Unlock()
	if pos != "" {
		return pos, nil
	}
	if time.Since(peeked) < time.Second {
		return "", checkpoint.ErrNotFound
	}
	cp, err := peek(ctx, d.store)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peeked = time.Now()
	if err != nil {
		return "", err
	}
	if d.pos == "" {
		d.pos = cp.Position // durable already: the relay only moves on from it
	}
	return d.pos, nil
}

// savingStore tells d of every checkpoint the relay saved.
type savingStore struct {
	checkpoint.Store
	d *durable
}

func (s savingStore) Save(ctx context.Context, cp checkpoint.Checkpoint) error {
	if err := s.Store.Save(ctx, cp); err != nil {
		return err
	}
	s.d.saved(cp)
	return nil
}

// newCleaner is the outbox cleanup of a relay (nil when it is off).
func newCleaner(cfg *config.Config, src source.Source, d *durable, m *metrics.Metrics, log zerolog.Logger) *cleanup.Cleaner {
	if !cfg.Outbox.Cleanup.Enabled {
		return nil
	}
	ta, ok := src.(source.TableAccess)
	if !ok {
		return nil // every source kind has it (source/kinds)
	}
	o := cleanup.Options{
		Config:   cfg.Outbox.Cleanup,
		IDColumn: cfg.Outbox.IDColumn,
		Tables:   ta,
		Compare:  src.Compare,
		Durable:  d.position,
	}
	if m != nil {
		o.Deleted, o.Oldest = m.CleanupDeleted, m.CleanupOldest
	}
	return cleanup.New(o, log.With().Str("component", "cleanup").Logger())
}
