package mysql

// A binlog encoder for tests: events built byte by byte in the formats
// MySQL documents (https://dev.mysql.com/doc/dev/mysql-server/latest/
// page_protocol_replication_binlog_event.html), parsed back by go-mysql's
// own parser with the relay's decode hook, as a live stream would be. No
// MySQL server runs on the machines these tests run on; these events stand
// in for one. Each encoder is checked against go-mysql's decoding of it
// (TestEncoderRoundTrip), so a test cannot pass on an encoding only this
// file understands.

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

const testFile = "binlog.000007"

var (
	testSID   = uuid.MustParse("3e11fa47-71ca-11e1-9e33-c80aa9429562")
	outboxCol = []string{"id", "aggregatetype", "aggregateid", "type", "payload"}
)

// binlog is one binlog file being written: raw events with their offsets.
type binlog struct {
	t      testing.TB
	file   string
	off    uint32
	events []rawEvent
	ts     uint32
}

type rawEvent struct {
	at   uint32
	data []byte
}

func newBinlog(t testing.TB, previous string) *binlog {
	b := &binlog{t: t, file: testFile, off: 4, ts: 1700000000}
	b.add(replication.FORMAT_DESCRIPTION_EVENT, fdeBody())
	b.add(replication.PREVIOUS_GTIDS_EVENT, previousGTIDsBody(t, previous))
	return b
}

// frame wraps a body in the common header (v4: 19 bytes).
func frame(typ replication.EventType, body []byte, logPos, ts uint32) []byte {
	h := make([]byte, 19, 19+len(body))
	binary.LittleEndian.PutUint32(h[0:], ts)
	h[4] = byte(typ)
	binary.LittleEndian.PutUint32(h[5:], 1) // server_id
	binary.LittleEndian.PutUint32(h[9:], uint32(19+len(body)))
	binary.LittleEndian.PutUint32(h[13:], logPos)
	return append(h, body...)
}

// add appends an event and returns its start offset.
func (b *binlog) add(typ replication.EventType, body []byte) uint32 {
	at := b.off
	end := at + 19 + uint32(len(body))
	b.events = append(b.events, rawEvent{at: at, data: frame(typ, body, end, b.ts)})
	b.off = end
	return at
}

func fdeBody() []byte {
	body := make([]byte, 0, 100)
	body = binary.LittleEndian.AppendUint16(body, 4)
	ver := make([]byte, 50)
	copy(ver, "8.4.3")
	body = append(body, ver...)
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = append(body, 19)
	// Post-header lengths, one per event type from 1; go-mysql reads the
	// table id size of TABLE_MAP and ROWS events from them.
	lens := make([]byte, 42)
	lens[replication.QUERY_EVENT-1] = 13
	lens[replication.TABLE_MAP_EVENT-1] = 8
	lens[replication.WRITE_ROWS_EVENTv2-1] = 10
	lens[replication.UPDATE_ROWS_EVENTv2-1] = 10
	lens[replication.DELETE_ROWS_EVENTv2-1] = 10
	body = append(body, lens...)
	body = append(body, byte(replication.BINLOG_CHECKSUM_ALG_OFF))
	return append(body, 0, 0, 0, 0) // checksum field (unused: off)
}

// previousGTIDsBody encodes a classic-format Previous_gtids set of testSID
// intervals "a-b" (one interval or none).
func previousGTIDsBody(t testing.TB, set string) []byte {
	if set == "" {
		return make([]byte, 8)
	}
	s, err := gomysql.ParseMysqlGTIDSet(set)
	if err != nil {
		t.Fatal(err)
	}
	return s.Encode()
}

func queryBody(q string) []byte {
	body := make([]byte, 13)
	body[8] = 4 // schema length
	body = append(body, "shop"...)
	body = append(body, 0)
	return append(body, q...)
}

func lenenc(n int) []byte {
	switch {
	case n < 251:
		return []byte{byte(n)}
	case n < 1<<16:
		return []byte{0xfc, byte(n), byte(n >> 8)}
	}
	return []byte{0xfd, byte(n), byte(n >> 8), byte(n >> 16)}
}

