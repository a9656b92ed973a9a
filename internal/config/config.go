// Package config loads the relay's YAML configuration, applies
// OUTBOXRELAY_* environment overrides, fills defaults and validates, naming
// the offending key in every error. Each component owns its own config
// struct; this package only composes them.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	ckafka "github.com/outboxrelay/outboxrelay/checkpoint/kafka"
	"github.com/outboxrelay/outboxrelay/internal/metrics"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/relay"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
	"github.com/outboxrelay/outboxrelay/source/kinds"
)

// EnvPrefix starts every environment override: OUTBOXRELAY_SOURCE_MYSQL_PASSWORD
// sets source.mysql.password.
const EnvPrefix = "OUTBOXRELAY_"

// Config is the whole configuration file.
type Config struct {
	// Source is the one pipeline's source; or see Pipelines.
	Source kinds.Config `yaml:"source"`
	// Pipelines lists named pipelines instead of Source (pipelines.go).
	Pipelines  []Pipeline    `yaml:"pipelines"`
	Outbox     outbox.Config `yaml:"outbox"`
	Kafka      kafka.Config  `yaml:"kafka"`
	Checkpoint Checkpoint    `yaml:"checkpoint"`
	Relay      relay.Config  `yaml:"relay"`
	Log        Log           `yaml:"log"`
	// Metrics serves /metrics, /healthz and /readyz (off by default).
	Metrics metrics.Config `yaml:"metrics"`
}

// Checkpoint selects and configures the checkpoint store.
type Checkpoint struct {
	// Type is "file" or "kafka". Default "file".
	Type  string        `yaml:"type"`
	File  file.Config   `yaml:"file"`
	Kafka ckafka.Config `yaml:"kafka"`
}

// Log configures logging.
type Log struct {
	// Level: debug, info, warn, error. Default "info".
	Level string `yaml:"level"`
	// Format: json or console. Default "json".
	Format string `yaml:"format"`
}

// Load reads path, applies the environment (KEY=VALUE entries, as from
// os.Environ), fills defaults and validates.
func Load(path string, environ []string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, environ)
}

// Parse is Load on bytes.
func Parse(b []byte, environ []string) (*Config, error) {
	var c Config
	// An unknown key is an error, not a silent no-op (yamlerrors.go).
	if err := decodeYAML(b, &c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := applyEnv(&c, environ); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, nil
}

// SetDefaults fills every component's defaults.
func (c *Config) SetDefaults() {
	c.Source.SetDefaults()
	for i := range c.Pipelines {
		c.Pipelines[i].Source.SetDefaults()
	}
	c.Outbox.SetDefaults()
	c.Kafka.SetDefaults()
	if c.Checkpoint.Type == "" {
		c.Checkpoint.Type = "file"
	}
	c.Checkpoint.Kafka.SetDefaults()
	c.Relay.SetDefaults()
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Metrics.SetDefaults()
}

// validateDelivery checks the settings exactly-once combines.
func (c *Config) validateDelivery() []error {
	if c.Relay.Delivery != relay.ExactlyOnce {
		return nil
	}
	var errs []error
	if c.Checkpoint.Type != "kafka" {
		errs = append(errs, fmt.Errorf("relay.delivery: exactly-once commits the position in the same Kafka transaction as the records: set checkpoint.type: kafka (not %s); `outboxrelay checkpoint import` moves a file checkpoint there", c.Checkpoint.Type))
	}
	if c.Relay.Name == "" && c.Checkpoint.Type == "kafka" {
		return errs // reported above
	}
	if c.Relay.Name == "" {
		errs = append(errs, errors.New("relay.name: required with relay.delivery exactly-once (it derives the transactional id)"))
	}
	if tt := c.Kafka.TransactionTimeout; c.Relay.CommitInterval*2 > tt {
		errs = append(errs, fmt.Errorf("relay.commit_interval: %s is more than half of kafka.transaction_timeout (%s): a transaction must have time to flush and commit before Kafka aborts it; lower the interval or raise the timeout", c.Relay.CommitInterval, tt))
	}
	// Under exactly-once the position moves only when a Kafka transaction
	// commits, so /readyz would report every healthy relay as stalled.
	if st := c.Metrics.StallTimeout; st < 2*c.Relay.CommitInterval {
		errs = append(errs, fmt.Errorf("metrics.stall_timeout: %s is less than twice relay.commit_interval (%s): with exactly-once the position moves only at commits, so a healthy relay would look stalled; raise the timeout or lower the interval", st, c.Relay.CommitInterval))
	}
	return errs
}

// validateHA checks what standby instances (relay.ha) combine.
func (c *Config) validateHA() []error {
	if !c.Relay.HA.Enabled {
		return nil
	}
	var errs []error
	if c.Checkpoint.Type != "kafka" {
		errs = append(errs, fmt.Errorf("relay.ha.enabled: standby instances share their position through Kafka: set checkpoint.type: kafka (not %s)", c.Checkpoint.Type))
	}
	if c.Relay.Delivery != relay.ExactlyOnce {
		// At-least-once has no fence: an ex-holder that was paused or cut
		// off would still write after the new holder, out of order.
		errs = append(errs, fmt.Errorf("relay.ha.enabled: needs relay.delivery: exactly-once (not %s): only the transactional producer's epoch stops an instance that lost the lease (paused, cut off) from writing after its successor", c.Relay.Delivery))
	}
	if c.Relay.Name == "" && c.Checkpoint.Type != "kafka" {
		errs = append(errs, errors.New("relay.name: required with relay.ha.enabled (it names the group, the lease topic and the transactional id)"))
	}
	return errs
}

// Validate checks every component, prefixing each error with its key.
func (c *Config) Validate() error {
	var errs []error
	prefix := func(key string, err error) {
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("%s.%s", key, line))
		}
	}
	if len(c.Pipelines) == 0 {
		prefix("source", c.Source.Validate())
	}
	errs = append(errs, c.validatePipelines()...)
	prefix("outbox", c.Outbox.Validate())
	prefix("kafka", c.Kafka.Validate())
	switch c.Checkpoint.Type {
	case "file":
		prefix("checkpoint.file", c.Checkpoint.File.Validate())
	case "kafka":
		prefix("checkpoint.kafka", c.Checkpoint.Kafka.Validate())
		if c.Relay.Name == "" {
			errs = append(errs, errors.New("relay.name: required with checkpoint.type kafka (it keys the relay's position in the positions topic)"))
		}
	default:
		errs = append(errs, fmt.Errorf("checkpoint.type: %q is not one of file, kafka", c.Checkpoint.Type))
	}
	prefix("relay", c.Relay.Validate())
	errs = append(errs, c.validateDelivery()...)
	errs = append(errs, c.validateHA()...)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not one of json, console", c.Log.Format))
	}
	prefix("metrics", c.Metrics.Validate())
	return errors.Join(errs...)
}
