package outbox

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Header names the relay sets on every record.
const (
	HeaderID       = "id"
	HeaderType     = "type"
	HeaderPosition = "outboxrelay-position" // the transaction's id in the source log
	HeaderIndex    = "outboxrelay-index"    // the record's index within its transaction
)

// BadRowError is a row the mapping cannot turn into a record. It names the
// table, the event id when known, and the reason.
type BadRowError struct {
	Table   string
	EventID string
	TxID    string
	Index   int
	Reason  string
}

func (e *BadRowError) Error() string {
	id := e.EventID
	if id == "" {
		id = "unknown"
	}
	return fmt.Sprintf("bad outbox row in %s (event id %s, transaction at %s, row %d): %s", e.Table, id, e.TxID, e.Index, e.Reason)
}

// Mapper turns outbox rows into records. It is safe for use by one goroutine.
type Mapper struct {
	cfg     Config
	topic   template
	layouts map[*schema.Table]*layout
}

// layout is the column indexes of one table layout.
type layout struct {
	id, aggType, aggID, typ, payload int
	topicCols                        []int // per template part; -1 for literals
	err                              error // the layout lacks a needed column
}

// New validates cfg (after defaults) and returns a Mapper.
func New(cfg Config) (*Mapper, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, _ := parseTemplate(cfg.Topic)
	return &Mapper{cfg: cfg, topic: t, layouts: make(map[*schema.Table]*layout)}, nil
}

func (m *Mapper) layout(t *schema.Table) *layout {
	if l, ok := m.layouts[t]; ok {
		return l
	}
	l := &layout{
		id:      t.Index(m.cfg.Columns.ID),
		aggType: t.Index(m.cfg.Columns.AggregateType),
		aggID:   t.Index(m.cfg.Columns.AggregateID),
		typ:     t.Index(m.cfg.Columns.Type),
		payload: t.Index(m.cfg.Columns.Payload),
	}
	var missing []string
	for _, c := range []struct {
		name string
		idx  int
	}{{m.cfg.Columns.ID, l.id}, {m.cfg.Columns.AggregateID, l.aggID}, {m.cfg.Columns.Type, l.typ}, {m.cfg.Columns.Payload, l.payload}} {
		if c.idx < 0 {
			missing = append(missing, c.name)
		}
	}
	for _, p := range m.topic.parts {
		idx := -1
		if p.column != "" {
			if idx = t.Index(p.column); idx < 0 {
				missing = append(missing, p.column)
			}
		}
		l.topicCols = append(l.topicCols, idx)
	}
	if len(missing) > 0 {
		l.err = fmt.Errorf("table %s lacks the configured column(s) %v; it has %v: fix outbox.columns / outbox.topic or the table", t.FullName(), missing, t.Columns)
	}
	if len(m.layouts) > 1024 {
		clear(m.layouts)
	}
	m.layouts[t] = l
	return l
}

// Map returns the record for one outbox row of transaction txID at index
// idx within it.
func (m *Mapper) Map(row source.Row, txID string, idx int, commit time.Time) (sink.Record, error) {
	var rec sink.Record
	l := m.layout(row.Table)
	bad := func(eventID, reason string) error {
		return &BadRowError{Table: row.Table.FullName(), EventID: eventID, TxID: txID, Index: idx, Reason: reason}
	}
	if l.err != nil {
		return rec, bad("", l.err.Error())
	}
	if len(row.Values) != len(row.Table.Columns) {
		return rec, bad("", fmt.Sprintf("row has %d values for %d columns", len(row.Values), len(row.Table.Columns)))
	}
	id, idNull := toBytes(row.Values[l.id])
	eventID := string(id)
	if idNull {
		return rec, bad("", fmt.Sprintf("column %s (event id) is NULL", m.cfg.Columns.ID))
	}
	key, keyNull := toBytes(row.Values[l.aggID])
	if keyNull || len(key) == 0 {
		return rec, bad(eventID, fmt.Sprintf("column %s (the record key) is NULL or empty", m.cfg.Columns.AggregateID))
	}
	topic, err := m.renderTopic(l, row.Values)
	if err != nil {
		return rec, bad(eventID, err.Error())
	}
	typ, _ := toBytes(row.Values[l.typ])
	value, valueNull := toBytes(row.Values[l.payload])
	if valueNull {
		value = nil
	}
	rec = sink.Record{
		Topic: topic,
		Key:   key,
		Value: value,
		Headers: []sink.Header{
			{Key: HeaderID, Value: id},
			{Key: HeaderType, Value: typ},
			{Key: HeaderPosition, Value: []byte(txID)},
			{Key: HeaderIndex, Value: strconv.AppendInt(nil, int64(idx), 10)},
		},
	}
	if !commit.IsZero() {
		rec.TimestampMs = commit.UnixMilli()
	}
	return rec, nil
}

func (m *Mapper) renderTopic(l *layout, vals []any) (string, error) {
	if len(m.topic.parts) == 1 && l.topicCols[0] < 0 {
		return m.topic.parts[0].lit, nil
	}
	var b []byte
	for i, p := range m.topic.parts {
		if l.topicCols[i] < 0 {
			b = append(b, p.lit...)
			continue
		}
		v, null := toBytes(vals[l.topicCols[i]])
		if null || len(v) == 0 {
			return "", fmt.Errorf("column %s (used in the topic) is NULL or empty", p.column)
		}
		if !utf8.Valid(v) {
			return "", fmt.Errorf("column %s (used in the topic) is not valid UTF-8", p.column)
		}
		b = append(b, v...)
	}
	if err := validTopic(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// validTopic applies Kafka's topic name rules, so a bad name is a bad row
// rather than a broker error far from its cause.
func validTopic(name []byte) error {
	if len(name) > 249 {
		return fmt.Errorf("topic %q is longer than Kafka's 249 characters", name)
	}
	if string(name) == "." || string(name) == ".." {
		return fmt.Errorf("topic %q is not allowed by Kafka", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic %q has a character Kafka rejects (allowed: letters, digits, '.', '_', '-')", name)
		}
	}
	return nil
}

// toBytes renders a decoded column value as bytes; null reports SQL NULL.
func toBytes(v any) (b []byte, null bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case []byte:
		return x, false
	case string:
		return []byte(x), false
	case int64:
		return strconv.AppendInt(nil, x, 10), false
	case int32:
		return strconv.AppendInt(nil, int64(x), 10), false
	case int16:
		return strconv.AppendInt(nil, int64(x), 10), false
	case int8:
		return strconv.AppendInt(nil, int64(x), 10), false
	case int:
		return strconv.AppendInt(nil, int64(x), 10), false
	case uint64:
		return strconv.AppendUint(nil, x, 10), false
	case uint32:
		return strconv.AppendUint(nil, uint64(x), 10), false
	case uint16:
		return strconv.AppendUint(nil, uint64(x), 10), false
	case uint8:
		return strconv.AppendUint(nil, uint64(x), 10), false
	case float64:
		return strconv.AppendFloat(nil, x, 'g', -1, 64), false
	case float32:
		return strconv.AppendFloat(nil, float64(x), 'g', -1, 32), false
	case fmt.Stringer:
		return []byte(x.String()), false
	default:
		return fmt.Append(nil, x), false
	}
}
