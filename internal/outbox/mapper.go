package outbox

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// Header names the relay sets.
const (
	HeaderID          = "id"
	HeaderType        = "type"
	HeaderPosition    = "outboxrelay-position" // the transaction's id in the source log
	HeaderIndex       = "outboxrelay-index"    // the record's index within its transaction
	HeaderSnapshot    = "outboxrelay-snapshot" // "true" on records of the initial snapshot (start: snapshot)
	HeaderTraceparent = "traceparent"
	// Dead-letter records carry these.
	HeaderError  = "outboxrelay-error"
	HeaderReason = "outboxrelay-reason"
	HeaderTable  = "outboxrelay-table"
)

// Reasons a row is bad (BadRowError.Reason; the bad-row metric's label).
const (
	ReasonMissingColumn = "missing_column"
	ReasonNullID        = "null_id"
	ReasonNullKey       = "null_key"
	ReasonNullPayload   = "null_payload"
	ReasonInvalidJSON   = "invalid_json"
	ReasonNotUTF8       = "not_utf8"
	ReasonBadTopic      = "bad_topic"
	ReasonTooLarge      = "too_large"
	ReasonShape         = "row_shape"
)

// BadRowError is a row the mapping cannot turn into a record. It names the
// table, the event id when known, the transaction's position, and why.
type BadRowError struct {
	Table   string
	EventID string
	TxID    string
	Index   int
	Reason  string // one of the Reason* codes
	Detail  string
}

func (e *BadRowError) Error() string {
	id := e.EventID
	if id == "" {
		id = "unknown"
	}
	return fmt.Sprintf("bad outbox row in %s (event id %s, transaction at %s, row %d): %s", e.Table, id, e.TxID, e.Index, e.Detail)
}

// Mapper turns outbox rows into records. It is safe for use by one goroutine.
type Mapper struct {
	cfg      Config
	base     *rules
	perTable map[string]*rules
	layouts  map[*schema.Table]*layout
	arena    arena
}

// rules is one table's effective mapping.
type rules struct {
	Mapping
	topic template
}

// layout is the column indexes of one table layout under its rules.
type layout struct {
	r                                *rules
	id, aggType, aggID, typ, payload int
	tracing                          int               // -1: none
	fields                           []int             // per rules.Fields
	topicCols                        []int             // per template part; -1 for literals
	topics                           map[string]string // rendered topics, validated
	err                              error             // the layout lacks a needed column
}

// New validates cfg (after defaults) and returns a Mapper.
func New(cfg Config) (*Mapper, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mk := func(m Mapping) *rules {
		t, _ := parseTemplate(m.Topic)
		return &rules{Mapping: m, topic: t}
	}
	mp := &Mapper{cfg: cfg, base: mk(cfg.Mapping), perTable: map[string]*rules{}, layouts: map[*schema.Table]*layout{}}
	for name, m := range cfg.Tables {
		mp.perTable[name] = mk(m)
	}
	return mp, nil
}

// Policy is the configured on_bad_row policy.
func (m *Mapper) Policy() string { return m.cfg.OnBadRow }

func (m *Mapper) layout(t *schema.Table) *layout {
	if l, ok := m.layouts[t]; ok {
		return l
	}
	r := m.base
	if o, ok := m.perTable[t.FullName()]; ok {
		r = o
	}
	l := &layout{
		r:       r,
		id:      t.Index(r.Columns.ID),
		aggType: t.Index(r.Columns.AggregateType),
		aggID:   t.Index(r.Columns.AggregateID),
		typ:     t.Index(r.Columns.Type),
		payload: t.Index(r.Columns.Payload),
		tracing: -1,
	}
	var missing []string
	need := func(name string, idx int) {
		if idx < 0 {
			missing = append(missing, name)
		}
	}
	need(r.Columns.ID, l.id)
	need(r.Columns.AggregateID, l.aggID)
	need(r.Columns.Type, l.typ)
	need(r.Columns.Payload, l.payload)
	if r.Value == "envelope" {
		need(r.Columns.AggregateType, l.aggType)
	}
	if r.TracingColumn != "" {
		l.tracing = t.Index(r.TracingColumn)
		need(r.TracingColumn, l.tracing)
	}
	for _, f := range r.Fields {
		idx := t.Index(f.Column)
		need(f.Column, idx)
		l.fields = append(l.fields, idx)
	}
	for _, p := range r.topic.parts {
		idx := -1
		if p.column != "" {
			idx = t.Index(p.column)
			need(p.column, idx)
		}
		l.topicCols = append(l.topicCols, idx)
	}
	if len(missing) > 0 {
		l.err = fmt.Errorf("table %s lacks the configured column(s) %v; it has %v: fix the outbox mapping (columns, topic, fields) or the table", t.FullName(), missing, t.Columns)
	}
	if len(m.layouts) > 1024 {
		clear(m.layouts)
	}
	m.layouts[t] = l
	return l
}

