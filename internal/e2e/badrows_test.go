package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// badCase is one kind of bad row, written between two good rows.
type badCase struct {
	name, reason string
	// VALUES of the bad row (id, aggregatetype, aggregateid, type, payload)
	// per database; "" means the case does not apply there.
	mysql, postgres string
	outbox          string // extra lines under outbox:
	kafka           string // extra lines under kafka:
	detail          string // in the error text
}

var badCases = []badCase{
	{name: "null key", reason: outbox.ReasonNullKey, detail: "is NULL or empty",
		mysql: `('bad-1', 'order', NULL, 'T', '{}')`, postgres: `('bad-1', 'order', NULL, 'T', '{}')`},
	{name: "invalid json", reason: outbox.ReasonInvalidJSON, detail: "not valid JSON", outbox: "payload_format: json",
		mysql: `('bad-1', 'order', 'k', 'T', '{nope')`, postgres: `('bad-1', 'order', '\x6b', 'T', '{nope')`},
	{name: "too large", reason: outbox.ReasonTooLarge, detail: "over kafka.max_message_bytes", kafka: "max_message_bytes: 2048",
		mysql: `('bad-1', 'order', 'k', 'T', REPEAT('x', 5000))`, postgres: `('bad-1', 'order', '\x6b', 'T', repeat('x', 5000))`},
	{name: "bad topic", reason: outbox.ReasonBadTopic, detail: "character Kafka rejects",
		mysql: `('bad-1', 'or der!', 'k', 'T', '{}')`, postgres: `('bad-1', 'or der!', '\x6b', 'T', '{}')`},
	// A latin1 column's bytes reach the relay undecoded (MySQL); a bytea
	// key holds any bytes (Postgres).
	{name: "not utf-8", reason: outbox.ReasonNotUTF8, detail: "not valid UTF-8",
		mysql: `('bad-1', CONVERT('ordré' USING latin1), 'k', 'T', '{}')`, postgres: `('bad-1', 'order', '\xff00', 'T', '{}')`},
}

// Bad-row tables: aggregatetype is latin1 (MySQL) and aggregateid bytea
// (Postgres) so that the not-UTF-8 case can be written at all.
const mysqlBadSchema = `CREATE TABLE outbox (
	id VARCHAR(64) NOT NULL PRIMARY KEY,
	aggregatetype VARCHAR(255) CHARACTER SET latin1,
	aggregateid VARBINARY(255),
	type VARCHAR(255) NOT NULL,
	payload LONGTEXT)`

const postgresBadSchema = `CREATE TABLE outbox (
	id text PRIMARY KEY,
	aggregatetype text,
	aggregateid bytea,
	type text NOT NULL,
	payload text)`

// badTarget is a database prepared for bad-row tests.
type badTarget struct {
	exec  func(t *testing.T, stmts ...string)
	good  [2]string // VALUES of the good rows before and after
	yaml  func(broker, cpPath string) string
	table string
}

// withLines adds lines (YAML, one level deep) under a top-level section,
// creating the section when the config has none.
func withLines(yaml, section, lines string) string {
	if lines == "" {
		return yaml
	}
	indented := "  " + strings.ReplaceAll(lines, "\n", "\n  ") + "\n"
	if strings.Contains(yaml, "\n"+section+":\n") {
		return strings.Replace(yaml, "\n"+section+":\n", "\n"+section+":\n"+indented, 1)
	}
	return strings.TrimRight(yaml, "\n") + "\n" + section + ":\n" + indented
}

func runBadRowCases(t *testing.T, newTarget func(t *testing.T) badTarget, dialectOf func(badCase) string) {
	for _, c := range badCases {
		if dialectOf(c) == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t)
			for _, policy := range []string{outbox.PolicyFail, outbox.PolicySkip, outbox.PolicyDeadLetter} {
				tg.exec(t, "DELETE FROM outbox")
				broker := startBroker(t, 1)
				cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
				yaml := tg.yaml(broker.Addr(), cpPath)
				lines := "on_bad_row: " + policy + "\ndead_letter_topic: outbox.dlq"
				if c.outbox != "" {
					lines += "\n" + c.outbox
				}
				yaml = withLines(withLines(yaml, "outbox", lines), "kafka", c.kafka)
				var relay *runningRelay
				if policy != outbox.PolicyFail {
					relay = startRelay(t, yaml)
					relay.waitLog(t, "streaming")
				}
				// Written before a failing relay starts from the same
				// position: it must stop at the bad row.
				ins := "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES "
				tg.exec(t, ins+tg.good[0])
				tg.exec(t, ins+dialectOf(c))
				tg.exec(t, ins+tg.good[1])
				checkPolicy(t, c, policy, tg, yaml, broker, relay, cpPath)
			}
		})
	}
}

var txAt = regexp.MustCompile(`transaction at (\S+), row`)

