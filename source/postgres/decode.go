package postgres

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// byteaOID is the type OID of bytea, the only type whose text form is
// decoded (hex → raw bytes).
const byteaOID = 17

// MessageSchema is the schema name of the synthetic tables that carry
// logical decoding messages: "message.<prefix>".
const MessageSchema = "message"

// relation is what the decoder keeps per relation id of the stream.
type relation struct {
	table   *schema.Table
	include bool
	bytea   []bool // per column
}

// decoder turns pgoutput messages into rows. It is used by one goroutine.
type decoder struct {
	filter   *schema.Filter // nil: no outbox tables, only messages
	prefixes map[string]bool
	rels     map[uint32]*relation
	known    *schema.Cache            // one *Table per layout, a new one after ALTER TABLE
	messages map[string]*schema.Table // by prefix and key list
}

func newDecoder(filter *schema.Filter, prefixes []string) *decoder {
	d := &decoder{
		filter:   filter,
		prefixes: make(map[string]bool, len(prefixes)),
		rels:     make(map[uint32]*relation),
		known:    schema.NewCache(),
		messages: make(map[string]*schema.Table),
	}
	for _, p := range prefixes {
		d.prefixes[p] = true
	}
	return d
}

// relation records a Relation message. A new column layout gets a new
// *schema.Table; an unchanged one keeps the old pointer so that caches
// downstream hold.
func (d *decoder) relation(m *pglogrepl.RelationMessage) {
	rel := &relation{
		include: d.filter != nil && d.filter.Match(m.Namespace, m.RelationName),
		bytea:   make([]bool, len(m.Columns)),
	}
	cols := make([]string, len(m.Columns))
	for i, c := range m.Columns {
		cols[i] = c.Name
		rel.bytea[i] = c.DataType == byteaOID
	}
	rel.table = d.known.Layout(m.Namespace, m.RelationName, cols)
	d.rels[m.RelationID] = rel
}

// insert turns an Insert message of an outbox table into a row.
func (d *decoder) insert(rel *relation, m *pglogrepl.InsertMessage) (source.Row, error) {
	t := rel.table
	if m.Tuple == nil || len(m.Tuple.Columns) != len(t.Columns) {
		n := 0
		if m.Tuple != nil {
			n = len(m.Tuple.Columns)
		}
		return source.Row{}, fmt.Errorf("insert into %s has %d columns, its relation message %d", t.FullName(), n, len(t.Columns))
	}
	vals := make([]any, len(t.Columns))
	for i, c := range m.Tuple.Columns {
		v, err := rel.value(i, c.DataType, c.Data) // pglogrepl copied Data out of the receive buffer
		if err != nil {
			return source.Row{}, err
		}
		vals[i] = v
	}
	return source.Row{Table: t, Values: vals}, nil
}

// value converts column i of a tuple: kind is pgoutput's tuple data kind,
// data the column's bytes (which the row keeps).
func (rel *relation) value(i int, kind uint8, data []byte) (any, error) {
	switch kind {
	case pglogrepl.TupleDataTypeNull:
		return nil, nil
	case pglogrepl.TupleDataTypeText:
		if rel.bytea[i] {
			b, err := decodeBytea(data)
			if err != nil {
				return nil, fmt.Errorf("insert into %s, column %s: %w", rel.table.FullName(), rel.table.Columns[i], err)
			}
			return b, nil
		}
		return data, nil
	case pglogrepl.TupleDataTypeBinary:
		return data, nil
	}
	return nil, fmt.Errorf("insert into %s, column %s: unexpected tuple data kind %q", rel.table.FullName(), rel.table.Columns[i], kind)
}

