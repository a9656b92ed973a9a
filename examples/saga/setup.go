package main

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// setup creates each service's database, tables (its own, its outbox and
// its inbox) and the topics, so that consumers can subscribe before the
// first record exists.
func setup(ctx context.Context, e *env) error {
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		s := services[name]
		if err := createDatabase(ctx, e, s.dialect, name); err != nil {
			return err
		}
		db, err := e.open(ctx, s.dialect, name)
		if err != nil {
			return err
		}
		for _, stmt := range append(append([]string(nil), s.tables...), outboxDDL(s.dialect)) {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				db.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		in, err := s.inbox()
		if err == nil {
			err = in.CreateTables(ctx, db)
		}
		db.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	admin, err := sarama.NewClusterAdmin([]string{e.brokers}, e.kafka())
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	defer admin.Close()
	for _, t := range []string{topicOrder, topicPayment, topicShipment} {
		err := admin.CreateTopic(t, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	fmt.Println("created databases orders, shipping (MariaDB) and payments (PostgreSQL), their tables, and the topics")
	return nil
}

func createDatabase(ctx context.Context, e *env, d inbox.Dialect, name string) error {
	db, err := e.open(ctx, d, "")
	if err != nil {
		return err
	}
	defer db.Close()
	if d == inbox.MySQL {
		_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+name)
		return err
	}
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		return err
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+name)
	return err
}
