package postgres

import (
	"bytes"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/schema"
)

func TestDecodeBytea(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []byte
		wantErr string
	}{
		{in: `\x`, want: []byte{}},
		{in: `\x00ff10`, want: []byte{0, 0xff, 0x10}},
		{in: `\xDEADbeef`, want: []byte{0xde, 0xad, 0xbe, 0xef}},
		{in: `\x7b2261223a317d`, want: []byte(`{"a":1}`)},
		{in: `abc`, wantErr: "not in hex form"},
		{in: `\001\002`, wantErr: "not in hex form"}, // escape form
		{in: ``, wantErr: "not in hex form"},
		{in: `\x0`, wantErr: "bad hex"},
		{in: `\xzz`, wantErr: "bad hex"},
	}
	for _, tt := range tests {
		got, err := decodeBytea([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("decodeBytea(%q) = %v, %v; want error with %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("decodeBytea(%q) = %x, %v; want %x", tt.in, got, err, tt.want)
		}
	}
}

func TestParseEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		keys    []string
		vals    []string // "<nil>" for nil
		wantErr string
	}{
		{
			name: "outbox envelope",
			in:   `{"id":"e1","aggregatetype":"order","aggregateid":"42","type":"Created","payload":{"b":1, "a":[1,2]}}`,
			keys: []string{"id", "aggregatetype", "aggregateid", "type", "payload"},
			vals: []string{"e1", "order", "42", "Created", `{"b":1, "a":[1,2]}`},
		},
		{
			name: "order kept, whitespace around values dropped, inside kept",
			in:   " {\n \"z\" : \"Zoë \\u2603 \\\"q\\\"\" ,\n \"a\": [ 1,2 ] , \"n\": null, \"num\": 1.50e3, \"t\": true }\n",
			keys: []string{"z", "a", "n", "num", "t"},
			vals: []string{`Zoë ☃ "q"`, `[ 1,2 ]`, "<nil>", `1.50e3`, `true`},
		},
		{name: "payload as a string", in: `{"payload":"{\"x\":1}"}`, keys: []string{"payload"}, vals: []string{`{"x":1}`}},
		{name: "array", in: `[1,2]`, wantErr: "not a JSON object"},
		{name: "string", in: `"x"`, wantErr: "not a JSON object"},
		{name: "invalid", in: `{"a":}`, wantErr: "not valid JSON"},
		{name: "truncated", in: `{"a":1`, wantErr: "not valid JSON"},
		{name: "empty content", in: ``, wantErr: "not valid JSON"},
		{name: "trailing data", in: `{"a":1} {"b":2}`, wantErr: "data after"},
		{name: "duplicate key", in: `{"a":1,"a":2}`, wantErr: `"a" appears twice`},
		{name: "empty object", in: `{}`, wantErr: "empty JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, vals, err := parseEnvelope([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseEnvelope(%q) = %v, %v, %v; want error with %q", tt.in, keys, vals, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(keys, ",") != strings.Join(tt.keys, ",") {
				t.Fatalf("keys %q, want %q", keys, tt.keys)
			}
			for i, v := range vals {
				got := "<nil>"
				if v != nil {
					got = string(v.([]byte))
				}
				if got != tt.vals[i] {
					t.Errorf("value of %s = %q, want %q", keys[i], got, tt.vals[i])
				}
			}
		})
	}
}

func FuzzParseEnvelope(f *testing.F) {
	for _, s := range []string{`{"a":"b","c":{"d":[1]}}`, `{}`, `[]`, `{"a":1`, `{"a":null}`, "{\"a\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, vals, err := parseEnvelope(b)
		if err == nil && (len(keys) != len(vals) || len(keys) == 0) {
			t.Fatalf("%d keys, %d values", len(keys), len(vals))
		}
	})
}

