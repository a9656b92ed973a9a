// Package outbox maps outbox rows to broker records: topic, key, value and
// headers, with Debezium EventRouter conventions as defaults. It owns the
// mapping contract; it must not know which source produced a row or how the
// record is sent.
package outbox

import (
	"errors"
	"fmt"
)

// Columns names the outbox table's columns. Defaults follow Debezium's
// EventRouter.
type Columns struct {
	// ID is the event id, copied into the "id" header. Default "id".
	ID string `yaml:"id"`
	// AggregateType usually names the topic. Default "aggregatetype".
	AggregateType string `yaml:"aggregate_type"`
	// AggregateID is the record key. Default "aggregateid".
	AggregateID string `yaml:"aggregate_id"`
	// Type is copied into the "type" header. Default "type".
	Type string `yaml:"type"`
	// Payload is the record value, bytes unchanged. Default "payload".
	Payload string `yaml:"payload"`
}

// Config of the mapping.
type Config struct {
	Columns Columns `yaml:"columns"`
	// Topic is a template: ${column} is replaced by that column's value.
	// Without placeholders it is one fixed topic.
	// Default "outbox.event.${aggregatetype}" (with the configured column).
	Topic string `yaml:"topic"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Columns.ID, "id")
	set(&c.Columns.AggregateType, "aggregatetype")
	set(&c.Columns.AggregateID, "aggregateid")
	set(&c.Columns.Type, "type")
	set(&c.Columns.Payload, "payload")
	set(&c.Topic, "outbox.event.${"+c.Columns.AggregateType+"}")
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	for _, f := range []struct{ key, v string }{
		{"columns.id", c.Columns.ID},
		{"columns.aggregate_type", c.Columns.AggregateType},
		{"columns.aggregate_id", c.Columns.AggregateID},
		{"columns.type", c.Columns.Type},
		{"columns.payload", c.Columns.Payload},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s: required", f.key))
		}
	}
	if _, err := parseTemplate(c.Topic); err != nil {
		errs = append(errs, fmt.Errorf("topic: %w", err))
	}
	return errors.Join(errs...)
}
