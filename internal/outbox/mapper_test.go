package outbox

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

var outboxTable = &schema.Table{Schema: "shop", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload", "created_at"}}

func header(r sink.Record, k string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestMapDefaults(t *testing.T) {
	t.Parallel()
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	commit := time.Unix(1700000000, 0)
	row := source.Row{Table: outboxTable, Values: []any{"e-1", "order", int64(42), "OrderCreated", []byte(`{"a":1}`), "2024-01-01"}}
	rec, err := m.Map(row, "mysql-bin.000001:4", 3, commit)
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

func TestMapConfiguredColumnsAndFixedTopic(t *testing.T) {
	t.Parallel()
	tbl := &schema.Table{Schema: "s", Name: "events", Columns: []string{"event_id", "kind", "agg", "body", "tenant"}}
	m, err := New(Config{
		Columns: Columns{ID: "event_id", AggregateType: "tenant", AggregateID: "agg", Type: "kind", Payload: "body"},
		Topic:   "events-${tenant}-v1",
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := m.Map(source.Row{Table: tbl, Values: []any{uint64(7), "Created", "a-1", nil, "acme"}}, "tx", 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Topic != "events-acme-v1" || string(rec.Key) != "a-1" || rec.Value != nil {
		t.Fatalf("got %q %q %q", rec.Topic, rec.Key, rec.Value)
	}
	if id, _ := header(rec, HeaderID); id != "7" {
		t.Fatalf("id header %q", id)
	}

	fixed, err := New(Config{Topic: "all-events"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err = fixed.Map(source.Row{Table: outboxTable, Values: []any{"e", "order", "k", "T", "p", nil}}, "tx", 0, time.Time{})
	if err != nil || rec.Topic != "all-events" {
		t.Fatalf("fixed topic: %q, %v", rec.Topic, err)
	}
}

func TestMapBadRows(t *testing.T) {
	t.Parallel()
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	noType := &schema.Table{Schema: "shop", Name: "outbox2", Columns: []string{"id", "aggregateid", "type", "payload"}}
	tests := []struct {
		name string
		row  source.Row
		want string
	}{
		{"null key", source.Row{Table: outboxTable, Values: []any{"e-9", "order", nil, "T", "p", nil}}, "aggregateid (the record key) is NULL"},
		{"empty key", source.Row{Table: outboxTable, Values: []any{"e-9", "order", "", "T", "p", nil}}, "aggregateid (the record key) is NULL or empty"},
		{"null id", source.Row{Table: outboxTable, Values: []any{nil, "order", "k", "T", "p", nil}}, "column id (event id) is NULL"},
		{"null topic column", source.Row{Table: outboxTable, Values: []any{"e-9", nil, "k", "T", "p", nil}}, "aggregatetype (used in the topic) is NULL"},
		{"illegal topic char", source.Row{Table: outboxTable, Values: []any{"e-9", "or der", "k", "T", "p", nil}}, "character Kafka rejects"},
		{"topic too long", source.Row{Table: outboxTable, Values: []any{"e-9", strings.Repeat("x", 240), "k", "T", "p", nil}}, "longer than Kafka's 249"},
		{"non-utf8 topic", source.Row{Table: outboxTable, Values: []any{"e-9", []byte{0xff, 0xfe}, "k", "T", "p", nil}}, "not valid UTF-8"},
		{"missing column", source.Row{Table: noType, Values: []any{"e-9", "k", "T", "p"}}, "lacks the configured column(s) [aggregatetype]; it has [id aggregateid type payload]"},
		{"short row", source.Row{Table: outboxTable, Values: []any{"e-9"}}, "1 values for 6 columns"},
	}
	for _, tt := range tests {
		_, err := m.Map(tt.row, "mysql-bin.000001:99", 5, time.Time{})
		var bad *BadRowError
		if !errors.As(err, &bad) {
			t.Errorf("%s: err = %v, want *BadRowError", tt.name, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.want) || !strings.Contains(msg, "shop.") || !strings.Contains(msg, "mysql-bin.000001:99") {
			t.Errorf("%s: error %q lacks %q, the table or the position", tt.name, msg, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, topic := range []string{"x.${", "x.${}"} {
		c := Config{Topic: topic}
		c.SetDefaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "topic:") {
			t.Errorf("topic %q: err = %v, want one naming topic", topic, err)
		}
	}
}

// FuzzMap checks that any row maps to a record with all required fields or
// to a BadRowError, and never panics.
func FuzzMap(f *testing.F) {
	f.Add("e-1", "order", "42", "T", []byte("{}"), false, false)
	f.Add("", "", "", "", []byte(nil), true, true)
	f.Add("e", "a b", "k", "t", []byte{0xff}, false, true)
	m, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, aggType, aggID, typ string, payload []byte, nullKey, intID bool) {
		var idv, keyv any = id, aggID
		if intID {
			idv = int64(len(id))
		}
		if nullKey {
			keyv = nil
		}
		rec, err := m.Map(source.Row{Table: outboxTable, Values: []any{idv, aggType, keyv, typ, payload, nil}}, "tx", 0, time.Time{})
		if err != nil {
			var bad *BadRowError
			if !errors.As(err, &bad) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if rec.Topic == "" || len(rec.Key) == 0 {
			t.Fatalf("record without topic or key: %+v", rec)
		}
		if _, ok := header(rec, HeaderID); !ok {
			t.Fatal("record without id header")
		}
	})
}
