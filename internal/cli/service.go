package cli

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/cleanup"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/lease"
	"github.com/outboxrelay/outboxrelay/internal/metrics"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source"
)

// Service is the relay as `outboxrelay run` starts it: the pipeline, its
// checkpoint store, and, when metrics.listen is set, the metrics endpoint
// measuring it from the outside (decorators of the source, sink and store,
// and the relay's Observer). A config with pipelines has one relay and one
// store per pipeline, run under the standby group.
type Service struct {
	// Relay is the one pipeline's relay (the first of Relays).
	Relay *relay.Relay
	// Store is the one pipeline's checkpoint store (Lock the Service
	// before Run; Close it after).
	Store Store
	// Relays and Stores are every pipeline's (one without pipelines).
	Relays []*relay.Relay
	Stores []Store
	// Metrics is nil when metrics.listen is "".
	Metrics *metrics.Metrics

	cfg     *config.Config
	status  metrics.StatusSource
	ln      net.Listener
	cleaner *cleanup.Cleaner // nil: outbox.cleanup is off
	// lease is nil unless relay.ha.enabled: then relay i runs only while
	// the standby group assigns this instance pipeline i.
	lease *lease.Lease
	log   zerolog.Logger
}

// NewService wires the components named by cfg. Nothing connects yet.
func NewService(cfg *config.Config, log zerolog.Logger) (*Service, error) {
	s := &Service{cfg: cfg, log: log}
	if len(cfg.Pipelines) > 0 {
		if err := s.newPipelines(); err != nil {
			return nil, err
		}
		return s, nil
	}
	src, err := cfg.Source.New(log)
	if err != nil {
		return nil, err
	}
	if cfg.Metrics.Enabled() {
		_, wal := src.(metrics.WALRetainer)
		s.Metrics = metrics.New(cfg.Metrics, metrics.Info{Source: src.Kind(), Version: version(), Position: src.Number, RetainsWAL: wal},
			log.With().Str("component", "metrics").Logger())
		s.status = src
	}
	rel, store, err := s.newRelay(cfg, src, s.Metrics, log)
	if err != nil {
		return nil, err
	}
	s.Relay, s.Store = rel, store
	s.Relays, s.Stores = []*relay.Relay{rel}, []Store{store}
	if cfg.Relay.HA.Enabled {
		if err := s.newLease([]string{cfg.Relay.Name}); err != nil {
			store.Close()
			return nil, err
		}
	}
	return s, nil
}

// newPipelines wires one relay per pipeline, each with the config
// ForPipeline gives it (its source, its relay name: its own position key
// and transactional id), under one standby group. With more than one,
// their source, sink and store are not measured: the metrics' collectors
// describe one pipeline, and would mix several up; the standby metrics
// are per pipeline.
func (s *Service) newPipelines() error {
	cfg := s.cfg
	srcs := make([]source.Source, len(cfg.Pipelines))
	for i, p := range cfg.Pipelines {
		src, err := cfg.ForPipeline(i).Source.New(s.log.With().Str("pipeline", p.Name).Logger())
		if err != nil {
			return fmt.Errorf("pipelines[%d] (%s): %w", i, p.Name, err)
		}
		srcs[i] = src
	}
	var m *metrics.Metrics // measures the one pipeline, if there is one
	if cfg.Metrics.Enabled() {
		info := metrics.Info{Source: srcs[0].Kind(), Version: version()}
		if len(srcs) == 1 {
			_, wal := srcs[0].(metrics.WALRetainer)
			info.Position, info.RetainsWAL = srcs[0].Number, wal
		}
		s.Metrics = metrics.New(cfg.Metrics, info, s.log.With().Str("component", "metrics").Logger())
		if len(srcs) == 1 {
			m, s.status = s.Metrics, srcs[0]
		}
	}
	for i, p := range cfg.Pipelines {
		rel, store, err := s.newRelay(cfg.ForPipeline(i), srcs[i], m, s.log.With().Str("pipeline", p.Name).Logger())
		if err != nil {
			s.Close()
			return fmt.Errorf("pipelines[%d] (%s): %w", i, p.Name, err)
		}
		s.Relays, s.Stores = append(s.Relays, rel), append(s.Stores, store)
	}
	s.Relay, s.Store = s.Relays[0], s.Stores[0]
	if cfg.Relay.HA.Enabled {
		if err := s.newLease(cfg.PipelineNames()); err != nil {
			s.Close()
			return err
		}
		if s.Metrics != nil && m == nil {
			s.Metrics.OnlyHA()
		}
	}
	return nil
}

