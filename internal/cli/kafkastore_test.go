package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	ckafka "github.com/outboxrelay/outboxrelay/checkpoint/kafka"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
)

// kafkaStoreConfig is base with the Kafka store on broker, for relay
// orders; extra relay keys follow relay.name.
func kafkaStoreConfig(t *testing.T, broker string, relayExtra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := strings.Replace(base, "kafka:\n  brokers: [127.0.0.1:1]\ncheckpoint:\n  file:\n    path: CPPATH\n",
		"kafka:\n  brokers: ["+broker+"]\ncheckpoint:\n  type: kafka\nrelay:\n  name: orders\n"+relayExtra, 1)
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func topicExists(t *testing.T, broker, topic string) bool {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.AllowAutoTopicCreation = false
	a, err := sarama.NewClusterAdmin([]string{broker}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	md, err := a.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 {
		t.Fatalf("describe %s: %v", topic, err)
	}
	return md[0].Err == sarama.ErrNoError
}

func checksOf(t *testing.T, out []byte) map[string]checkOutputCheck {
	t.Helper()
	var res struct {
		Checks []checkOutputCheck `json:"checks"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out)
	}
	m := map[string]checkOutputCheck{}
	for _, c := range res.Checks {
		m[c.Name] = c
	}
	return m
}

type checkOutputCheck struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Warning bool   `json:"warning"`
	Detail  string `json:"detail"`
	Fix     string `json:"fix"`
}

// TestKafkaStoreShowAndCheck: `checkpoint show` and `check` read the Kafka
// store — and, with nothing there, create nothing.
func TestKafkaStoreShowAndCheck(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	path := kafkaStoreConfig(t, b.Addr(), "  delivery: exactly-once\n")

	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"checkpoint", "show", "--config", path}, nil, &out, &errb)
	if code != ExitFailure || !strings.Contains(errb.String(), "no checkpoint stored at Kafka topic outboxrelay.positions, key orders: the relay will start at source.mysql.start") {
		t.Fatalf("show with nothing stored: exit %d, stderr %q", code, errb.String())
	}
	out.Reset()
	Main(context.Background(), []string{"check", "--config", path, "--json"}, nil, &out, &errb)
	checks := checksOf(t, out.Bytes())
	if c := checks["checkpoint"]; !c.OK || !strings.Contains(c.Detail, "does not exist yet: the relay creates it at its first start") {
		t.Errorf("checkpoint check %+v", c)
	}
	if c := checks["kafka.transaction_timeout"]; !c.OK || !strings.Contains(c.Detail, "kafka.transaction_timeout 1m0s ≤ the brokers' transaction.max.timeout.ms") {
		t.Errorf("transaction timeout check %+v", c)
	}
	if topicExists(t, b.Addr(), ckafka.DefaultTopic) {
		t.Fatal("show or check created the positions topic")
	}

	kc := kafka.Config{Brokers: []string{b.Addr()}}
	kc.SetDefaults()
	s, err := ckafka.New(ckafka.Config{}, "orders", kc, ckafka.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	written := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	if err := s.Save(context.Background(), checkpoint.Checkpoint{Source: "mysql", Position: "mysql-bin.000042:1234", UpdatedAt: written}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	code = Main(context.Background(), []string{"checkpoint", "show", "--config", path}, nil, &out, &errb)
	if code != ExitOK || !strings.Contains(out.String(), "stored:   Kafka topic outboxrelay.positions, key orders\nsource:   mysql\nposition: mysql-bin.000042:1234\n") ||
		!strings.Contains(out.String(), "(1h0m") || !strings.Contains(out.String(), "server:   unreachable") {
		t.Fatalf("show: exit %d\n%s\nstderr %s", code, out.String(), errb.String())
	}
	out.Reset()
	Main(context.Background(), []string{"check", "--config", path, "--json"}, nil, &out, &errb)
	if c := checksOf(t, out.Bytes())["checkpoint"]; !c.OK || !strings.Contains(c.Detail, "mysql-bin.000042:1234 at topic outboxrelay.positions, key orders, written "+written.Format(time.RFC3339)) {
		t.Errorf("checkpoint check %+v", c)
	}

	// A position of another kind of source is no position for this relay.
	if err := s.Save(context.Background(), checkpoint.Checkpoint{Source: "postgres", Position: "0/16B3748", UpdatedAt: written}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	Main(context.Background(), []string{"check", "--config", path, "--json"}, nil, &out, &errb)
	if c := checksOf(t, out.Bytes())["checkpoint"]; c.OK || !strings.Contains(c.Detail, "holds a postgres position (0/16B3748) but source.type is mysql") || !strings.Contains(c.Fix, "relay.name") {
		t.Errorf("checkpoint check %+v", c)
	}
}

// TestImportUsage: import needs --file and a configuration with the
// Kafka store.
func TestImportUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	filePath := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(filePath, []byte(strings.ReplaceAll(base, "CPPATH", filepath.Join(dir, "cp.json"))), 0o600); err != nil {
		t.Fatal(err)
	}
	kafkaPath := kafkaStoreConfig(t, "127.0.0.1:1", "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "import", "--config", kafkaPath}, "checkpoint import: --file is required"},
		{[]string{"checkpoint", "import", "--config", filePath, "--file", filepath.Join(dir, "cp.json")}, "set checkpoint.type: kafka (with relay.name)"},
		{[]string{"checkpoint", "import", "--config", kafkaPath, "--file", "x", "--force=maybe"}, `invalid boolean value "maybe" for --force`},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), tt.args, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errb.String(), tt.want)
		}
	}
	// A missing file is refused before anything connects.
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"checkpoint", "import", "--config", kafkaPath, "--file", filepath.Join(dir, "none.json")}, nil, &out, &errb); code != ExitFailure ||
		!strings.Contains(errb.String(), "refused: no checkpoint at "+filepath.Join(dir, "none.json")) {
		t.Errorf("missing file: exit %d, stderr %q", code, errb.String())
	}
}