// tableMapBody maps table id to shop.<table> with VARCHAR(1000) columns
// and their names (binlog_row_metadata=FULL).
func tableMapBody(id uint64, table string, cols []string) []byte {
	body := make([]byte, 8)
	binary.LittleEndian.PutUint64(body, id) // 6-byte id; flags stay 0
	body = body[:8]
	body[6], body[7] = 1, 0
	body = append(body, 4)
	body = append(body, "shop"...)
	body = append(body, 0, byte(len(table)))
	body = append(body, table...)
	body = append(body, 0)
	body = append(body, lenenc(len(cols))...)
	meta := make([]byte, 0, 2*len(cols))
	for range cols {
		body = append(body, gomysql.MYSQL_TYPE_VARCHAR)
		meta = binary.LittleEndian.AppendUint16(meta, 1000)
	}
	body = append(body, lenenc(len(meta))...)
	body = append(body, meta...)
	body = append(body, make([]byte, (len(cols)+7)/8)...) // null bitmap
	var names []byte
	for _, c := range cols {
		names = append(names, lenenc(len(c))...)
		names = append(names, c...)
	}
	body = append(body, 4) // optional metadata: COLUMN_NAME
	body = append(body, lenenc(len(names))...)
	return append(body, names...)
}

// writeRowsBody encodes WRITE_ROWS_EVENTv2 rows of string values.
func writeRowsBody(id uint64, rows [][]string) []byte {
	body := make([]byte, 8)
	binary.LittleEndian.PutUint64(body, id)
	body[6], body[7] = 1, 0 // STMT_END_F
	body = append(body, 2, 0)
	n := len(rows[0])
	body = append(body, lenenc(n)...)
	present := make([]byte, (n+7)/8)
	for i := range present {
		present[i] = 0xff
	}
	body = append(body, present...)
	for _, r := range rows {
		body = append(body, make([]byte, (n+7)/8)...) // no NULLs
		for _, v := range r {
			body = binary.LittleEndian.AppendUint16(body, uint16(len(v)))
			body = append(body, v...)
		}
	}
	return body
}

func xidBody(xid uint64) []byte { return binary.LittleEndian.AppendUint64(nil, xid) }

// gtidBody encodes a GTID_LOG_EVENT (MySQL 8 layout) with
// transaction_length; length 0 leaves the field out (MySQL < 8.0.2).
func gtidBody(gno int64, length uint64) []byte {
	body := []byte{1}
	body = append(body, testSID[:]...)
	body = binary.LittleEndian.AppendUint64(body, uint64(gno))
	body = append(body, replication.LogicalTimestampTypeCode)
	body = binary.LittleEndian.AppendUint64(body, 0)
	body = binary.LittleEndian.AppendUint64(body, uint64(gno))
	if length == 0 {
		return body
	}
	ts := uint64(1700000000123456)
	body = append(body, byte(ts), byte(ts>>8), byte(ts>>16), byte(ts>>24), byte(ts>>32), byte(ts>>40), byte(ts>>48))
	// Always the 9-byte form of a length-encoded integer, so that the
	// event's size does not depend on the length written into it later.
	body = append(body, 0xfe)
	body = binary.LittleEndian.AppendUint64(body, length)
	return binary.LittleEndian.AppendUint32(body, 80403)
}

// MySQL's serialization format (libs/mysql/serialization), used by
// GTID_TAGGED_LOG_EVENT: variable-length integers whose first byte's
// trailing one bits count the extra bytes.
func varUint(v uint64) []byte {
	for n := 1; n <= 8; n++ {
		if v < 1<<(7*n) {
			return varUintN(v, n)
		}
	}
	panic("value too large for this encoder")
}

// varUintN encodes v in exactly n bytes (v < 2^(7n)).
func varUintN(v uint64, n int) []byte {
	x := v<<n | (1<<(n-1) - 1)
	out := make([]byte, 8)
	binary.LittleEndian.PutUint64(out, x)
	return out[:n]
}

func varInt(v int64) []byte {
	if v < 0 {
		return varUint(uint64(-v-1)<<1 | 1)
	}
	return varUint(uint64(v) << 1)
}

