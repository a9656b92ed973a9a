package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	"github.com/outboxrelay/outboxrelay/inbox"
)

// record builds a consumed record with the given headers (name, value,
// name, value, …).
func record(topic string, key string, kv ...string) *sarama.ConsumerMessage {
	m := &sarama.ConsumerMessage{Topic: topic, Key: []byte(key), Value: []byte(`{}`)}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return m
}

func TestParseEvent(t *testing.T) {
	t.Parallel()
	long := string(make([]byte, 256))
	cases := []struct {
		name        string
		msg         *sarama.ConsumerMessage
		bad         bool
		wantID      string
		wantVersion *inbox.Version
		wantType    string
	}{
		{"full", record("t", "k", "id", "e1", "type", "OrderCreated", "outboxrelay-position", "b.000001:4", "outboxrelay-index", "3"),
			false, "e1", &inbox.Version{Position: "b.000001:4", Index: 3}, "OrderCreated"},
		{"no version headers", record("t", "k", "id", "e1"), false, "e1", nil, ""},
		{"position without index", record("t", "k", "id", "e1", "outboxrelay-position", "0/1"), false, "e1", nil, ""},
		{"first header wins", record("t", "k", "id", "e1", "id", "e2", "type", "", "type", "X"), false, "e1", nil, ""},
		{"no id", record("t", "k", "type", "X"), true, "", nil, ""},
		{"empty id", record("t", "k", "id", ""), true, "", nil, ""},
		{"id too long", record("t", "k", "id", "x"+long), true, "", nil, ""},
		{"id not utf8", record("t", "k", "id", "\xff"), true, "", nil, ""},
		{"id with NUL", record("t", "k", "id", "a\x00b"), true, "", nil, ""},
		{"index not a number", record("t", "k", "id", "e1", "outboxrelay-position", "0/1", "outboxrelay-index", "x"), true, "", nil, ""},
		{"negative index", record("t", "k", "id", "e1", "outboxrelay-position", "0/1", "outboxrelay-index", "-1"), true, "", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ev, err := inbox.ParseEvent(c.msg)
			if c.bad {
				var re *inbox.RecordError
				if !errors.Is(err, inbox.ErrBadRecord) || !errors.As(err, &re) {
					t.Fatalf("ParseEvent: %v; want a *RecordError wrapping ErrBadRecord", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEvent: %v", err)
			}
			if ev.ID != c.wantID || ev.Type != c.wantType || string(ev.Aggregate) != "k" || ev.Message != c.msg {
				t.Fatalf("ParseEvent = %+v", ev)
			}
			if (c.wantVersion != nil) != ev.HasVersion || (c.wantVersion != nil && *c.wantVersion != ev.Version) {
				t.Fatalf("version = %v (has %v), want %v", ev.Version, ev.HasVersion, c.wantVersion)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  inbox.Config
		ok   bool
	}{
		{"defaults mysql", inbox.Config{Dialect: inbox.MySQL}, true},
		{"defaults postgres", inbox.Config{Dialect: inbox.Postgres, CheckVersion: true}, true},
		{"schema-qualified", inbox.Config{Dialect: inbox.Postgres, Table: "shop.inbox", VersionTable: "shop.inbox_version"}, true},
		{"no dialect", inbox.Config{}, false},
		{"injection", inbox.Config{Dialect: inbox.MySQL, Table: "inbox; DROP TABLE x"}, false},
		{"quoted", inbox.Config{Dialect: inbox.MySQL, Table: "`inbox`"}, false},
		{"same tables", inbox.Config{Dialect: inbox.MySQL, Table: "a", VersionTable: "a"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := c.cfg.Validate()
			if (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, c.ok)
			}
			_, nerr := inbox.New(c.cfg, func(context.Context, *sql.Tx, inbox.Event) error { return nil })
			if (nerr == nil) != c.ok {
				t.Fatalf("New() = %v, want ok=%v", nerr, c.ok)
			}
		})
	}
}

func TestResultString(t *testing.T) {
	t.Parallel()
	for r, want := range map[inbox.Result]string{inbox.Applied: "applied", inbox.Duplicate: "duplicate", inbox.Stale: "stale", 0: "Result(0)"} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(r), r.String(), want)
		}
	}
}

type sqlStateError string

func (e sqlStateError) Error() string    { return "sqlstate " + string(e) }
func (e sqlStateError) SQLState() string { return string(e) }

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"mysql deadlock", &mysql.MySQLError{Number: 1213}, true},
		{"mysql lock wait timeout", fmt.Errorf("wrapped: %w", &mysql.MySQLError{Number: 1205}), true},
		{"mysql duplicate key", &mysql.MySQLError{Number: 1062}, false},
		{"postgres serialization", sqlStateError("40001"), true},
		{"postgres deadlock", fmt.Errorf("x: %w", sqlStateError("40P01")), true},
		{"postgres unique violation", sqlStateError("23505"), false},
		{"bad record", inbox.ErrBadRecord, false},
		{"nil", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := inbox.IsRetryable(c.err); got != c.want {
				t.Fatalf("IsRetryable(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

func TestGroupHandlerSetupRefusesMissingParts(t *testing.T) {
	t.Parallel()
	in, err := inbox.New(inbox.Config{Dialect: inbox.MySQL}, func(context.Context, *sql.Tx, inbox.Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]*inbox.GroupHandler{"no DB": {Inbox: in}, "no Inbox": {DB: &sql.DB{}}} {
		if err := h.Setup(nil); err == nil {
			t.Errorf("%s: Setup succeeded", name)
		}
	}
	if err := (&inbox.GroupHandler{DB: &sql.DB{}, Inbox: in}).Setup(nil); err != nil {
		t.Errorf("complete handler: %v", err)
	}
}