// CheckTable reports whether rows of t can be mapped at all (its columns),
// so that a missing column is found at start rather than at the first row.
func (m *Mapper) CheckTable(t *schema.Table) error {
	l := m.layout(t)
	if l.err != nil {
		return l.err
	}
	// Types are known when the layout came from the catalog: a column the
	// mapping reads must hold text or bytes (numbers are written as text).
	if len(t.Types) != len(t.Columns) {
		return nil
	}
	used := append([]int{l.id, l.aggID, l.typ, l.payload, l.aggType, l.tracing}, l.fields...)
	used = append(used, l.topicCols...)
	for _, i := range used {
		if i >= 0 && unusableTypes[t.Types[i]] {
			return fmt.Errorf("table %s: column %s is of type %s, which the relay cannot turn into a key, header or value: use a text, binary or numeric column", t.FullName(), t.Columns[i], t.Types[i])
		}
	}
	return nil
}

// unusableTypes are column types (as MySQL's DATA_TYPE or Postgres' typname
// names them) that carry neither text nor bytes the relay could send.
var unusableTypes = map[string]bool{
	"geometry": true, "point": true, "linestring": true, "polygon": true, "multipoint": true,
	"multilinestring": true, "multipolygon": true, "geometrycollection": true, "bit": true,
	"line": true, "lseg": true, "box": true, "path": true, "circle": true, "varbit": true,
	"tsvector": true, "tsquery": true,
}

// Map returns the record for one outbox row of transaction txID at index
// idx within it.
func (m *Mapper) Map(row source.Row, txID string, idx int, commit time.Time) (sink.Record, error) {
	var rec sink.Record
	l := m.layout(row.Table)
	r := l.r
	bad := func(eventID, reason, detail string) error {
		return &BadRowError{Table: row.Table.FullName(), EventID: eventID, TxID: txID, Index: idx, Reason: reason, Detail: detail}
	}
	if l.err != nil {
		return rec, bad("", ReasonMissingColumn, l.err.Error())
	}
	if len(row.Values) != len(row.Table.Columns) {
		return rec, bad("", ReasonShape, fmt.Sprintf("row has %d values for %d columns", len(row.Values), len(row.Table.Columns)))
	}
	id, idNull := toBytes(row.Values[l.id])
	if idNull {
		return rec, bad("", ReasonNullID, fmt.Sprintf("column %s (event id) is NULL", r.Columns.ID))
	}
	key, keyNull := toBytes(row.Values[l.aggID])
	switch {
	case keyNull || len(key) == 0:
		if r.NullKey != "allow" {
			return rec, bad(string(id), ReasonNullKey, fmt.Sprintf("column %s (the record key) is NULL or empty; set null_key: allow to send a null key (per-key order is then lost)", r.Columns.AggregateID))
		}
		key = nil
	case !utf8.Valid(key):
		return rec, bad(string(id), ReasonNotUTF8, fmt.Sprintf("column %s (the record key) is not valid UTF-8", r.Columns.AggregateID))
	}
	topic, reason, err := m.renderTopic(l, row.Values)
	if err != nil {
		return rec, bad(string(id), reason, err.Error())
	}
	payload, payloadNull := toBytes(row.Values[l.payload])
	var value []byte
	switch {
	case payloadNull || len(payload) == 0:
		if !r.TombstoneOnEmptyPayload {
			return rec, bad(string(id), ReasonNullPayload, fmt.Sprintf("column %s (the payload) is NULL or empty; set tombstone_on_empty_payload: true to send a tombstone", r.Columns.Payload))
		}
	case r.PayloadFormat == "json" && !json.Valid(payload):
		return rec, bad(string(id), ReasonInvalidJSON, fmt.Sprintf("column %s is not valid JSON (payload_format: json)", r.Columns.Payload))
	default:
		value = payload
	}
	typ, _ := toBytes(row.Values[l.typ])
	if value != nil && r.Value == "envelope" {
		value = m.envelope(l, row.Values, id, key, typ, payload)
	}
	rec = sink.Record{Topic: topic, Key: key, Value: value}
	rec.Headers = m.arena.headers(4 + len(r.Fields) + 1)
	rec.Headers = append(rec.Headers, sink.Header{Key: HeaderID, Value: id}, sink.Header{Key: HeaderType, Value: typ})
	for i, f := range r.Fields {
		if f.Placement != "header" {
			continue
		}
		if v, null := toBytes(row.Values[l.fields[i]]); !null {
			rec.Headers = append(rec.Headers, sink.Header{Key: f.As, Value: v})
		}
	}
	if l.tracing >= 0 {
		if v, null := toBytes(row.Values[l.tracing]); !null {
			if tp := traceparent(v); tp != nil {
				rec.Headers = append(rec.Headers, sink.Header{Key: HeaderTraceparent, Value: tp})
			}
		}
	}
	rec.Headers = append(rec.Headers,
		sink.Header{Key: HeaderPosition, Value: m.arena.txID(txID)},
		sink.Header{Key: HeaderIndex, Value: m.arena.int(idx)})
	if !commit.IsZero() {
		rec.TimestampMs = commit.UnixMilli()
	}
	return rec, nil
}