func TestMessageToRow(t *testing.T) {
	t.Parallel()
	d := newDecoder(nil, []string{"outbox"})
	content := `{"id":"e1","aggregatetype":"order","aggregateid":"42","type":"Created","payload":{"total":9.99}}`
	msg := func(prefix string, transactional bool, content string) *pglogrepl.LogicalDecodingMessage {
		return &pglogrepl.LogicalDecodingMessage{LSN: 0x1_0000_0010, Transactional: transactional, Prefix: prefix, Content: []byte(content)}
	}
	row, ok, err := d.message(msg("outbox", true, content))
	if err != nil || !ok {
		t.Fatalf("message: %v, %v", ok, err)
	}
	if row.Table.FullName() != "message.outbox" || strings.Join(row.Table.Columns, ",") != "id,aggregatetype,aggregateid,type,payload" {
		t.Fatalf("table %s %v", row.Table.FullName(), row.Table.Columns)
	}
	if got := string(row.Values[4].([]byte)); got != `{"total":9.99}` {
		t.Fatalf("payload %q", got)
	}
	// Same key list: same *schema.Table, so the mapping's cache holds.
	row2, _, _ := d.message(msg("outbox", true, content))
	if row2.Table != row.Table {
		t.Error("same keys gave a new *schema.Table")
	}
	row3, _, _ := d.message(msg("outbox", true, `{"id":"e2","payload":"x"}`))
	if row3.Table == row.Table {
		t.Error("other keys reused the *schema.Table")
	}

	for _, m := range []*pglogrepl.LogicalDecodingMessage{
		msg("outbox", false, content),             // non-transactional
		msg("other", true, content),               // another prefix
		msg(HeartbeatPrefix, false, "2024-01-01"), // the heartbeat
	} {
		if _, ok, err := d.message(m); ok || err != nil {
			t.Errorf("message %q transactional=%v relayed (%v, %v)", m.Prefix, m.Transactional, ok, err)
		}
	}

	_, _, err = d.message(msg("outbox", true, `[1]`))
	if err == nil || !strings.Contains(err.Error(), `prefix "outbox"`) || !strings.Contains(err.Error(), "1/10") || !strings.Contains(err.Error(), "not a JSON object") {
		t.Fatalf("bad content error %v: want prefix, LSN and reason", err)
	}
}

func TestRelationAndInsert(t *testing.T) {
	t.Parallel()
	f, err := schema.NewFilter([]string{"public.outbox"})
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(f, nil)
	rel := func(id uint32, name string, cols ...string) *pglogrepl.RelationMessage {
		m := &pglogrepl.RelationMessage{RelationID: id, Namespace: "public", RelationName: name}
		for _, c := range cols {
			typ := uint32(25) // text
			if c == "bin" {
				typ = byteaOID
			}
			m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: c, DataType: typ})
		}
		return m
	}
	d.relation(rel(1, "outbox", "id", "payload", "bin"))
	d.relation(rel(2, "orders", "id"))
	if !d.rels[1].include || d.rels[2].include {
		t.Fatal("include decisions wrong")
	}
	t1 := d.rels[1].table
	d.relation(rel(1, "outbox", "id", "payload", "bin")) // unchanged layout
	if d.rels[1].table != t1 {
		t.Error("unchanged relation got a new *schema.Table")
	}
	d.relation(rel(1, "outbox", "id", "payload", "bin", "extra"))
	if d.rels[1].table == t1 {
		t.Error("changed relation kept the old *schema.Table")
	}
	d.relation(rel(1, "outbox", "id", "payload", "bin"))

	ins := &pglogrepl.InsertMessage{RelationID: 1, Tuple: &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("e1")},
		{DataType: pglogrepl.TupleDataTypeNull},
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte(`\x00ff`)},
	}}}
	row, err := d.insert(d.rels[1], ins)
	if err != nil {
		t.Fatal(err)
	}
	if string(row.Values[0].([]byte)) != "e1" || row.Values[1] != nil || !bytes.Equal(row.Values[2].([]byte), []byte{0, 0xff}) {
		t.Fatalf("values %#v", row.Values)
	}
	ins.Tuple.Columns[2].Data = []byte("nothex")
	if _, err := d.insert(d.rels[1], ins); err == nil || !strings.Contains(err.Error(), "column bin") {
		t.Fatalf("bad bytea: %v", err)
	}
	ins.Tuple.Columns = ins.Tuple.Columns[:2]
	if _, err := d.insert(d.rels[1], ins); err == nil {
		t.Fatal("column count mismatch: want error")
	}
}

func TestParseNeverPanics(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{{'I', 0, 0, 0, 1, 'N', 0, 5}, {'R', 0}, {'M', 1}, {'B'}, {'C', 0}, {'I', 0, 0, 0, 1, 'N', 0, 1, 't', 0, 0, 0, 9, 'x'}} {
		if _, err := parse(b); err == nil {
			t.Errorf("parse(%q): want error", b)
		}
	}
	if _, err := parse(nil); err == nil {
		t.Error("parse(nil): want error")
	}
}
