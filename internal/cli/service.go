package cli

import (
	"context"
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
// and the relay's Observer).
type Service struct {
	Relay *relay.Relay
	// Store is the checkpoint store (Lock it before Run; Close it after).
	Store Store
	// Metrics is nil when metrics.listen is "".
	Metrics *metrics.Metrics

	cfg     *config.Config
	status  metrics.StatusSource
	ln      net.Listener
	cleaner *cleanup.Cleaner // nil: outbox.cleanup is off
	// lease is nil unless relay.ha.enabled: then the relay runs only
	// while the standby group assigns this instance its pipeline.
	lease *lease.Lease
	log   zerolog.Logger
}

// NewService wires the components named by cfg. Nothing connects yet.
func NewService(cfg *config.Config, log zerolog.Logger) (*Service, error) {
	src, err := cfg.Source.New(log)
	if err != nil {
		return nil, err
	}
	store, err := newStore(cfg, log)
	if err != nil {
		return nil, err
	}
	mapper, err := outbox.New(cfg.Outbox)
	if err != nil {
		store.Close()
		return nil, err
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

	s := &Service{Store: store, cfg: cfg, log: log}
	// Exactly-once holds the fence once its producer is up: a stale
	// instance still holding the source (a Postgres slot) is let go of.
	var rsrc relay.Source = relaySource{Source: src, o: source.OpenOptions{CheckTable: mapper.CheckTable, TakeOver: rcfg.Delivery == relay.ExactlyOnce}}
	var rstore checkpoint.Store = store
	if cfg.Metrics.Enabled() {
		_, wal := src.(metrics.WALRetainer)
		m := metrics.New(cfg.Metrics, metrics.Info{Source: src.Kind(), Version: version(), Position: src.Number, RetainsWAL: wal},
			log.With().Str("component", "metrics").Logger())
		rsrc, rstore, newSink = m.Source(rsrc), m.Store(store), m.SinkFactory(newSink)
		rcfg.Observer = m.Observer()
		rcfg.OnCommit = m.Committed
		if prev := rcfg.BadRowHook; prev != nil {
			rcfg.BadRowHook = func(reason, policy string) { m.BadRow(reason, policy); prev(reason, policy) }
		} else {
			rcfg.BadRowHook = m.BadRow
		}
		s.Metrics, s.status = m, src
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
		s.cleaner = newCleaner(cfg, src, d, s.Metrics, log)
	}
	s.Relay = relay.New(rcfg, rsrc, newSink, rstore, mapper, log.With().Str("component", "relay").Logger())
	if rcfg.HA.Enabled {
		if err := s.newLease(); err != nil {
			store.Close()
			return nil, err
		}
	}
	return s, nil
}

// newLease puts the relay under the standby group: one pipeline, named
// after the relay, on partition 0 of the lease topic.
func (s *Service) newLease() error {
	cfg := s.cfg
	// The lease's client is the sink's, without its transactional id.
	sc, err := cfg.Kafka.ClientConfig()
	if err != nil {
		return err
	}
	sc.Producer.Transaction.ID = ""
	pipelines := []string{cfg.Relay.Name}
	o := lease.Options{
		Group: lease.GroupID(cfg.Relay.Name), Topic: cfg.Relay.HA.Topic, Pipelines: pipelines,
		Brokers: cfg.Kafka.Brokers, Client: sc,
	}
	if s.Metrics != nil {
		s.Metrics.HA(pipelines)
		o.Observer = s.Metrics
	}
	run := func(ctx context.Context, _ int) error { return s.Relay.Run(ctx) }
	s.lease = lease.New(cfg.Relay.HA, o, run, s.log.With().Str("component", "lease").Logger())
	return nil
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
