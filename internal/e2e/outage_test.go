package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/testdb"
)

// session is one writer connection that can tell whether an event is in
// the database (to decide, after a failed commit, whether it went through).
type session struct {
	d      dialect
	exists func(id string) (bool, error)
	close  func()
}

// writeThroughOutages writes the plan one transaction at a time, pacing
// them, and survives the server going away: a failed transaction is retried
// on a new connection unless it had committed. Plans written this way must
// not delete their outbox rows (DeleteToo), or a committed transaction would
// look absent. written counts transactions done.
func writeThroughOutages(t *testing.T, p plan, connect func() (session, error), pace time.Duration, written *atomic.Int64) {
	var s session
	var err error
	for i := 0; i < len(p.Txns); {
		if s.d.exec == nil {
			if s, err = connect(); err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
		}
		tx := p.Txns[i]
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%v", r)
				}
			}()
			one := plan{Txns: []txn{tx}}
			one.write(&panicTB{TB: t}, s.d, 0, 1)
			return nil
		}()
		if err != nil {
			s.close()
			s = session{}
			if tx.Rollback {
				i++
				continue
			}
			// Did the commit go through before the connection died?
			for {
				if s, err = connect(); err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if ok, err := s.exists(tx.Events[0].ID); err == nil && ok {
				i++
				written.Add(1)
			}
			continue
		}
		i++
		written.Add(1)
		time.Sleep(pace)
	}
	if s.close != nil {
		s.close()
	}
}

// panicTB turns Fatal into a panic the writer recovers from: during an
// outage a failed statement is expected.
type panicTB struct{ testing.TB }