// insertTuple is insert straight from an Insert message's bytes ('I',
// relation id, 'N', column count, columns), which the stream uses instead
// of pglogrepl.Parse: that allocates a message, a tuple and a column per
// value and copies each value byte by byte, a large share of the relay's
// CPU in profiles. Here the tuple is copied once (data is the connection's
// receive buffer, reused by the next message) and the values are slices of
// that copy. It never panics on malformed input.
func (d *decoder) insertTuple(rel *relation, data []byte) (source.Row, error) {
	t := rel.table
	if len(data) < 8 || data[0] != byte(pglogrepl.MessageTypeInsert) || data[5] != 'N' {
		return source.Row{}, fmt.Errorf("insert into %s: malformed insert message (%d bytes)", t.FullName(), len(data))
	}
	n := int(binary.BigEndian.Uint16(data[6:8]))
	if n != len(t.Columns) {
		return source.Row{}, fmt.Errorf("insert into %s has %d columns, its relation message %d", t.FullName(), n, len(t.Columns))
	}
	buf := bytes.Clone(data[8:])
	vals := make([]any, n)
	truncated := func(i int) error {
		return fmt.Errorf("insert into %s, column %s: truncated insert message", t.FullName(), t.Columns[i])
	}
	p := 0
	for i := 0; i < n; i++ {
		if p >= len(buf) {
			return source.Row{}, truncated(i)
		}
		kind := buf[p]
		p++
		var col []byte
		if kind == pglogrepl.TupleDataTypeText || kind == pglogrepl.TupleDataTypeBinary {
			if len(buf)-p < 4 {
				return source.Row{}, truncated(i)
			}
			l := binary.BigEndian.Uint32(buf[p:])
			p += 4
			if uint64(l) > uint64(len(buf)-p) {
				return source.Row{}, truncated(i)
			}
			col = buf[p : p+int(l) : p+int(l)]
			p += int(l)
		}
		v, err := rel.value(i, kind, col)
		if err != nil {
			return source.Row{}, err
		}
		vals[i] = v
	}
	return source.Row{Table: t, Values: vals}, nil
}

// decodeBytea decodes bytea's hex text form ("\x0a1b…"), which the relay
// asks for with bytea_output=hex on the replication connection.
func decodeBytea(text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' {
		return nil, errors.New(`bytea value is not in hex form ("\x…"): is bytea_output overridden for the relay's role?`)
	}
	out := make([]byte, hex.DecodedLen(len(text)-2))
	if _, err := hex.Decode(out, text[2:]); err != nil {
		return nil, fmt.Errorf("bytea value: bad hex: %w", err)
	}
	return out, nil
}

// message turns a transactional logical decoding message with a configured
// prefix into a row of the synthetic table "message.<prefix>". ok is false
// for messages the relay does not relay.
func (d *decoder) message(m *pglogrepl.LogicalDecodingMessage) (row source.Row, ok bool, err error) {
	if !m.Transactional || !d.prefixes[m.Prefix] {
		return source.Row{}, false, nil
	}
	keys, vals, err := parseEnvelope(m.Content)
	if err != nil {
		return source.Row{}, false, fmt.Errorf("logical message with prefix %q at %s: %w", m.Prefix, m.LSN, err)
	}
	return source.Row{Table: d.messageTable(m.Prefix, keys), Values: vals}, true, nil
}

func (d *decoder) messageTable(prefix string, keys []string) *schema.Table {
	k := prefix + "\x00" + strings.Join(keys, "\x00")
	if t, ok := d.messages[k]; ok {
		return t
	}
	if len(d.messages) >= 1024 { // envelopes with ever new key sets: stay bounded
		clear(d.messages)
	}
	t := &schema.Table{Schema: MessageSchema, Name: prefix, Columns: keys}
	d.messages[k] = t
	return t
}

// parseEnvelope reads a JSON object's top-level keys in order, with each
// value as bytes: strings unquoted, null as nil, anything else as its JSON
// text exactly as written.
func parseEnvelope(content []byte) (keys []string, vals []any, err error) {
	dec := json.NewDecoder(bytes.NewReader(content))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, fmt.Errorf("content is not valid JSON: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("content is not a JSON object (starts with %v)", tok)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("content is not valid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("content is not valid JSON: key %v", tok)
		}
		if seen[key] {
			return nil, nil, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("content is not valid JSON: value of %q: %w", key, err)
		}
		var v any
		switch raw[0] {
		case '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, nil, fmt.Errorf("value of %q: %w", key, err)
			}
			v = []byte(s)
		case 'n':
			v = nil
		default:
			v = []byte(raw)
		}
		keys = append(keys, key)
		vals = append(vals, v)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, fmt.Errorf("content is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("content has data after the JSON object")
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("content is an empty JSON object")
	}
	return keys, vals, nil
}

// parse is pglogrepl.Parse for protocol version 1 without its panics on
// truncated input (it indexes without bounds checks).
func parse(data []byte) (m pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, errors.New("empty pgoutput message")
	}
	defer func() {
		if p := recover(); p != nil {
			m, err = nil, fmt.Errorf("malformed pgoutput %q message (%d bytes): %v", data[0], len(data), p)
		}
	}()
	return pglogrepl.Parse(data)
}
