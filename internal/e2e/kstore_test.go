package e2e

import (
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
	"github.com/outboxrelay/outboxrelay/checkpoint/file"
	ckafka "github.com/outboxrelay/outboxrelay/checkpoint/kafka"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
	"github.com/outboxrelay/outboxrelay/sink/kafka"
)

// Tests of the Kafka checkpoint store through the command line, on both
// sources: the relay keeps its position there, `checkpoint show` and
// `check` read it, `checkpoint set` moves it (fencing a running
// exactly-once relay), `checkpoint import` moves a file checkpoint there,
// and a relay started again resumes from it.

// withKafkaStore turns a test relay's YAML (relaySections) to the Kafka
// store for relay name; relayExtra are more relay keys.
func withKafkaStore(t testing.TB, yaml, name, relayExtra string) string {
	t.Helper()
	i := strings.Index(yaml, "checkpoint:\n  file:\n    path: ")
	if i < 0 || !strings.Contains(yaml, "\nrelay:\n") {
		t.Fatalf("not a test relay's YAML:\n%s", yaml)
	}
	end := i + strings.Index(yaml[i:], "\nrelay:\n")
	return yaml[:i] + "checkpoint:\n  type: kafka" + strings.Replace(yaml[end:], "\nrelay:\n", "\nrelay:\n  name: "+name+"\n"+relayExtra, 1)
}