// envelope wraps the payload with the event's metadata as one JSON object.
func (m *Mapper) envelope(l *layout, vals []any, id, key, typ, payload []byte) []byte {
	r := l.r
	aggType, _ := toBytes(vals[l.aggType])
	obj := []byte(`{"id":`)
	obj = appendJSONString(obj, id)
	obj = append(obj, `,"aggregatetype":`...)
	obj = appendJSONString(obj, aggType)
	obj = append(obj, `,"aggregateid":`...)
	obj = appendJSONString(obj, key)
	obj = append(obj, `,"type":`...)
	obj = appendJSONString(obj, typ)
	for i, f := range r.Fields {
		if f.Placement != "envelope" {
			continue
		}
		obj = append(obj, ',')
		obj = appendJSONString(obj, []byte(f.As))
		obj = append(obj, ':')
		if v, null := toBytes(vals[l.fields[i]]); null {
			obj = append(obj, "null"...)
		} else {
			obj = appendJSONString(obj, v)
		}
	}
	obj = append(obj, `,"payload":`...)
	if r.PayloadFormat == "json" {
		obj = append(obj, payload...)
	} else {
		obj = appendJSONString(obj, payload)
	}
	return append(obj, '}')
}

func appendJSONString(b, s []byte) []byte {
	enc, _ := json.Marshal(string(s)) // never fails for a string
	return append(b, enc...)
}

var traceparentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// traceparent extracts a W3C traceparent from a tracing column: the value
// itself, or a "traceparent=…" line of Debezium's properties text.
func traceparent(v []byte) []byte {
	s := strings.TrimSpace(string(v))
	if traceparentRE.MatchString(s) {
		return []byte(s)
	}
	for _, line := range strings.Split(s, "\n") {
		if k, val, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.TrimSpace(k) == "traceparent" {
			if val = strings.TrimSpace(val); traceparentRE.MatchString(val) {
				return []byte(val)
			}
		}
	}
	return nil
}

func (m *Mapper) renderTopic(l *layout, vals []any) (string, string, error) {
	r := l.r
	if len(r.topic.parts) == 1 && l.topicCols[0] < 0 {
		return r.topic.parts[0].lit, "", nil
	}
	b := m.arena.scratch[:0]
	for i, p := range r.topic.parts {
		if l.topicCols[i] < 0 {
			b = append(b, p.lit...)
			continue
		}
		v, null := toBytes(vals[l.topicCols[i]])
		if null || len(v) == 0 {
			return "", ReasonBadTopic, fmt.Errorf("column %s (used in the topic) is NULL or empty", p.column)
		}
		if !utf8.Valid(v) {
			return "", ReasonNotUTF8, fmt.Errorf("column %s (used in the topic) is not valid UTF-8", p.column)
		}
		b = append(b, v...)
	}
	m.arena.scratch = b
	// Topics repeat: validate and allocate each one once.
	if t, ok := l.topics[string(b)]; ok {
		return t, "", nil
	}
	if err := validTopic(b); err != nil {
		return "", ReasonBadTopic, err
	}
	if l.topics == nil || len(l.topics) >= 1024 {
		l.topics = make(map[string]string)
	}
	t := string(b)
	l.topics[t] = t
	return t, "", nil
}

// DeadLetter is the record that stands for a bad row under on_bad_row:
// dead-letter: every column as a JSON object (bytes as strings when valid
// UTF-8, else base64), the error in headers, keyed by the event id. With
// dropPayload the payload column is left out (the row was too large).
func (m *Mapper) DeadLetter(row source.Row, bad *BadRowError, dropPayload bool) sink.Record {
	l := m.layout(row.Table)
	obj := make(map[string]any, len(row.Values))
	for i, c := range row.Table.Columns {
		if i >= len(row.Values) {
			break
		}
		if dropPayload && i == l.payload {
			obj[c] = "(left out: the row was too large)"
			continue
		}
		switch v := row.Values[i].(type) {
		case []byte:
			if utf8.Valid(v) {
				obj[c] = string(v)
			} else {
				obj[c] = v // base64 by encoding/json
			}
		default:
			obj[c] = v
		}
	}
	value, err := json.Marshal(obj)
	if err != nil {
		value = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	rec := sink.Record{
		Topic: m.cfg.DeadLetterTopic,
		Value: value,
		Headers: []sink.Header{
			{Key: HeaderError, Value: []byte(bad.Error())},
			{Key: HeaderReason, Value: []byte(bad.Reason)},
			{Key: HeaderTable, Value: []byte(bad.Table)},
			{Key: HeaderPosition, Value: []byte(bad.TxID)},
			{Key: HeaderIndex, Value: strconv.AppendInt(nil, int64(bad.Index), 10)},
		},
	}
	if bad.EventID != "" {
		rec.Key = []byte(bad.EventID)
		rec.Headers = append(rec.Headers, sink.Header{Key: HeaderID, Value: []byte(bad.EventID)})
	}
	return rec
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
		// Share the string's bytes: nothing downstream writes to a
		// record's bytes, and the copy was a visible share of the CPU.
		return unsafe.Slice(unsafe.StringData(x), len(x)), false
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