// fixedBytes encodes a fixed-length integer field byte by byte.
func fixedBytes(b []byte) []byte {
	var out []byte
	for _, c := range b {
		switch {
		case c < 0x80:
			out = append(out, c<<1)
		case c < 0xc0:
			out = append(out, (c-0x80)<<2|1, 2)
		default:
			out = append(out, (c-0xc0)<<2|1, 3)
		}
	}
	return out
}

// taggedGTIDBody encodes a GTID_TAGGED_LOG_EVENT (MySQL ≥ 8.3).
func taggedGTIDBody(gno int64, tag string, length uint64) []byte {
	var fields []byte
	field := func(id int, v []byte) {
		fields = append(fields, byte(id<<1))
		fields = append(fields, v...)
	}
	field(0, fixedBytes([]byte{1}))
	field(1, fixedBytes(testSID[:]))
	field(2, varInt(gno))
	field(3, append([]byte{byte(len(tag) << 1)}, tag...))
	field(4, varInt(0))
	field(5, varInt(gno))
	field(6, varUint(1700000000123456))
	field(8, varUintN(length, 4)) // fixed size: patched once known
	field(9, varUint(80403))
	msg := []byte{0, byte(len(fields)+2) << 1, 9 << 1}
	return append(msg, fields...)
}

func xaPrepareBody(onePhase bool, gtrid, bqual string) []byte {
	body := []byte{0}
	if onePhase {
		body[0] = 1
	}
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, uint32(len(gtrid)))
	body = binary.LittleEndian.AppendUint32(body, uint32(len(bqual)))
	body = append(body, gtrid...)
	return append(body, bqual...)
}

