package cli

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	ckafka "github.com/outboxrelay/outboxrelay/checkpoint/kafka"
	"github.com/outboxrelay/outboxrelay/internal/config"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/sink"
)

// Store is a checkpoint store as the commands use it: the relay's
// checkpoint.Store, and what keeps a second relay off it.
type Store interface {
	checkpoint.Store
	// Lock keeps a second relay, and `checkpoint set`, off the checkpoint
	// until unlock: the file store's lock file (flock, one host). The
	// Kafka store has none — standby instances are to coordinate through
	// Kafka's group protocol, and an exactly-once relay's producer epoch
	// fences an older one — so its Lock does nothing.
	Lock() (unlock func(), err error)
	// Holder is the process id of the live relay holding the lock; 0 when
	// none does, or the store cannot tell (Kafka).
	Holder() int
	// Where names the checkpoint in messages: its file, or its topic and
	// key.
	Where() string
}

// newStore builds the store checkpoint.type selects; it is the only place
// that does. Nothing connects yet. An exactly-once relay's Kafka store
// saves in transactions of the relay's own transactional id (fencing a
// running relay of that name: what `checkpoint set` and `import` want).
func newStore(cfg *config.Config, log zerolog.Logger) (Store, error) {
	if cfg.Checkpoint.Type == "kafka" {
		o := ckafka.Options{Transactional: cfg.Relay.Delivery == relay.ExactlyOnce}
		s, err := ckafka.New(cfg.Checkpoint.Kafka, cfg.Relay.Name, cfg.Kafka, o, log.With().Str("component", "checkpoint.kafka").Logger())
		if err != nil {
			return nil, err
		}
		return kafkaStore{s}, nil
	}
	s, err := file.New(cfg.Checkpoint.File)
	if err != nil {
		return nil, err
	}
	return fileStore{Store: s, path: cfg.Checkpoint.File.Path}, nil
}

type fileStore struct {
	*file.Store
	path string
}

func (s fileStore) Where() string { return s.path }

type kafkaStore struct{ *ckafka.Store }

func (kafkaStore) Lock() (func(), error) { return func() {}, nil }
func (kafkaStore) Holder() int           { return 0 }
func (s kafkaStore) Where() string {
	return fmt.Sprintf("Kafka topic %s, key %s", s.Topic(), s.Key())
}

// peek reads the checkpoint without changing anything: the Kafka store
// does not create its topic for it.
func peek(ctx context.Context, s Store) (checkpoint.Checkpoint, error) {
	if k, ok := s.(kafkaStore); ok {
		return k.Peek(ctx)
	}
	return s.Load(ctx)
}

// positionRecord is how an exactly-once relay writes its position into its
// own Kafka transactions: the Kafka store's record (nil for other stores,
// which exactly-once refuses).
func positionRecord(s Store) func(checkpoint.Checkpoint) (sink.Record, error) {
	if k, ok := s.(kafkaStore); ok {
		return k.Record
	}
	return nil
}
