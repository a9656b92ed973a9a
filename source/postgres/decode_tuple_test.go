package postgres

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/schema"
)

// insertBytes encodes an Insert message as pgoutput sends it.
func insertBytes(rel uint32, cols ...[]byte) []byte {
	b := []byte{'I', 0, 0, 0, 0, 'N', 0, 0}
	binary.BigEndian.PutUint32(b[1:], rel)
	binary.BigEndian.PutUint16(b[6:], uint16(len(cols)))
	for _, c := range cols {
		if c == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, 't', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

func tupleDecoder(t testing.TB) *decoder {
	f, err := schema.NewFilter([]string{"public.outbox"})
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(f, nil)
	m := &pglogrepl.RelationMessage{RelationID: 1, Namespace: "public", RelationName: "outbox"}
	for _, c := range []string{"id", "payload", "bin"} {
		typ := uint32(25)
		if c == "bin" {
			typ = byteaOID
		}
		m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: c, DataType: typ})
	}
	d.relation(m)
	return d
}

// TestInsertTupleMatchesParse: the stream's own Insert decoder gives the
// same row, or an error in the same cases, as pglogrepl.Parse + insert.
func TestInsertTupleMatchesParse(t *testing.T) {
	t.Parallel()
	d := tupleDecoder(t)
	for _, msg := range [][]byte{
		insertBytes(1, []byte("e1"), nil, []byte(`\x00ff`)),
		insertBytes(1, []byte(""), []byte(`{"a":1}`), nil),
		insertBytes(1, []byte("e1"), nil, []byte("nothex")),
		insertBytes(1, []byte("e1"), nil),
	} {
		got, gotErr := d.insertTuple(d.rels[1], msg)
		m, err := parse(msg)
		if err != nil {
			t.Fatalf("parse %q: %v", msg, err)
		}
		want, wantErr := d.insert(d.rels[1], m.(*pglogrepl.InsertMessage))
		if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
			t.Fatalf("%q: error %v, want %v", msg, gotErr, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: row %#v, want %#v", msg, got, want)
		}
	}

	// The row must not alias the receive buffer, which the next message
	// overwrites.
	msg := insertBytes(1, []byte("e1"), []byte("p"), nil)
	row, err := d.insertTuple(d.rels[1], msg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 'X'
	}
	if string(row.Values[0].([]byte)) != "e1" || string(row.Values[1].([]byte)) != "p" {
		t.Fatalf("row aliases the message: %q", row.Values)
	}
}

// FuzzInsertTuple: never panics, and never accepts what it cannot hold.
func FuzzInsertTuple(f *testing.F) {
	f.Add(insertBytes(1, []byte("e1"), nil, []byte(`\x00ff`)))
	f.Add([]byte{'I', 0, 0, 0, 1, 'N', 0, 3, 't', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'I', 0, 0, 0, 1, 'N', 0, 3, 'u', 'n', 'b', 0, 0, 0, 1})
	d := tupleDecoder(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		row, err := d.insertTuple(d.rels[1], msg)
		if err != nil {
			return
		}
		if len(row.Values) != 3 {
			t.Fatalf("%d values", len(row.Values))
		}
		for _, v := range row.Values[:2] { // bin is hex-decoded
			if b, ok := v.([]byte); ok && !bytes.Contains(msg, b) {
				t.Fatalf("value %q not from the message", b)
			}
		}
	})
}
