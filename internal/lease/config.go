// Package lease hands the relay's pipelines to the instances that run
// them, through a Kafka consumer group on a lease topic: the group's
// assignment of the topic's partitions says which instance streams which
// pipeline (partition i is pipeline i). It owns membership only; the
// fence that keeps an ex-holder from writing is the pipeline's
// transactional producer epoch (sink/kafka), not this package. It must
// not know what a pipeline does.
package lease

import (
	"errors"
	"fmt"
	"time"
)

// Config is relay.ha.
type Config struct {
	// Enabled coordinates every instance with the same relay.name through
	// a Kafka consumer group: one streams each pipeline, the others stand
	// by. Needs checkpoint.type kafka and relay.delivery exactly-once.
	// Default false.
	Enabled bool `yaml:"enabled"`
	// Topic is the lease topic whose partitions the group assigns (one
	// per pipeline; created if missing). Default
	// "outboxrelay.lease.<relay.name>".
	Topic string `yaml:"topic"`
	// SessionTimeout is how long the group waits for the heartbeat of an
	// instance that vanished (SIGKILL, a lost node, a network partition)
	// before it moves its pipelines. Default 10s; Kafka brokers accept
	// 6s to 30m unless group.min/max.session.timeout.ms say otherwise.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// HeartbeatInterval is how often an instance tells the group it is
	// alive; it is also how soon a standby learns of a rebalance. Default
	// 1s; at most a third of session_timeout.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
}

// DefaultTopic is the lease topic of relay name.
func DefaultTopic(name string) string { return "outboxrelay.lease." + name }

// GroupID is the consumer group of relay name.
func GroupID(name string) string { return "outboxrelay." + name }

// SetDefaults fills the zero fields (Topic needs the relay's name: see
// DefaultTopic).
func (c *Config) SetDefaults() {
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	if c.SessionTimeout < time.Second || c.SessionTimeout > 30*time.Minute {
		errs = append(errs, fmt.Errorf("session_timeout: %s: want 1s to 30m (and within the brokers' group.min.session.timeout.ms, 6s by default, and group.max.session.timeout.ms)", c.SessionTimeout))
	}
	if c.HeartbeatInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("heartbeat_interval: %s is too short (min 10ms)", c.HeartbeatInterval))
	} else if c.HeartbeatInterval*3 > c.SessionTimeout {
		errs = append(errs, fmt.Errorf("heartbeat_interval: %s is more than a third of session_timeout (%s): one late heartbeat would cost the lease; lower it or raise session_timeout", c.HeartbeatInterval, c.SessionTimeout))
	}
	if c.Topic != "" && !validTopic(c.Topic) {
		errs = append(errs, fmt.Errorf("topic: %q: use letters, digits, '.', '_' and '-' (at most 249)", c.Topic))
	}
	return errors.Join(errs...)
}

func validTopic(s string) bool {
	if len(s) == 0 || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
