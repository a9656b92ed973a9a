// Package kafka is the Kafka sink: an idempotent sarama producer (acks=all)
// with the Java client's murmur2 partitioner, many records in flight, and a
// cap on in-flight bytes for backpressure.
//
// It owns producer connections; it must not know about sources, mapping or
// checkpoints: it acknowledges each record through the sink.AckFunc it was
// given.
package kafka

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// Config of the Kafka sink.
type Config struct {
	// Brokers to bootstrap from, host:port. Required.
	Brokers []string `yaml:"brokers"`
	// ClientID sent to the brokers. Default "outboxrelay".
	ClientID string `yaml:"client_id"`
	// Version is the Kafka protocol version to speak. Default "2.8.0".
	Version string `yaml:"version"`
	// Compression: none, gzip, snappy, lz4 or zstd. Default "lz4".
	Compression string `yaml:"compression"`
	// MaxMessageBytes is the largest record the producer sends; keep it at
	// or below the topics' max.message.bytes. Default 1000000.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxInFlightBytes caps the bytes sent and not yet acknowledged; the
	// relay stops reading the log while it is reached. Default 64 MiB.
	MaxInFlightBytes int64 `yaml:"max_in_flight_bytes"`
	// Linger is how long the producer waits to fill a batch. Default 2ms:
	// under a backlog batches fill by size long before, and at a steady
	// 5k events/s it is most of the commit→ack latency (p50 ≈ linger;
	// docs/performance.md).
	Linger time.Duration `yaml:"linger"`
	// Retries of a failed produce request, in order (backing off from
	// 100ms to 2s), before the relay restarts from its checkpoint.
	// Default 1000: DeliveryTimeout bounds how long that may take.
	Retries int `yaml:"retries"`
	// DeliveryTimeout bounds how long records may wait for Kafka's answer
	// (while a partition has no leader, say) before the relay restarts
	// from its checkpoint. Default 2m.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
	// TransactionTimeout is the Kafka transaction timeout an exactly-once
	// producer asks for (transaction.timeout.ms). Default 1m.
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
	// TransactionalID makes the producer transactional (exactly-once);
	// set from relay.name, not configured. "" for at-least-once.
	TransactionalID string `yaml:"-"`
	// TLS to the brokers (security.go). Default off.
	TLS TLSConfig `yaml:"tls"`
	// SASL authentication (security.go). Default off.
	SASL SASLConfig `yaml:"sasl"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.ClientID == "" {
		c.ClientID = "outboxrelay"
	}
	if c.Version == "" {
		c.Version = "2.8.0"
	}
	if c.Compression == "" {
		c.Compression = "lz4"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 1000000
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = 64 << 20
	}
	if c.Linger == 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.Retries == 0 {
		c.Retries = 1000
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 2 * time.Minute
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = time.Minute
	}
}

// TransactionalID is the transactional.id of the exactly-once relay
// named name.
func TransactionalID(name string) string { return "outboxrelay-" + name }

// maxTopicName is Kafka's longest topic name; a record's in-flight weight
// counts it with the record.
const maxTopicName = 249

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: required"))
	}
	if _, err := sarama.ParseKafkaVersion(c.Version); err != nil {
		errs = append(errs, fmt.Errorf("version: %w", err))
	}
	if _, err := compression(c.Compression); err != nil {
		errs = append(errs, fmt.Errorf("compression: %w", err))
	}
	if c.MaxMessageBytes < 1024 {
		errs = append(errs, fmt.Errorf("max_message_bytes: %d is too small", c.MaxMessageBytes))
	}
	// A record weighs its size plus its topic name: the cap must hold the
	// largest record, or its Send would wait forever.
	if minCap := int64(c.MaxMessageBytes) + maxTopicName; c.MaxInFlightBytes < minCap {
		errs = append(errs, fmt.Errorf("max_in_flight_bytes: %d cannot hold a record of max_message_bytes (%d) and its topic name: make it at least %d (better several times that, so records overlap)", c.MaxInFlightBytes, c.MaxMessageBytes, minCap))
	}
	if c.Retries < 1 {
		errs = append(errs, fmt.Errorf("retries: %d: the idempotent producer needs at least 1", c.Retries))
	}
	if c.DeliveryTimeout < time.Second {
		errs = append(errs, fmt.Errorf("delivery_timeout: %s is too short (min 1s)", c.DeliveryTimeout))
	}
	if c.TransactionTimeout < time.Second || c.TransactionTimeout > 24*time.Hour {
		errs = append(errs, fmt.Errorf("transaction_timeout: %s: want 1s to 24h (and at most the brokers' transaction.max.timeout.ms)", c.TransactionTimeout))
	}
	errs = append(errs, c.validateSecurity()...)
	return errors.Join(errs...)
}

func compression(s string) (sarama.CompressionCodec, error) {
	switch s {
	case "none":
		return sarama.CompressionNone, nil
	case "gzip":
		return sarama.CompressionGZIP, nil
	case "snappy":
		return sarama.CompressionSnappy, nil
	case "lz4":
		return sarama.CompressionLZ4, nil
	case "zstd":
		return sarama.CompressionZSTD, nil
	}
	return 0, fmt.Errorf("%q is not one of none, gzip, snappy, lz4, zstd", s)
}

// saramaConfig builds the producer configuration. Idempotence with one open
// request per broker keeps per-partition (so per-key) order across retries.
func (c *Config) saramaConfig() (*sarama.Config, error) {
	sc := sarama.NewConfig()
	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return nil, err
	}
	sc.Version = v
	sc.ClientID = c.ClientID
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Retry.Max = c.Retries
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(100*time.Millisecond<<min(retries, 5), 2*time.Second)
	}
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = NewJavaHashPartitioner
	sc.Producer.MaxMessageBytes = c.MaxMessageBytes
	sc.Producer.Flush.Frequency = c.Linger
	sc.Producer.Flush.Bytes = 512 << 10
	sc.Producer.Compression, _ = compression(c.Compression)
	sc.Metadata.Retry.Max = 2
	sc.ChannelBufferSize = 1024
	c.transactional(sc)
	if err := c.applySecurity(sc); err != nil {
		return nil, err
	}
	return sc, nil
}
