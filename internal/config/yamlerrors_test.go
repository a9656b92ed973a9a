package config

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestYAMLErrorsNameThePathAndTheFix: each mistake in the file is reported
// with its line, its full key path and what to write instead; a secret's
// value never appears.
func TestYAMLErrorsNameThePathAndTheFix(t *testing.T) {
	t.Parallel()
	// valid's lines: 1 empty, 2 source:, 3 type, 4 mysql:, 5 addr, 6 user,
	// 7 password, 8 server_id, 9 tables, 10 kafka:, 11 brokers, …
	tests := []struct {
		name, yaml string
		want       string // the whole message
	}{
		{"misspelled key", strings.Replace(valid, "server_id: 4242", "server_idd: 4242", 1),
			"config: line 8: source.mysql.server_idd: unknown key (did you mean server_id?)"},
		{"swapped letters", strings.Replace(valid, "tables:", "tabels:", 1),
			"config: line 9: source.mysql.tabels: unknown key (did you mean tables?)"},
		{"dash for underscore", strings.Replace(valid, "server_id: 4242", "server-id: 4242", 1),
			"config: line 8: source.mysql.server-id: unknown key (did you mean server_id?)"},
		{"key at the wrong level", strings.Replace(valid, "    tables: [", "  tables: [", 1),
			"config: line 9: source.tables: unknown key (did you mean source.mysql.tables or source.postgres.tables?)"},
		{"unknown top-level key", valid + "bogus: 1\n",
			"config: line 15: bogus: unknown key (known keys here: checkpoint, kafka, log, metrics, outbox, pipelines, relay, source)"},
		{"not a number", strings.Replace(valid, "server_id: 4242", "server_id: abc", 1),
			`config: line 8: source.mysql.server_id: "abc" is not a number (want an unsigned integer up to 4294967295)`},
		{"negative", strings.Replace(valid, "server_id: 4242", "server_id: -1", 1),
			`config: line 8: source.mysql.server_id: "-1" is negative (want an unsigned integer up to 4294967295)`},
		{"too large", strings.Replace(valid, "server_id: 4242", "server_id: 4294967296", 1),
			`config: line 8: source.mysql.server_id: "4294967296" is out of range (want an unsigned integer up to 4294967295)`},
		{"fraction", strings.Replace(valid, "server_id: 4242", "server_id: 1.5", 1),
			`config: line 8: source.mysql.server_id: "1.5" is not a whole number (want an unsigned integer up to 4294967295)`},
		{"duration without unit", valid + "relay:\n  shutdown_timeout: 30\n",
			`config: line 16: relay.shutdown_timeout: "30" is not a duration (want a number with a unit: 500ms, 30s, 5m)`},
		{"not a boolean", valid + "kafka:\n  tls:\n    enabled: maybe\n",
			`config: line 15: kafka: set twice (first at line 10)` + "\n" +
				`line 17: kafka.tls.enabled: "maybe" is not a boolean (true or false)`},
		{"scalar for a list", strings.Replace(valid, "[127.0.0.1:9092]", "127.0.0.1:9092", 1),
			`config: line 11: kafka.brokers: "127.0.0.1:9092" is not a list (write [127.0.0.1:9092])`},
		{"list for a string", strings.Replace(valid, "addr: 127.0.0.1:3307", "addr: [127.0.0.1:3307]", 1),
			`config: line 5: source.mysql.addr: want a string, not a list`},
		{"scalar for a section", strings.Replace(valid, "checkpoint:\n  file:\n    path: /tmp/cp.json", "checkpoint: /tmp/cp.json", 1),
			`config: line 12: checkpoint: "/tmp/cp.json" is not a mapping of keys`},
		{"key set twice", strings.Replace(valid, "    user: relay\n", "    user: relay\n    user: other\n", 1),
			`config: line 7: source.mysql.user: set twice (first at line 6)`},
		{"map of mappings", valid + "outbox:\n  tables:\n    shop.outbox:\n      topc: x\n",
			`config: line 18: outbox.tables["shop.outbox"].topc: unknown key (did you mean topic?)`},
		{"list of mappings", valid + "outbox:\n  fields:\n    - column: a\n      placment: header\n",
			`config: line 18: outbox.fields[0].placment: unknown key (did you mean placement?)`},
		{"several mistakes, in file order", strings.Replace(strings.Replace(valid, "user:", "usr:", 1), "server_id: 4242", "server_id: x", 1),
			"config: line 6: source.mysql.usr: unknown key (did you mean user?)\n" +
				`line 8: source.mysql.server_id: "x" is not a number (want an unsigned integer up to 4294967295)`},
		{"syntax error", "source:\n  type: mysql\n   bad: indent\n",
			"config: line 3: mapping values are not allowed in this context"},
		{"secret value never shown", strings.Replace(valid, "password: s3cret", "password: [s3cret]", 1),
			`config: line 7: source.mysql.password: want a string, not a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("parsed")
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("leaks the secret: %s", err)
			}
		})
	}
}

// TestYAMLSecretsNeverShown: a bad value under a secret's key is named by
// its key only.
func TestYAMLSecretsNeverShown(t *testing.T) {
	t.Parallel()
	type secrets struct {
		DSN      []string          `yaml:"dsn"`
		Password int               `yaml:"password"`
		Token    map[string]string `yaml:"token"`
	}
	for _, src := range []string{"dsn: s3cret", "password: s3cret", "token: s3cret", "password: [s3cret]"} {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		w := walker{seen: map[walked]bool{}}
		w.walk(doc.Content[0], reflect.TypeOf(secrets{}), "")
		if len(w.errs) != 1 {
			t.Fatalf("%s: %v", src, w.errs)
		}
		if msg := w.errs[0].String(); strings.Contains(msg, "s3cret") {
			t.Errorf("%s: leaks the secret: %s", src, msg)
		}
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"server_id", "server_id", 0}, {"server_idd", "server_id", 1}, {"tabels", "tables", 1},
		{"usr", "user", 1}, {"abc", "", 3}, {"kitten", "sitting", 3}, {"ça", "ca", 1},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestYAMLAnchorsAndMergeKeys: anchors, aliases and "<<" merge keys are
// walked like the keys they stand for.
func TestYAMLAnchorsAndMergeKeys(t *testing.T) {
	t.Parallel()
	ok := valid + "outbox:\n  tables:\n    shop.a: &m {topic: a}\n    shop.b: {<<: *m, tracing_column: trace}\n"
	if _, err := Parse([]byte(ok), nil); err != nil {
		t.Fatalf("merge keys: %v", err)
	}
	bad := valid + "outbox:\n  tables:\n    shop.a: &m {topik: a}\n    shop.b: {<<: *m}\n"
	_, err := Parse([]byte(bad), nil)
	if want := `config: line 17: outbox.tables["shop.a"].topik: unknown key (did you mean topic?)`; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}
