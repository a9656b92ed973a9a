// Package outbox maps outbox rows to broker records: topic, key, value and
// headers, with Debezium EventRouter conventions as defaults, and decides
// what a row that cannot be mapped becomes (BadRowError, dead-letter
// records). It owns the mapping contract; it must not know which source
// produced a row or how the record is sent.
package outbox

import (
	"errors"
	"fmt"
	"sort"
	"strings"
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

// Field places one more column of the outbox row into the record.
type Field struct {
	// Column to copy. Required.
	Column string `yaml:"column"`
	// Placement: "header" or "envelope" (a key of the envelope value, see
	// Value). Default "header".
	Placement string `yaml:"placement"`
	// As is the header or envelope key. Default: the column name.
	As string `yaml:"as"`
}

// Mapping is what can differ between outbox tables.
type Mapping struct {
	Columns Columns `yaml:"columns"`
	// Topic is a template: ${column} is replaced by that column's value.
	// Without placeholders it is one fixed topic.
	// Default "outbox.event.${aggregatetype}" (with the configured column).
	Topic string `yaml:"topic"`
	// PayloadFormat: "bytes" (anything passes) or "json" (the payload must
	// be valid JSON, else the row is bad). Default "bytes".
	PayloadFormat string `yaml:"payload_format"`
	// Value: "payload" (the payload bytes unchanged) or "envelope" (a JSON
	// object with id, aggregatetype, aggregateid, type, payload and the
	// envelope fields). Default "payload".
	Value string `yaml:"value"`
	// Fields copies more columns into headers or the envelope.
	Fields []Field `yaml:"fields"`
	// TracingColumn names a column holding the trace context (Debezium's
	// "tracingspancontext": a W3C traceparent, or properties text with a
	// traceparent= line), copied into the "traceparent" header. Default
	// "" (off).
	TracingColumn string `yaml:"tracing_column"`
	// NullKey: "reject" (a NULL or empty key is a bad row) or "allow" (send
	// a null key; records of such rows then have no per-key order).
	// Default "reject".
	NullKey string `yaml:"null_key"`
	// TombstoneOnEmptyPayload turns a NULL or empty payload into a
	// tombstone (null value), as Debezium's
	// route.tombstone.on.empty.payload; when false such a row is bad.
	// Default false.
	TombstoneOnEmptyPayload bool `yaml:"tombstone_on_empty_payload"`
}

// Row policies.
const (
	PolicyFail       = "fail"
	PolicySkip       = "skip"
	PolicyDeadLetter = "dead-letter"
)

// Config of the mapping.
type Config struct {
	Mapping `yaml:",inline"`
	// OnBadRow: "fail" (stop at the row; default), "skip" (log and count,
	// go on) or "dead-letter" (send the row as JSON to DeadLetterTopic with
	// the error in headers, go on).
	OnBadRow string `yaml:"on_bad_row"`
	// DeadLetterTopic receives bad rows under on_bad_row: dead-letter.
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// Tables overrides the mapping per outbox table ("schema.table"): a set
	// key replaces the default one; columns are merged one by one.
	Tables map[string]Mapping `yaml:"tables"`
	// Cleanup deletes delivered rows (off by default; cleanup.go).
	Cleanup Cleanup `yaml:"cleanup"`
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	c.Mapping.setDefaults(nil)
	if c.OnBadRow == "" {
		c.OnBadRow = PolicyFail
	}
	c.Cleanup.SetDefaults()
	for name, m := range c.Tables {
		m.setDefaults(&c.Mapping)
		c.Tables[name] = m
	}
}

// setDefaults fills zero fields from base, or from the built-in defaults
// when base is nil.
func (m *Mapping) setDefaults(base *Mapping) {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	if base != nil {
		set(&m.Columns.ID, base.Columns.ID)
		set(&m.Columns.AggregateType, base.Columns.AggregateType)
		set(&m.Columns.AggregateID, base.Columns.AggregateID)
		set(&m.Columns.Type, base.Columns.Type)
		set(&m.Columns.Payload, base.Columns.Payload)
		set(&m.Topic, base.Topic)
		set(&m.PayloadFormat, base.PayloadFormat)
		set(&m.Value, base.Value)
		set(&m.TracingColumn, base.TracingColumn)
		set(&m.NullKey, base.NullKey)
		if m.Fields == nil {
			m.Fields = base.Fields
		}
		m.TombstoneOnEmptyPayload = m.TombstoneOnEmptyPayload || base.TombstoneOnEmptyPayload
		return
	}
	set(&m.Columns.ID, "id")
	set(&m.Columns.AggregateType, "aggregatetype")
	set(&m.Columns.AggregateID, "aggregateid")
	set(&m.Columns.Type, "type")
	set(&m.Columns.Payload, "payload")
	set(&m.Topic, "outbox.event.${"+m.Columns.AggregateType+"}")
	set(&m.PayloadFormat, "bytes")
	set(&m.Value, "payload")
	set(&m.NullKey, "reject")
	for i := range m.Fields {
		set(&m.Fields[i].Placement, "header")
		set(&m.Fields[i].As, m.Fields[i].Column)
	}
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	errs := c.Mapping.validate("")
	switch c.OnBadRow {
	case PolicyFail, PolicySkip:
	case PolicyDeadLetter:
		if c.DeadLetterTopic == "" {
			errs = append(errs, errors.New("dead_letter_topic: required with on_bad_row: dead-letter"))
		} else if err := validTopic([]byte(c.DeadLetterTopic)); err != nil {
			errs = append(errs, fmt.Errorf("dead_letter_topic: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("on_bad_row: %q is not one of fail, skip, dead-letter", c.OnBadRow))
	}
	if err := c.Cleanup.Validate(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			errs = append(errs, errors.New("cleanup."+e))
		}
	}
	names := make([]string, 0, len(c.Tables))
	for n := range c.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.Count(n, ".") != 1 {
			errs = append(errs, fmt.Errorf("tables.%s: want a \"schema.table\" name", n))
		}
		m := c.Tables[n]
		errs = append(errs, m.validate("tables."+n+".")...)
	}
	return errors.Join(errs...)
}

func (m *Mapping) validate(prefix string) []error {
	var errs []error
	for _, f := range []struct{ key, v string }{
		{"columns.id", m.Columns.ID},
		{"columns.aggregate_type", m.Columns.AggregateType},
		{"columns.aggregate_id", m.Columns.AggregateID},
		{"columns.type", m.Columns.Type},
		{"columns.payload", m.Columns.Payload},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s%s: required", prefix, f.key))
		}
	}
	if _, err := parseTemplate(m.Topic); err != nil {
		errs = append(errs, fmt.Errorf("%stopic: %w", prefix, err))
	}
	if m.PayloadFormat != "bytes" && m.PayloadFormat != "json" {
		errs = append(errs, fmt.Errorf("%spayload_format: %q is not one of bytes, json", prefix, m.PayloadFormat))
	}
	if m.Value != "payload" && m.Value != "envelope" {
		errs = append(errs, fmt.Errorf("%svalue: %q is not one of payload, envelope", prefix, m.Value))
	}
	if m.NullKey != "reject" && m.NullKey != "allow" {
		errs = append(errs, fmt.Errorf("%snull_key: %q is not one of reject, allow", prefix, m.NullKey))
	}
	for i, f := range m.Fields {
		switch {
		case f.Column == "":
			errs = append(errs, fmt.Errorf("%sfields[%d].column: required", prefix, i))
		case f.Placement != "header" && f.Placement != "envelope":
			errs = append(errs, fmt.Errorf("%sfields[%d].placement: %q is not one of header, envelope", prefix, i, f.Placement))
		case f.Placement == "envelope" && m.Value != "envelope":
			errs = append(errs, fmt.Errorf("%sfields[%d].placement: envelope needs value: envelope", prefix, i))
		}
	}
	return errs
}
