// Command saga is a choreography saga built on outboxrelay and package
// inbox: three services, each with its own database, outbox table, relay
// and inbox, that talk only through Kafka records.
//
//	orders   (MariaDB)  OrderCreated ─────────────► payments (Postgres)
//	orders   ◄───────── PaymentSucceeded/PaymentFailed ─┤
//	shipping (MariaDB)  ◄── PaymentSucceeded ───────────┘
//	orders   ◄───────── ShipmentCreated ── shipping
//	orders:  PaymentFailed → OrderCancelled (the compensation)
//
// Every handler changes its service's tables and writes its outgoing
// events to its outbox in the transaction in which the inbox records the
// incoming event, so each effect happens once however often Kafka delivers.
//
// It owns the example only: the services' tables, their consumer groups and
// the check of their final state. It drives the relay through its outbox
// tables alone. run.sh runs it all, with failures injected.
//
//	saga setup      create databases, tables and topics
//	saga serve -service orders|payments|shipping
//	saga place      place orders (one transaction each)
//	saga redeliver  produce copies of records already on a topic
//	saga wait       until every order is final and every group caught up
//	saga check      print every service's state; exit 1 if inconsistent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: saga setup|serve|place|redeliver|wait|check [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet("saga "+cmd, flag.ExitOnError)
	env := addEnvFlags(fs)
	var run func(context.Context) error
	switch cmd {
	case "setup":
		run = func(ctx context.Context) error { return setup(ctx, env) }
	case "serve":
		name := fs.String("service", "", "orders, payments or shipping")
		run = func(ctx context.Context) error { return serve(ctx, env, *name) }
	case "place":
		n := fs.Int("count", 40, "orders to place")
		first := fs.Int("first", 1, "number of the first order")
		every := fs.Duration("interval", 0, "pause between orders")
		run = func(ctx context.Context) error { return place(ctx, env, *first, *n, *every) }
	case "redeliver":
		topic := fs.String("topic", "", "topic whose first records are produced again")
		n := fs.Int("count", 3, "records to produce again")
		run = func(ctx context.Context) error { return redeliver(ctx, env, *topic, *n) }
	case "wait":
		n := fs.Int("orders", 0, "orders expected")
		timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
		run = func(ctx context.Context) error { return wait(ctx, env, *n, *timeout) }
	case "check":
		n := fs.Int("orders", 0, "orders expected")
		minDups := fs.Int("min-duplicates", 0, "fail unless the inboxes skipped at least this many redeliveries")
		run = func(ctx context.Context) error { return check(ctx, env, *n, *minDups) }
	default:
		fmt.Fprintf(os.Stderr, "saga: unknown command %q\n", cmd)
		os.Exit(2)
	}
	_ = fs.Parse(args)
	if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "saga %s: %v\n", cmd, err)
		os.Exit(1)
	}
}
