// Package kafka stores checkpoints in a compacted Kafka topic, keyed by the
// relay's name: a relay needs no persistent volume, and an exactly-once
// relay commits its position in the same Kafka transaction as the records
// it covers.
package kafka

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultTopic holds the positions of every relay of a cluster.
const DefaultTopic = "outboxrelay.positions"

// Config of the Kafka store (checkpoint.kafka). The brokers, TLS and SASL
// are the sink's (kafka.*).
type Config struct {
	// Topic is the compacted, single-partition positions topic; created
	// when missing. Default outboxrelay.positions.
	Topic string `yaml:"topic"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	if c.Topic == "" {
		return errors.New("topic: required")
	}
	if len(c.Topic) > 249 || strings.Trim(c.Topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || c.Topic == "." || c.Topic == ".." {
		return fmt.Errorf("topic: %q is not a valid Kafka topic name (letters, digits, '.', '_', '-'; at most 249)", c.Topic)
	}
	return nil
}