// payloadBody compresses events (framed without checksums, log_pos 0 as
// MySQL writes them into the payload) into a TRANSACTION_PAYLOAD_EVENT.
func payloadBody(t testing.TB, inner [][]byte) []byte {
	var raw []byte
	for _, e := range inner {
		raw = append(raw, e...)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	comp := enc.EncodeAll(raw, nil)
	_ = enc.Close()
	field := func(typ byte, v uint64) []byte {
		b := binary.LittleEndian.AppendUint64(nil, v)
		return append([]byte{typ, 8}, b...)
	}
	body := field(replication.OTW_PAYLOAD_SIZE_FIELD, uint64(len(comp)))
	body = append(body, field(replication.OTW_PAYLOAD_COMPRESSION_TYPE_FIELD, replication.ZSTD)...)
	body = append(body, field(replication.OTW_PAYLOAD_UNCOMPRESSED_SIZE_FIELD, uint64(len(raw)))...)
	body = append(body, replication.OTW_PAYLOAD_HEADER_END_MARK)
	return append(body, comp...)
}

// Helpers that write whole transactions.

// rowsOf makes n outbox rows with ids prefix-0, prefix-1, ….
func rowsOf(prefix string, from, n int) [][]string {
	rows := make([][]string, n)
	for i := range rows {
		id := prefix + "-" + strconv.Itoa(from+i)
		rows[i] = []string{id, "order", "agg", "Created", `{"id":"` + id + `"}`}
	}
	return rows
}

// insert writes a table map and rows events (at most 50 rows each) into
// the outbox.
func (b *binlog) insert(rows [][]string) {
	for start := 0; start < len(rows); start += 50 {
		b.add(replication.TABLE_MAP_EVENT, tableMapBody(101, "outbox", outboxCol))
		b.add(replication.WRITE_ROWS_EVENTv2, writeRowsBody(101, rows[start:min(start+50, len(rows))]))
	}
}

// fakeSource serves a binlog's events to a Reader as a server would:
// parsed with the reader's decode hook, a fake rotate and the format
// description first, from any event's offset.
type fakeSource struct {
	b      *binlog
	r      *Reader
	parser *replication.BinlogParser
	i      int
	queued []*replication.BinlogEvent
	seeks  []uint32
}

func (f *fakeSource) seek(file string, offset uint32) error {
	if file != f.b.file {
		return errors.New("no such file " + file)
	}
	f.seeks = append(f.seeks, offset)
	return f.start(offset)
}

func (f *fakeSource) start(offset uint32) error {
	f.parser = replication.NewBinlogParser()
	f.parser.SetFlavor(gomysql.MySQLFlavor)
	f.parser.SetRowsEventDecodeFunc(f.r.decodeRows)
	rot := append(binary.LittleEndian.AppendUint64(nil, uint64(offset)), f.b.file...)
	f.queued = []*replication.BinlogEvent{f.parse(frame(replication.ROTATE_EVENT, rot, 0, 0))}
	f.parse(f.b.events[0].data) // the format description
	for i, e := range f.b.events {
		if e.at == offset {
			f.i = i
			return nil
		}
	}
	return errors.New("no event at the offset")
}

func (f *fakeSource) parse(data []byte) *replication.BinlogEvent {
	ev, err := f.parser.Parse(data)
	if err != nil {
		f.b.t.Fatalf("go-mysql cannot parse an encoded event: %v", err)
	}
	return ev
}

func (f *fakeSource) next(context.Context) (*replication.BinlogEvent, error) {
	if len(f.queued) > 0 {
		ev := f.queued[0]
		f.queued = f.queued[1:]
		return ev, nil
	}
	if f.i >= len(f.b.events) {
		return nil, io.EOF
	}
	ev := f.parse(f.b.events[f.i].data)
	f.i++
	return ev, nil
}

func (f *fakeSource) close() {}

// testReader is a Reader over a fake binlog, starting at position start.
func testReader(t testing.TB, b *binlog, start Position) (*Reader, *fakeSource) {
	filter, err := schema.NewFilter([]string{"shop.outbox"})
	if err != nil {
		t.Fatal(err)
	}
	r := &Reader{
		log:       zerolog.New(zerolog.NewTestWriter(t)),
		filter:    filter,
		si:        serverInfo{flavor: gomysql.MySQLFlavor, gtidEnabled: true, rowMetadata: "FULL"},
		decisions: map[uint64]decision{},
		tables:    map[*replication.TableMapEvent]*schema.Table{},
		known:     schema.NewCache(),
		file:      start.File,
		xa:        start.XA,
		skip:      start.Rows,
	}
	src := &fakeSource{b: b, r: r}
	r.events = src
	if start.GTID() == "" {
		r.seekFile, r.seekTo = start.File, max(start.Offset, 4)
		if err := src.start(4); err != nil {
			t.Fatal(err)
		}
	} else {
		s, err := newGTIDState(gomysql.MySQLFlavor, start.GTID())
		if err != nil {
			t.Fatal(err)
		}
		r.gtids = s
		if err := src.start(start.Offset); err != nil {
			t.Fatal(err)
		}
	}
	return r, src
}

// readAll reads until the binlog ends and returns what the reader handed out.
func readAll(t testing.TB, r *Reader) []*source.Tx {
	t.Helper()
	var out []*source.Tx
	for {
		tx, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, tx)
	}
}

// gtidTx writes one GTID-numbered transaction: its GTID event (tagged when
// tag is not ""), then what body writes, with the real transaction_length
// patched into the GTID event afterwards.
func (b *binlog) gtidTx(gno int64, tag string, body func()) uint32 {
	typ, enc := replication.GTID_EVENT, func(l uint64) []byte { return gtidBody(gno, l) }
	if tag != "" {
		typ, enc = replication.GTID_TAGGED_LOG_EVENT, func(l uint64) []byte { return taggedGTIDBody(gno, tag, l) }
	}
	i := len(b.events)
	start := b.add(typ, enc(1))
	body()
	size := uint32(len(b.events[i].data))
	b.events[i].data = frame(typ, enc(uint64(b.off-start)), start+size, b.ts)
	return start
}

// dml writes a GTID transaction BEGIN, the rows, XID.
func (b *binlog) dml(gno int64, rows [][]string) uint32 {
	return b.gtidTx(gno, "", func() {
		b.add(replication.QUERY_EVENT, queryBody("BEGIN"))
		b.insert(rows)
		b.add(replication.XID_EVENT, xidBody(uint64(gno)))
	})
}