// newRelay wires one pipeline: cfg's store, sink and mapper around src,
// measured by m when it is not nil (and cleaned up after, when
// outbox.cleanup is on).
func (s *Service) newRelay(cfg *config.Config, src source.Source, m *metrics.Metrics, log zerolog.Logger) (*relay.Relay, Store, error) {
	store, err := newStore(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	mapper, err := outbox.New(cfg.Outbox)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	kcfg := cfg.Kafka
	rcfg := cfg.Relay
	if rcfg.Delivery == relay.ExactlyOnce {
		// The producer's epoch fences every older instance of this relay.
		kcfg.TransactionalID = kafka.TransactionalID(rcfg.Name)
		rcfg.TransactionTimeout = kcfg.TransactionTimeout
		rcfg.PositionRecord = positionRecord(store)
	}
	klog := log.With().Str("component", "sink.kafka").Logger()
	newSink := relay.SinkFactory(func(context.Context) (sink.Sink, error) { return kafka.New(kcfg, klog) })

	// Exactly-once holds the fence once its producer is up: a stale
	// instance still holding the source (a Postgres slot) is let go of.
	var rsrc relay.Source = relaySource{Source: src, o: source.OpenOptions{CheckTable: mapper.CheckTable, TakeOver: rcfg.Delivery == relay.ExactlyOnce}}
	var rstore checkpoint.Store = store
	if m != nil {
		rsrc, rstore, newSink = m.Source(rsrc), m.Store(store), m.SinkFactory(newSink)
		rcfg.Observer = m.Observer()
		rcfg.OnCommit = m.Committed
		if prev := rcfg.BadRowHook; prev != nil {
			rcfg.BadRowHook = func(reason, policy string) { m.BadRow(reason, policy); prev(reason, policy) }
		} else {
			rcfg.BadRowHook = m.BadRow
		}
	}
	if cfg.Outbox.Cleanup.Enabled {
		// The cleanup deletes only what the durable position covers: it
		// hears of every position the relay makes durable.
		d := &durable{store: store}
		rstore = savingStore{Store: rstore, d: d}
		if prev := rcfg.OnCommit; prev != nil {
			rcfg.OnCommit = func(cp checkpoint.Checkpoint) { prev(cp); d.saved(cp) }
		} else {
			rcfg.OnCommit = d.saved
		}
		s.cleaner = newCleaner(cfg, src, d, m, log)
	}
	return relay.New(rcfg, rsrc, newSink, rstore, mapper, log.With().Str("component", "relay").Logger()), store, nil
}

// newLease puts the relays under the standby group: pipeline i (named
// pipelines[i]; the relay's name without pipelines) on partition i of
// the lease topic.
func (s *Service) newLease(pipelines []string) error {
	cfg := s.cfg
	// The lease's client is the sink's, without its transactional id.
	sc, err := cfg.Kafka.ClientConfig()
	if err != nil {
		return err
	}
	sc.Producer.Transaction.ID = ""
	o := lease.Options{
		Group: lease.GroupID(cfg.Relay.Name), Topic: cfg.Relay.HA.Topic, Pipelines: pipelines,
		Brokers: cfg.Kafka.Brokers, Client: sc,
	}
	if s.Metrics != nil {
		s.Metrics.HA(pipelines)
		o.Observer = s.Metrics
	}
	run := func(ctx context.Context, i int) error { return s.Relays[i].Run(ctx) }
	s.lease = lease.New(cfg.Relay.HA, o, run, s.log.With().Str("component", "lease").Logger())
	return nil
}

// Lock takes every pipeline's checkpoint lock (see Store.Lock).
func (s *Service) Lock() (unlock func(), err error) {
	var unlocks []func()
	unlock = func() {
		for _, u := range unlocks {
			u()
		}
	}
	for _, st := range s.Stores {
		u, err := st.Lock()
		if err != nil {
			unlock()
			return nil, err
		}
		unlocks = append(unlocks, u)
	}
	return unlock, nil
}

// Close closes every pipeline's checkpoint store.
func (s *Service) Close() error {
	var errs []error
	for _, st := range s.Stores {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// Listen binds metrics.listen, so that a busy port stops the relay before
// it starts. It returns the bound address (nil when metrics are off).
// Run calls it when it has not been called.
func (s *Service) Listen() (net.Addr, error) {
	if s.Metrics == nil {
		return nil, nil
	}
	if s.ln == nil {
		ln, err := net.Listen("tcp", s.cfg.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("metrics.listen: %w", err)
		}
		s.ln = ln
	}
	return s.ln.Addr(), nil
}

// Run relays until ctx ends (it then drains and writes the final
// checkpoint) or a permanent failure. The metrics endpoint stays up until
// the relay has stopped, so probes see the shutdown.
func (s *Service) Run(ctx context.Context) error {
	if s.Metrics != nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
		stop := s.Metrics.Serve(s.ln, s.status)
		defer stop()
	}
	run := s.Relay.Run
	if s.lease != nil {
		run = s.lease.Run
	}
	if s.cleaner == nil {
		return run(ctx)
	}
	// The cleanup lives as long as the relay (on a standby too: it deletes
	// only what the durable position covers, whoever made it durable), on
	// its own connection; it never stops the relay (it retries its own
	// failures).
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.cleaner.Run(cctx)
	}()
	err := run(ctx)
	cancel()
	<-done
	return err
}

// relaySource is a source as the relay opens it: with fixed options (a
// live relay's, or a replay's).
type relaySource struct {
	source.Source
	o source.OpenOptions
}

func (s relaySource) Open(ctx context.Context, from string) (source.Reader, error) {
	return s.Source.Open(ctx, from, s.o)
}