func checkPolicy(t *testing.T, c badCase, policy string, tg badTarget, yaml string, broker *devbroker.Broker, relay *runningRelay, cpPath string) {
	t.Helper()
	switch policy {
	case outbox.PolicyFail:
		err := runRelayExpectingError(t, yaml)
		msg := err.Error()
		for _, want := range []string{tg.table, "event id bad-1", c.detail, "on_bad_row"} {
			if !strings.Contains(msg, want) {
				t.Errorf("fail: error %q lacks %q", msg, want)
			}
		}
		m := txAt.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("fail: error %q names no transaction position", msg)
		}
		recs := collectAll(t, broker)
		if len(recs) != 1 {
			t.Fatalf("fail: %d records arrived, want only the good row before the bad one", len(recs))
		}
		// The checkpoint covers the first transaction and stops before the
		// bad one.
		cp := loadCheckpoint(t, cpPath).Position
		first, _ := recs[0].Header(outbox.HeaderPosition)
		cmp := mysqlCompare
		if strings.Contains(cp, "/") {
			cmp = postgresCompare
		}
		if c1, err := cmp(cp, first); err != nil || c1 <= 0 {
			t.Errorf("fail: checkpoint %s not after the first transaction %s (%v)", cp, first, err)
		}
		if c2, err := cmp(cp, m[1]); err != nil || c2 > 0 {
			t.Errorf("fail: checkpoint %s is beyond the bad row's transaction %s (%v)", cp, m[1], err)
		}
	case outbox.PolicySkip:
		collect(t, broker, 2, 30*time.Second)
		relay.stop(t)
		if n := len(collectAll(t, broker)); n != 2 {
			t.Errorf("skip: %d records, want the 2 good ones", n)
		}
		logs := relay.logs.String()
		if n := strings.Count(logs, "bad outbox row skipped"); n != 1 || !strings.Contains(logs, `"reason":"`+c.reason+`"`) {
			t.Errorf("skip: %d skip warnings (want 1 with reason %s):\n%s", n, c.reason, logs)
		}
	case outbox.PolicyDeadLetter:
		collect(t, broker, 2, 30*time.Second)
		relay.stop(t)
		recs, err := collectDLQ(broker)
		if err != nil || len(recs) != 1 {
			t.Fatalf("dead-letter: %d records in outbox.dlq (%v), want 1", len(recs), err)
		}
		r := recs[0]
		for k, want := range map[string]string{outbox.HeaderReason: c.reason, outbox.HeaderTable: tg.table, outbox.HeaderID: "bad-1"} {
			if v, _ := r.Header(k); v != want {
				t.Errorf("dead-letter: header %s = %q, want %q", k, v, want)
			}
		}
		if v, _ := r.Header(outbox.HeaderError); !strings.Contains(v, c.detail) {
			t.Errorf("dead-letter: error header %q lacks %q", v, c.detail)
		}
		var cols map[string]any
		if err := json.Unmarshal(r.Value, &cols); err != nil || cols["id"] != "bad-1" || cols["type"] != "T" {
			t.Errorf("dead-letter: value %s (%v), want the row's columns", r.Value, err)
		}
		if n := len(collectAll(t, broker)); n != 2 {
			t.Errorf("dead-letter: %d records on the outbox topics, want the 2 good ones", n)
		}
	}
}

func collectDLQ(b *devbroker.Broker) ([]devbroker.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return devbroker.CollectUntilIdle(ctx, []string{b.Addr()}, `^outbox\.dlq$`, time.Second)
}

func TestIntegrationMySQLBadRows(t *testing.T) {
	t.Parallel()
	runBadRowCases(t, func(t *testing.T) badTarget {
		db := testdb.MariaDB(t)
		db.Exec(t, mysqlBadSchema)
		return badTarget{
			exec:  func(t *testing.T, stmts ...string) { db.Exec(t, stmts...) },
			good:  [2]string{`('good-1', 'order', 'k', 'T', '{}')`, `('good-2', 'order', 'k', 'T', '{}')`},
			yaml:  func(broker, cp string) string { return mysqlRelayConfig(db, broker, cp, db.Position(t)) },
			table: db.DB + ".outbox",
		}
	}, func(c badCase) string { return c.mysql })
}

func TestIntegrationPostgresBadRows(t *testing.T) {
	t.Parallel()
	runBadRowCases(t, func(t *testing.T) badTarget {
		db := testdb.Postgres(t)
		db.Exec(t, postgresBadSchema,
			"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')")
		return badTarget{
			exec: func(t *testing.T, stmts ...string) { db.Exec(t, stmts...) },
			good: [2]string{`('good-1', 'order', '\x6b', 'T', '{}')`, `('good-2', 'order', '\x6b', 'T', '{}')`},
			yaml: func(broker, cp string) string {
				// Each policy run starts from a fresh slot created now.
				db.Exec(t, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"+db.Slot+"'",
					"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
				return postgresRelayConfig(db, broker, cp)
			},
			table: "public.outbox",
		}
	}, func(c badCase) string { return c.postgres })
}

// TestIntegrationMissingColumnAtStart: a table lacking a configured column
// stops the relay at start, naming the table and the columns it has.
func TestIntegrationMissingColumnAtStart(t *testing.T) {
	t.Parallel()
	my := testdb.MariaDB(t)
	my.Exec(t, mysqlBadSchema)
	pg := testdb.Postgres(t)
	pg.Exec(t, postgresBadSchema)
	for name, yaml := range map[string]string{
		"mysql":    mysqlRelayConfig(my, "127.0.0.1:1", filepath.Join(t.TempDir(), "a.json"), "current"),
		"postgres": postgresRelayConfig(pg, "127.0.0.1:1", filepath.Join(t.TempDir(), "b.json")),
	} {
		err := runRelayExpectingError(t, withLines(yaml, "outbox", "columns: {aggregate_id: order_id}"))
		for _, want := range []string{".outbox lacks the configured column(s) [order_id]", "it has [id aggregatetype aggregateid type payload]"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q lacks %q", name, err, want)
			}
		}
	}
}
