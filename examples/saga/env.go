package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/IBM/sarama"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// env is where the servers are; the flags default to run.sh's variables.
type env struct {
	mysqlAddr   string // MariaDB host:port, user root
	postgresDSN string // a maintenance database URL of the Postgres server
	brokers     string
}

func addEnvFlags(fs *flag.FlagSet) *env {
	e := &env{}
	fs.StringVar(&e.mysqlAddr, "mysql", "127.0.0.1:3306", "MariaDB host:port (user root, no password)")
	fs.StringVar(&e.postgresDSN, "postgres", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL URL of a maintenance database")
	fs.StringVar(&e.brokers, "brokers", "127.0.0.1:9092", "Kafka bootstrap broker")
	return e
}

// open connects to database name of the given dialect ("" for the server).
func (e *env) open(ctx context.Context, d inbox.Dialect, name string) (*sql.DB, error) {
	driver, dsn := "mysql", ""
	if d == inbox.Postgres {
		u, err := url.Parse(e.postgresDSN)
		if err != nil {
			return nil, fmt.Errorf("-postgres: %w", err)
		}
		if name != "" {
			u.Path = "/" + name
		}
		driver, dsn = "pgx", u.String()
	} else {
		c := mysql.NewConfig()
		c.User, c.Net, c.Addr, c.DBName = "root", "tcp", e.mysqlAddr, name
		dsn = c.FormatDSN()
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database %q: %w", d, name, err)
	}
	return db, nil
}

func (e *env) kafka() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.ClientID = "saga"
	c.Producer.Return.Successes = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Interval = 500 * time.Millisecond
	// A killed consumer's partitions move to its successor after this.
	c.Consumer.Group.Session.Timeout = 6 * time.Second
	c.Consumer.Group.Heartbeat.Interval = time.Second
	return c
}
