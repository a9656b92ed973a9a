// Package metrics is the relay's operational surface: Prometheus metrics
// (outboxrelay_*), /healthz and /readyz for Kubernetes probes, and the
// readiness state behind them.
//
// It measures the pipeline from the outside, through decorators of the
// relay's source, sink and checkpoint store and through the relay's
// Observer, so the pipeline itself (internal/relay) knows nothing about
// metrics. It must not change what the components it wraps do: every
// decorator passes calls and results through unchanged.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config of the metrics endpoint.
type Config struct {
	// Listen is the host:port of the HTTP endpoint serving /metrics,
	// /healthz and /readyz. Default "" (off). Use 127.0.0.1:PORT unless
	// something outside the host (Prometheus, kubelet probes) must reach it.
	Listen string `yaml:"listen"`
	// StallTimeout is how long the checkpoint may stand still while records
	// are in flight before /readyz reports the relay as stuck. Default 60s.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// StatusInterval is how often the relay asks the database how far its
	// checkpoint is behind the end of the log (bytes behind, WAL retained).
	// Default 15s.
	StatusInterval time.Duration `yaml:"status_interval"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.StallTimeout == 0 {
		c.StallTimeout = 60 * time.Second
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 15 * time.Second
	}
}

// Enabled reports whether the endpoint is on.
func (c *Config) Enabled() bool { return c.Listen != "" }

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("listen: %q is not host:port (e.g. 127.0.0.1:9464, or :9464 for every interface)", c.Listen))
		}
	}
	if c.StallTimeout < time.Second {
		errs = append(errs, fmt.Errorf("stall_timeout: %s is too short (min 1s)", c.StallTimeout))
	}
	if c.StatusInterval < time.Second {
		errs = append(errs, fmt.Errorf("status_interval: %s is too short (min 1s)", c.StatusInterval))
	}
	return errors.Join(errs...)
}