func writeConfig(t testing.TB, dir, name, yaml string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// kafkaPosition is what the Kafka store holds for relay name.
func kafkaPosition(t testing.TB, broker, name string) checkpoint.Checkpoint {
	t.Helper()
	kc := kafka.Config{Brokers: []string{broker}}
	kc.SetDefaults()
	s, err := ckafka.New(ckafka.Config{}, name, kc, ckafka.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, err := s.Load(ctx)
	if err != nil {
		t.Fatalf("load the position of %s from Kafka: %v", name, err)
	}
	return cp
}

// fileCheckpoint writes a file checkpoint at dir/name.
func fileCheckpoint(t testing.TB, dir, name string, cp checkpoint.Checkpoint) string {
	t.Helper()
	p := filepath.Join(dir, name)
	s, _ := file.New(file.Config{Path: p})
	if err := s.Save(context.Background(), cp); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRun(t testing.TB, args ...string) (stdout, stderr string) {
	t.Helper()
	code, out, errOut := runCLI(context.Background(), args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

func mustRefuse(t testing.TB, want string, args ...string) {
	t.Helper()
	code, out, errOut := runCLI(context.Background(), args...)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q; want a refusal containing %q", strings.Join(args, " "), code, out, errOut, want)
	}
}

// showJSON is `checkpoint show --json`.
func showJSON(t testing.TB, cfgPath string) (shown struct {
	Store          string `json:"store"`
	Source         string `json:"source"`
	Position       string `json:"position"`
	ServerPosition string `json:"server_position"`
	BehindBytes    *int64 `json:"behind_bytes"`
}) {
	t.Helper()
	out, _ := mustRun(t, "checkpoint", "show", "--config", cfgPath, "--json")
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show --json: %v: %s", err, out)
	}
	return shown
}

// checkpointCheck is check --json's checkpoint check.
func checkpointCheckOf(t testing.TB, cfgPath string) (ok bool, detail string) {
	t.Helper()
	_, out, _ := runCLI(context.Background(), "check", "--config", cfgPath, "--json")
	var res struct {
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("check --json: %v: %s", err, out)
	}
	for _, c := range res.Checks {
		if c.Name == "checkpoint" {
			return c.OK, c.Detail
		}
	}
	t.Fatalf("check --json has no checkpoint check: %s", out)
	return false, ""
}

// TestIntegrationMySQLKafkaStore: a MariaDB relay on the Kafka store;
// show, check, set (at-least-once: with the warning that a running relay
// overwrites it) and import against the server; the relay resumes from
// the imported position.
func TestIntegrationMySQLKafkaStore(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	name := "e2e-" + db.DB
	p0 := db.Position(t)
	yaml := withKafkaStore(t, mysqlRelayConfig(db, broker.Addr(), filepath.Join(dir, "unused.json"), p0), name, "")
	cfgPath := writeConfig(t, dir, "relay.yaml", yaml)

	relay := startRelay(t, yaml)
	p := makePlan(41, "ks", 40, 400, 8, 0)
	d := mysqlDialect(db.Conn(t))
	p.write(t, d, 0, 20)
	p1 := db.Position(t) // between transaction 20 and 21
	p.write(t, d, 20, 40)
	collect(t, broker, len(p.Want), time.Minute)
	relay.stop(t)
	stored := kafkaPosition(t, broker.Addr(), name)
	if c, err := mysqlCompare(stored.Position, p1); err != nil || c <= 0 || stored.Source != "mysql" {
		t.Fatalf("the relay stored %+v in Kafka; want a mysql position after %s (%v)", stored, p1, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "unused.json")); err == nil {
		t.Fatal("the relay wrote a checkpoint file with checkpoint.type kafka")
	}

	// show and check read it.
	shown := showJSON(t, cfgPath)
	if shown.Position != stored.Position || shown.Store != "Kafka topic outboxrelay.positions, key "+name || shown.ServerPosition == "" || shown.BehindBytes == nil {
		t.Fatalf("show --json = %+v; want %s with the server's view", shown, stored.Position)
	}
	if ok, detail := checkpointCheckOf(t, cfgPath); !ok || !strings.Contains(detail, stored.Position+" at topic outboxrelay.positions, key "+name) {
		t.Fatalf("check's checkpoint: ok %v, %q", ok, detail)
	}

	// set: checked against the server; a dry run writes nothing; the
	// at-least-once Kafka store has no lock, so it warns.
	mustRefuse(t, "does not exist on this server yet", "checkpoint", "set", "--config", cfgPath, "--to", "mysql-bin.999999:4")
	out, errOut := mustRun(t, "checkpoint", "set", "--config", cfgPath, "--to", p0, "--dry-run")
	if !strings.Contains(out, "dry run: nothing written") || !strings.Contains(errOut, "has no lock: a relay named "+name+" that is running now overwrites this position") ||
		kafkaPosition(t, broker.Addr(), name).Position != stored.Position {
		t.Fatalf("set --dry-run: stdout %q, stderr %q", out, errOut)
	}
	out, _ = mustRun(t, "checkpoint", "set", "--config", cfgPath, "--to", p0)
	if got := kafkaPosition(t, broker.Addr(), name); !strings.HasPrefix(got.Position, p0+"@") || !strings.Contains(out, "from: "+stored.Position) {
		t.Fatalf("after set --to %s: Kafka holds %s; output %q", p0, got.Position, out)
	}

	// import: refused over an existing position without --force, and
	// for another source's checkpoint; --force moves it.
	written := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	cpFile := fileCheckpoint(t, dir, "checkpoint.json", checkpoint.Checkpoint{Source: "mysql", Position: p1, UpdatedAt: written})
	mustRefuse(t, "already holds position "+p0, "checkpoint", "import", "--config", cfgPath, "--file", cpFile)
	pgFile := fileCheckpoint(t, dir, "pg.json", checkpoint.Checkpoint{Source: "postgres", Position: "0/16B3748", UpdatedAt: written})
	mustRefuse(t, "holds a postgres position (0/16B3748) but source.type is mysql", "checkpoint", "import", "--config", cfgPath, "--file", pgFile, "--force")
	badFile := fileCheckpoint(t, dir, "bad.json", checkpoint.Checkpoint{Source: "mysql", Position: "mysql-bin.999999:4", UpdatedAt: written})
	mustRefuse(t, "does not exist on this server yet", "checkpoint", "import", "--config", cfgPath, "--file", badFile, "--force")
	mustRun(t, "checkpoint", "import", "--config", cfgPath, "--file", cpFile, "--force", "--dry-run")
	if got := kafkaPosition(t, broker.Addr(), name); !strings.HasPrefix(got.Position, p0+"@") {
		t.Fatalf("import --dry-run changed the position to %s", got.Position)
	}
	out, _ = mustRun(t, "checkpoint", "import", "--config", cfgPath, "--file", cpFile, "--force")
	got := kafkaPosition(t, broker.Addr(), name)
	if !strings.HasPrefix(got.Position, p1+"@") || !got.UpdatedAt.Equal(written) || !strings.Contains(out, "imported:") {
		t.Fatalf("after import: Kafka holds %+v; want %s (with its GTIDs) written %s; output %q", got, p1, written, out)
	}

	// The relay resumes right after the imported position: transactions
	// 21 to 40 once more.
	relay = startRelay(t, yaml)
	again := len(p.Want) - p.committedBefore(20)
	collect(t, broker, len(p.Want)+again, time.Minute)
	relay.stop(t)
	if n := len(collectAll(t, broker)); n != len(p.Want)+again {
		t.Fatalf("%d records after resuming at the imported position; want %d + %d", n, len(p.Want), again)
	}
}

// TestIntegrationPostgresKafkaStore: a Postgres relay on the Kafka store;
// with relay.delivery exactly-once, `checkpoint set` and `import` commit
// in a transaction of the relay's transactional id, fencing a running
// exactly-once producer of it; the relay then resumes exactly from the
// position, delivering the rest once.
func TestIntegrationPostgresKafkaStore(t *testing.T) {
	t.Parallel()
	db := setupPostgres(t)
	broker := startBroker(t, 3)
	dir := t.TempDir()
	name := "e2e-" + db.Slot
	base := postgresRelayConfig(db, broker.Addr(), filepath.Join(dir, "unused.json"))
	yaml := withKafkaStore(t, base, name, "")
	eosPath := writeConfig(t, dir, "eos.yaml", withKafkaStore(t, base, name, "  delivery: exactly-once\n"))

	relay := startRelay(t, yaml)
	relay.waitLog(t, "streaming replication slot") // the slot exists from here on
	p := makePlan(43, "kp", 40, 400, 8, 3)
	d := postgresDialect(db.Conn(t))
	half := len(p.Txns) / 2
	p.write(t, d, 0, half)
	first := 0
	for _, tx := range p.Txns[:half] {
		if !tx.Rollback {
			first += len(tx.Events)
		}
	}
	collect(t, broker, first, time.Minute)
	relay.stop(t)
	stored := kafkaPosition(t, broker.Addr(), name)
	p.write(t, d, half, len(p.Txns)) // while no relay runs

	shown := showJSON(t, eosPath)
	if shown.Position != stored.Position || shown.Source != "postgres" || shown.BehindBytes == nil || *shown.BehindBytes <= 0 {
		t.Fatalf("show --json = %+v; want %s, behind the server", shown, stored.Position)
	}
	if ok, detail := checkpointCheckOf(t, eosPath); !ok || !strings.Contains(detail, stored.Position) {
		t.Fatalf("check's checkpoint: ok %v, %q", ok, detail)
	}

	// An exactly-once relay of this name, in the middle of a transaction.
	zombie := fencedProducer(t, broker.Addr(), kafka.TransactionalID(name))
	mustRefuse(t, "behind replication slot", "checkpoint", "set", "--config", eosPath, "--to", "0/1")
	out, _ := mustRun(t, "checkpoint", "set", "--config", eosPath, "--to", stored.Position)
	if !strings.Contains(out, "fences a running exactly-once relay named "+name) {
		t.Errorf("set with exactly-once does not say it fences: %q", out)
	}
	if err := zombie.CommitTxn(); err == nil {
		t.Fatal("the exactly-once producer committed after checkpoint set: it was not fenced")
	}
	if got := kafkaPosition(t, broker.Addr(), name); got.Position != stored.Position || !got.UpdatedAt.After(stored.UpdatedAt) {
		t.Fatalf("after set: %+v; want %s written anew", got, stored.Position)
	}

	// import: refused over the position without --force, for a MySQL
	// checkpoint, and for a position the slot has passed.
	written := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	cpFile := fileCheckpoint(t, dir, "checkpoint.json", checkpoint.Checkpoint{Source: "postgres", Position: stored.Position, UpdatedAt: written})
	mustRefuse(t, "already holds position "+stored.Position, "checkpoint", "import", "--config", eosPath, "--file", cpFile)
	myFile := fileCheckpoint(t, dir, "my.json", checkpoint.Checkpoint{Source: "mysql", Position: "mysql-bin.000001:4", UpdatedAt: written})
	mustRefuse(t, "holds a mysql position", "checkpoint", "import", "--config", eosPath, "--file", myFile, "--force")
	oldFile := fileCheckpoint(t, dir, "old.json", checkpoint.Checkpoint{Source: "postgres", Position: "0/1", UpdatedAt: written})
	mustRefuse(t, "behind replication slot", "checkpoint", "import", "--config", eosPath, "--file", oldFile, "--force")
	zombie = fencedProducer(t, broker.Addr(), kafka.TransactionalID(name))
	out, _ = mustRun(t, "checkpoint", "import", "--config", eosPath, "--file", cpFile, "--force")
	if got := kafkaPosition(t, broker.Addr(), name); got.Position != stored.Position || !got.UpdatedAt.Equal(written) || !strings.Contains(out, "fences a running exactly-once relay") {
		t.Fatalf("after import: %+v, output %q", got, out)
	}
	if err := zombie.CommitTxn(); err == nil {
		t.Fatal("the exactly-once producer committed after checkpoint import: it was not fenced")
	}

	// Resumed from the Kafka store: the second half arrives, nothing twice.
	relay = startRelay(t, yaml)
	collect(t, broker, len(p.Want), time.Minute)
	relay.stop(t)
	verifyExactlyOnce(t, collectAll(t, broker), p.Want)
}

// fencedProducer is a transactional producer of id with a transaction
// open (one record written), as an exactly-once relay between commits.
func fencedProducer(t testing.TB, broker, id string) sarama.SyncProducer {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Transaction.ID = id
	p, err := sarama.NewSyncProducer([]string{broker}, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "zombie.records", Value: sarama.StringEncoder("x")}); err != nil {
		t.Fatal(err)
	}
	return p
}