func (p *panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (p *panicTB) Helper()                           {}

func noDeletes(p plan) plan {
	for i := range p.Txns {
		p.Txns[i].DeleteToo = false
	}
	return p
}

// waitCheckpoint waits until the relay's checkpoint reaches end.
func waitCheckpoint(t *testing.T, cpPath, end string, compare func(a, b string) (int, error), within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cp := readCheckpoint(t, cpPath); cp != "" {
			if c, err := compare(cp, end); err == nil && c >= 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %s did not reach %s within %s", readCheckpoint(t, cpPath), end, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// verifyAtLeastOnce checks 0 lost and 0 per-key order violations, allowing
// duplicates, and returns how many there were.
func verifyAtLeastOnce(t *testing.T, recs []devbroker.Record, want []event) int {
	t.Helper()
	rep := analyzeCrash(t, recs, want, nil, nil, nil)
	if rep.lost != 0 || rep.orderViolations != 0 {
		t.Errorf("lost %d, per-key order violations %d; want 0", rep.lost, rep.orderViolations)
	}
	return rep.duplicates
}

func outageCount(t *testing.T, logs string) int {
	t.Helper()
	return strings.Count(logs, "transient failure")
}

// killTarget adapts the server-kill test to one database.
type killTarget struct {
	srv     *testdb.Server
	yaml    func(broker, cpPath string) string
	connect func() (session, error)
	end     func(t testing.TB) string // the log's end now, in checkpoint form
	compare func(a, b string) (int, error)
	ready   string // logged once the relay streams
	after   func(t *testing.T, cpPath string)
}

// runServerKill kills the database with SIGKILL while rows are written and
// restarts it: the relay logs the outage once, reconnects from its
// checkpoint and loses nothing (duplicates allowed).
func runServerKill(t *testing.T, tg killTarget) {
	broker := startBroker(t, 3)
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, tg.yaml(broker.Addr(), cpPath))
	relay.waitLog(t, tg.ready)

	p := noDeletes(makePlan(21, "k", 300, 6000, 30, 10))
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeThroughOutages(t, p, tg.connect, 10*time.Millisecond, &written)
	}()
	for written.Load() < int64(len(p.Txns)/3) {
		time.Sleep(20 * time.Millisecond)
	}
	tg.srv.Kill(t)
	time.Sleep(2 * time.Second)
	tg.srv.Start(t)
	<-done

	waitCheckpoint(t, cpPath, tg.end(t), tg.compare, 2*time.Minute)
	relay.stop(t)
	if tg.after != nil {
		tg.after(t, cpPath)
	}
	dups := verifyAtLeastOnce(t, collectAll(t, broker), p.Want)
	logs := relay.logs.String()
	t.Logf("server killed once: %d duplicates, %d outage warnings", dups, outageCount(t, logs))
	if n := outageCount(t, logs); n != 1 {
		t.Errorf("logged %d outages for one server kill, want 1", n)
	}
	if !strings.Contains(logs, "recovered") {
		t.Error("no recovery logged")
	}
}

// TestIntegrationMySQLServerKilled: MariaDB killed and restarted under load;
// the relay resumes by GTID.
func TestIntegrationMySQLServerKilled(t *testing.T) {
	t.Parallel()
	srv, db := testdb.PrivateMariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	runServerKill(t, killTarget{
		srv:   srv,
		yaml:  func(broker, cp string) string { return mysqlRelayConfig(db, broker, cp, "current") },
		ready: "streaming binlog",
		connect: func() (session, error) {
			c, err := client.ConnectWithTimeout(db.Addr, db.User, db.Password, db.DB, 2*time.Second,
				func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
			if err != nil {
				return session{}, err
			}
			return session{
				d: mysqlDialect(c),
				exists: func(id string) (bool, error) {
					r, err := c.Execute("SELECT COUNT(*) FROM outbox WHERE id = ?", id)
					if err != nil {
						return false, err
					}
					n, _ := r.GetInt(0, 0)
					return n > 0, nil
				},
				close: func() { c.Close() },
			}, nil
		},
		end:     db.Position,
		compare: mysqlCompare,
	})
}

// TestIntegrationPostgresServerKilled: the slot survives the crash (its
// confirmed position may even go back); the relay resumes from its own
// checkpoint, and the slot never confirmed beyond it.
func TestIntegrationPostgresServerKilled(t *testing.T) {
	t.Parallel()
	srv, db := testdb.PrivatePostgres(t)
	db.Exec(t, postgresSchema, postgresNoise,
		"CREATE PUBLICATION "+db.Publication+" FOR TABLE public.outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('"+db.Slot+"', 'pgoutput')")
	runServerKill(t, killTarget{
		srv:   srv,
		yaml:  func(broker, cp string) string { return postgresRelayConfig(db, broker, cp) },
		ready: "streaming replication slot",
		connect: func() (session, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := pgx.Connect(ctx, db.DSN)
			if err != nil {
				return session{}, err
			}
			return session{
				d: postgresDialect(c),
				exists: func(id string) (bool, error) {
					var n int
					err := c.QueryRow(context.Background(), "SELECT count(*) FROM outbox WHERE id = $1", id).Scan(&n)
					return n > 0, err
				},
				close: func() { c.Close(context.Background()) },
			}, nil
		},
		end:     func(t testing.TB) string { return db.QueryString(t, "SELECT pg_current_wal_lsn()::text") },
		compare: postgresCompare,
		after:   func(t *testing.T, cpPath string) { checkSlotBehindCheckpoint(t, db, cpPath) },
	})
}

// TestIntegrationBrokerOutage stops the dev broker for 30 s while rows are
// written, then restarts it with its data: the relay retries with backoff,
// logs the outage once, and loses nothing.
func TestIntegrationBrokerOutage(t *testing.T) {
	t.Parallel()
	db := testdb.MariaDB(t)
	db.Exec(t, mysqlSchema, mysqlNoise)
	dataDir := t.TempDir()
	broker, err := devbroker.Start(devbroker.Options{Partitions: 3, DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	addr := broker.Addr()
	cpPath := filepath.Join(t.TempDir(), "checkpoint.json")
	relay := startRelay(t, mysqlRelayConfig(db, addr, cpPath, db.Position(t)))

	p := makePlan(23, "b", 300, 6000, 30, 10)
	d := mysqlDialect(db.Conn(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range p.Txns {
			p.write(t, d, i, i+1)
			time.Sleep(60 * time.Millisecond) // ~18 s of writes
		}
	}()
	time.Sleep(3 * time.Second)
	broker.Close()
	time.Sleep(30 * time.Second)
	broker, err = devbroker.Start(devbroker.Options{Addr: addr, Partitions: 3, DataDir: dataDir})
	if err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	t.Cleanup(broker.Close)
	<-done

	waitCheckpoint(t, cpPath, db.Position(t), mysqlCompare, 2*time.Minute)
	relay.stop(t)
	dups := verifyAtLeastOnce(t, collectAll(t, broker), p.Want)
	logs := relay.logs.String()
	t.Logf("broker down 30 s: %d duplicates, %d outage warnings", dups, outageCount(t, logs))
	if n := outageCount(t, logs); n != 1 {
		t.Errorf("logged %d outages for one broker outage, want 1", n)
	}
}
