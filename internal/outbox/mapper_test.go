package outbox

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

var outboxTable = &schema.Table{Schema: "shop", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload", "tenant", "tracingspancontext"}}

func row(vals ...any) source.Row {
	for len(vals) < len(outboxTable.Columns) {
		vals = append(vals, nil)
	}
	return source.Row{Table: outboxTable, Values: vals}
}

func header(r sink.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

func mustMapper(t *testing.T, c Config) *Mapper {
	t.Helper()
	m, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMapDefaults(t *testing.T) {
	t.Parallel()
	m := mustMapper(t, Config{})
	commit := time.Unix(1700000000, 0)
	rec, err := m.Map(row("e-1", "order", int64(42), "OrderCreated", []byte(`{"a":1}`)), "mysql-bin.000001:4", 3, commit)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Topic != "outbox.event.order" || string(rec.Key) != "42" || string(rec.Value) != `{"a":1}` {
		t.Fatalf("got topic %q key %q value %q", rec.Topic, rec.Key, rec.Value)
	}
	for k, want := range map[string]string{HeaderID: "e-1", HeaderType: "OrderCreated", HeaderPosition: "mysql-bin.000001:4", HeaderIndex: "3"} {
		if got, ok := header(rec, k); !ok || got != want {
			t.Errorf("header %s = %q (present %v), want %q", k, got, ok, want)
		}
	}
	if rec.TimestampMs != commit.UnixMilli() {
		t.Errorf("timestamp %d, want %d", rec.TimestampMs, commit.UnixMilli())
	}
}

// TestDebeziumDefaults: with Debezium EventRouter's defaults (route by
// aggregatetype to outbox.event.<type>, key aggregateid, value the payload,
// header id), the record is the one Debezium would produce; outboxrelay only
// adds its own headers.
func TestDebeziumDefaults(t *testing.T) {
	t.Parallel()
	m := mustMapper(t, Config{})
	payload := `{"customer":"Zoë","total":42.5}`
	rec, err := m.Map(row("7c7a9d1e-5c8b-4a4c-9f1e-7b6c5d4e3f2a", "Order", "1001", "OrderCreated", payload), "tx", 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// Debezium: topic = route.topic.replacement "outbox.event.${routedByValue}".
	if rec.Topic != "outbox.event.Order" || string(rec.Key) != "1001" || string(rec.Value) != payload {
		t.Fatalf("topic %q key %q value %q", rec.Topic, rec.Key, rec.Value)
	}
	if id, _ := header(rec, "id"); id != "7c7a9d1e-5c8b-4a4c-9f1e-7b6c5d4e3f2a" {
		t.Fatalf("id header %q", id)
	}
}

func TestMapOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   Config
		row   source.Row
		check func(t *testing.T, r sink.Record)
	}{
		{"configured columns and template", Config{Mapping: Mapping{
			Columns: Columns{ID: "id", AggregateType: "tenant", AggregateID: "aggregateid", Type: "type", Payload: "payload"},
			Topic:   "events-${tenant}-v1"}},
			row("e", "order", "a-1", "T", "p", "acme"),
			func(t *testing.T, r sink.Record) {
				if r.Topic != "events-acme-v1" {
					t.Errorf("topic %q", r.Topic)
				}
			}},
		{"fixed topic", Config{Mapping: Mapping{Topic: "all-events"}},
			row("e", "order", "k", "T", "p"),
			func(t *testing.T, r sink.Record) {
				if r.Topic != "all-events" {
					t.Errorf("topic %q", r.Topic)
				}
			}},
		{"field into header", Config{Mapping: Mapping{Fields: []Field{{Column: "tenant", As: "tenant-id"}}}},
			row("e", "order", "k", "T", "p", "acme"),
			func(t *testing.T, r sink.Record) {
				if v, _ := header(r, "tenant-id"); v != "acme" {
					t.Errorf("tenant-id header %q", v)
				}
			}},
		{"envelope with field", Config{Mapping: Mapping{Value: "envelope", PayloadFormat: "json", Fields: []Field{{Column: "tenant", Placement: "envelope"}}}},
			row("e-1", "order", "k-1", "Created", `{"a":[1,2]}`, "acme"),
			func(t *testing.T, r sink.Record) {
				var env map[string]any
				if err := json.Unmarshal(r.Value, &env); err != nil {
					t.Fatalf("envelope is not JSON: %v: %s", err, r.Value)
				}
				if env["id"] != "e-1" || env["aggregatetype"] != "order" || env["aggregateid"] != "k-1" || env["type"] != "Created" || env["tenant"] != "acme" {
					t.Errorf("envelope %s", r.Value)
				}
				if p, ok := env["payload"].(map[string]any); !ok || p["a"] == nil {
					t.Errorf("payload not embedded as JSON: %s", r.Value)
				}
			}},
		{"envelope with bytes payload", Config{Mapping: Mapping{Value: "envelope"}},
			row("e", "order", "k", "T", "not json"),
			func(t *testing.T, r sink.Record) {
				var env map[string]any
				if err := json.Unmarshal(r.Value, &env); err != nil || env["payload"] != "not json" {
					t.Errorf("envelope %s (%v)", r.Value, err)
				}
			}},
		{"traceparent from Debezium properties", Config{Mapping: Mapping{TracingColumn: "tracingspancontext"}},
			row("e", "order", "k", "T", "p", nil, "#Wed\ntraceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n"),
			func(t *testing.T, r sink.Record) {
				if v, _ := header(r, "traceparent"); v != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
					t.Errorf("traceparent %q", v)
				}
			}},
		{"null key allowed", Config{Mapping: Mapping{NullKey: "allow"}},
			row("e", "order", nil, "T", "p"),
			func(t *testing.T, r sink.Record) {
				if r.Key != nil {
					t.Errorf("key %q, want null", r.Key)
				}
			}},
		{"tombstone on empty payload", Config{Mapping: Mapping{TombstoneOnEmptyPayload: true}},
			row("e", "order", "k", "T", ""),
			func(t *testing.T, r sink.Record) {
				if r.Value != nil {
					t.Errorf("value %q, want a tombstone", r.Value)
				}
			}},
		{"per-table override", Config{Tables: map[string]Mapping{"shop.outbox": {Topic: "shop-events", Columns: Columns{AggregateID: "tenant"}}}},
			row("e", "order", "k", "T", "p", "acme"),
			func(t *testing.T, r sink.Record) {
				if r.Topic != "shop-events" || string(r.Key) != "acme" {
					t.Errorf("topic %q key %q", r.Topic, r.Key)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, err := mustMapper(t, tt.cfg).Map(tt.row, "tx", 0, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, rec)
		})
	}
}

func TestMapBadRows(t *testing.T) {
	t.Parallel()
	noType := &schema.Table{Schema: "shop", Name: "outbox2", Columns: []string{"id", "aggregateid", "type", "payload"}}
	tests := []struct {
		name   string
		cfg    Config
		row    source.Row
		reason string
		want   string
	}{
		{"null key", Config{}, row("e-9", "order", nil, "T", "p"), ReasonNullKey, "aggregateid (the record key) is NULL"},
		{"empty key", Config{}, row("e-9", "order", "", "T", "p"), ReasonNullKey, "NULL or empty"},
		{"non-utf8 key", Config{}, row("e-9", "order", []byte{0xff, 0x00}, "T", "p"), ReasonNotUTF8, "not valid UTF-8"},
		{"null id", Config{}, row(nil, "order", "k", "T", "p"), ReasonNullID, "column id (event id) is NULL"},
		{"null payload", Config{}, row("e-9", "order", "k", "T", nil), ReasonNullPayload, "payload) is NULL or empty"},
		{"invalid json", Config{Mapping: Mapping{PayloadFormat: "json"}}, row("e-9", "order", "k", "T", "{nope"), ReasonInvalidJSON, "not valid JSON"},
		{"null topic column", Config{}, row("e-9", nil, "k", "T", "p"), ReasonBadTopic, "aggregatetype (used in the topic) is NULL"},
		{"illegal topic char", Config{}, row("e-9", "or der", "k", "T", "p"), ReasonBadTopic, "character Kafka rejects"},
		{"topic too long", Config{}, row("e-9", strings.Repeat("x", 240), "k", "T", "p"), ReasonBadTopic, "longer than Kafka's 249"},
		{"non-utf8 topic", Config{}, row("e-9", []byte{0xff, 0xfe}, "k", "T", "p"), ReasonNotUTF8, "not valid UTF-8"},
		{"missing column", Config{}, source.Row{Table: noType, Values: []any{"e-9", "k", "T", "p"}}, ReasonMissingColumn, "lacks the configured column(s) [aggregatetype]; it has [id aggregateid type payload]"},
		{"short row", Config{}, source.Row{Table: outboxTable, Values: []any{"e-9"}}, ReasonShape, "1 values for 7 columns"},
	}
	for _, tt := range tests {
		_, err := mustMapper(t, tt.cfg).Map(tt.row, "mysql-bin.000001:99", 5, time.Time{})
		var bad *BadRowError
		if !errors.As(err, &bad) {
			t.Errorf("%s: err = %v, want *BadRowError", tt.name, err)
			continue
		}
		msg := err.Error()
		if bad.Reason != tt.reason || !strings.Contains(msg, tt.want) || !strings.Contains(msg, "shop.") || !strings.Contains(msg, "mysql-bin.000001:99") {
			t.Errorf("%s: reason %s, error %q; want reason %s and %q, the table and the position", tt.name, bad.Reason, msg, tt.reason, tt.want)
		}
	}
}

func TestDeadLetterRecord(t *testing.T) {
	t.Parallel()
	m := mustMapper(t, Config{OnBadRow: PolicyDeadLetter, DeadLetterTopic: "outbox.dlq"})
	r := row("e-9", "order", nil, "T", []byte(`{"a":1}`), "acme")
	_, err := m.Map(r, "mysql-bin.000001:99", 5, time.Time{})
	var bad *BadRowError
	if !errors.As(err, &bad) {
		t.Fatal(err)
	}
	dl := m.DeadLetter(r, bad, false)
	if dl.Topic != "outbox.dlq" || string(dl.Key) != "e-9" {
		t.Fatalf("topic %q key %q", dl.Topic, dl.Key)
	}
	var cols map[string]any
	if err := json.Unmarshal(dl.Value, &cols); err != nil || cols["id"] != "e-9" || cols["payload"] != `{"a":1}` || cols["aggregateid"] != nil || cols["tenant"] != "acme" {
		t.Fatalf("value %s (%v)", dl.Value, err)
	}
	for k, want := range map[string]string{HeaderReason: ReasonNullKey, HeaderTable: "shop.outbox", HeaderPosition: "mysql-bin.000001:99", HeaderIndex: "5", HeaderID: "e-9"} {
		if v, _ := header(dl, k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if v, _ := header(dl, HeaderError); !strings.Contains(v, "record key") {
		t.Errorf("error header %q", v)
	}
	if dropped := m.DeadLetter(r, bad, true); strings.Contains(string(dropped.Value), `{\"a\":1}`) {
		t.Errorf("payload kept with dropPayload: %s", dropped.Value)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Mapping: Mapping{Topic: "x.${"}}, "topic:"},
		{Config{Mapping: Mapping{Topic: "x.${}"}}, "topic:"},
		{Config{OnBadRow: "ignore"}, "on_bad_row:"},
		{Config{OnBadRow: PolicyDeadLetter}, "dead_letter_topic: required"},
		{Config{OnBadRow: PolicyDeadLetter, DeadLetterTopic: "bad topic"}, "dead_letter_topic:"},
		{Config{Mapping: Mapping{PayloadFormat: "xml"}}, "payload_format:"},
		{Config{Mapping: Mapping{NullKey: "maybe"}}, "null_key:"},
		{Config{Mapping: Mapping{Fields: []Field{{Column: "x", Placement: "envelope"}}}}, "fields[0].placement: envelope needs value: envelope"},
		{Config{Tables: map[string]Mapping{"outbox": {}}}, `tables.outbox: want a "schema.table"`},
		{Config{Tables: map[string]Mapping{"s.t": {Value: "wrapped"}}}, "tables.s.t.value:"},
	}
	for _, tt := range tests {
		c := tt.cfg
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want one containing %q", tt.cfg, err, tt.want)
		}
	}
}

// FuzzMap checks that any row maps to a record with all required fields or
// to a BadRowError, and never panics, under several mappings.
func FuzzMap(f *testing.F) {
	f.Add("e-1", "order", "42", "T", []byte("{}"), false, false, uint8(0))
	f.Add("", "", "", "", []byte(nil), true, true, uint8(1))
	f.Add("e", "a b", "k", "t", []byte{0xff}, false, true, uint8(2))
	mappers := []*Mapper{}
	for _, c := range []Config{
		{},
		{Mapping: Mapping{Value: "envelope", PayloadFormat: "json", NullKey: "allow", TombstoneOnEmptyPayload: true}},
		{Mapping: Mapping{Fields: []Field{{Column: "tenant"}}, TracingColumn: "tracingspancontext", Topic: "t-${type}"}},
	} {
		m, err := New(c)
		if err != nil {
			f.Fatal(err)
		}
		mappers = append(mappers, m)
	}
	f.Fuzz(func(t *testing.T, id, aggType, aggID, typ string, payload []byte, nullKey, intID bool, which uint8) {
		m := mappers[int(which)%len(mappers)]
		var idv, keyv any = id, aggID
		if intID {
			idv = int64(len(id))
		}
		if nullKey {
			keyv = nil
		}
		rec, err := m.Map(row(idv, aggType, keyv, typ, payload, aggType, typ), "tx", 0, time.Time{})
		if err != nil {
			var bad *BadRowError
			if !errors.As(err, &bad) || bad.Reason == "" {
				t.Fatalf("error of type %T without a reason: %v", err, err)
			}
			return
		}
		if rec.Topic == "" || validTopic([]byte(rec.Topic)) != nil {
			t.Fatalf("record with a bad topic: %+v", rec)
		}
		if _, ok := header(rec, HeaderID); !ok {
			t.Fatal("record without id header")
		}
		if m.cfg.NullKey != "allow" && len(rec.Key) == 0 {
			t.Fatal("record without a key")
		}
		if m.cfg.Value == "envelope" && rec.Value != nil && !json.Valid(rec.Value) {
			t.Fatalf("envelope is not JSON: %s", rec.Value)
		}
	})
}

// TestTargets: the topics a mapping produces to, as names and patterns.
func TestTargets(t *testing.T) {
	t.Parallel()
	c := Config{OnBadRow: PolicyDeadLetter, DeadLetterTopic: "outbox.dlq",
		Tables: map[string]Mapping{"shop.other": {Topic: "fixed.topic"}}}
	c.SetDefaults()
	topics, patterns := c.Targets()
	if strings.Join(topics, ",") != "fixed.topic,outbox.dlq" {
		t.Errorf("topics %v", topics)
	}
	if len(patterns) != 1 || !patterns[0].MatchString("outbox.event.order") || patterns[0].MatchString("outbox.event.") || patterns[0].MatchString("xoutbox.event.order") {
		t.Errorf("patterns %v", patterns)
	}
}

// TestCheckTableTypes: with types from the catalog, a mapped column that
// cannot carry text or bytes is refused; unmapped ones do not matter.
func TestCheckTableTypes(t *testing.T) {
	t.Parallel()
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	cols := []string{"id", "aggregatetype", "aggregateid", "type", "payload", "location"}
	ok := &schema.Table{Schema: "s", Name: "o", Columns: cols, Types: []string{"varchar", "varchar", "bigint", "varchar", "json", "point"}}
	if err := m.CheckTable(ok); err != nil {
		t.Errorf("usable mapped columns (an unmapped point column): %v", err)
	}
	bad := &schema.Table{Schema: "s", Name: "o2", Columns: cols, Types: []string{"varchar", "varchar", "point", "varchar", "json", "int"}}
	if err := m.CheckTable(bad); err == nil || !strings.Contains(err.Error(), "aggregateid is of type point") {
		t.Errorf("a point key column: %v", err)
	}
}
