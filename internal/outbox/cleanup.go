package outbox

import (
	"errors"
	"fmt"
	"time"
)

// Cleanup configures the deletion of delivered outbox rows (outbox.cleanup),
// which `outboxrelay run` does on a database connection of its own (see
// internal/cleanup for the rule that keeps it from deleting a row whose
// record is not durable yet).
type Cleanup struct {
	// Enabled turns the cleanup on. Default false.
	Enabled bool `yaml:"enabled"`
	// Retention is the minimum age of a row before it is deleted (by
	// Column, on the database's clock). Default 24h.
	Retention time.Duration `yaml:"retention"`
	// BatchSize is how many rows one DELETE removes at most. Default 1000.
	BatchSize int `yaml:"batch_size"`
	// Interval is the pause between rounds when a round found less than a
	// full batch to delete. Default 1m.
	Interval time.Duration `yaml:"interval"`
	// Column holds each row's creation time; cleanup and `republish
	// --since/--until` read it. Default "created_at".
	Column string `yaml:"column"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Cleanup) SetDefaults() {
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.Column == "" {
		c.Column = "created_at"
	}
}

// Validate names the field at fault (without the outbox.cleanup prefix).
func (c *Cleanup) Validate() error {
	var errs []error
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention: %s must not be negative", c.Retention))
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("batch_size: %d is not between 1 and 10000 (small batches keep each DELETE's locks short)", c.BatchSize))
	}
	if c.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval: %s is too short (min 100ms)", c.Interval))
	}
	if c.Column == "" {
		errs = append(errs, errors.New("column: required"))
	}
	return errors.Join(errs...)
}

// IDColumn is the event id column of table ("schema.table"): its own
// override, else the default mapping's.
func (c *Config) IDColumn(table string) string {
	if m, ok := c.Tables[table]; ok && m.Columns.ID != "" {
		return m.Columns.ID
	}
	if c.Columns.ID != "" {
		return c.Columns.ID
	}
	return "id"
}
