package main

import (
	"context"
	"database/sql"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// paymentLimit is the largest amount a payment succeeds for.
const paymentLimit = 600

// payments charges each new order once: one row in payments per order, and
// PaymentSucceeded or PaymentFailed in its outbox. payments has no unique
// key on order_id on purpose: a second charge would show, not fail.
var payments = &service{
	name:    "payments",
	dialect: inbox.Postgres,
	topics:  []string{topicOrder},
	tables: []string{
		`CREATE TABLE IF NOT EXISTS payments (id bigserial PRIMARY KEY, order_id text NOT NULL,
  amount integer NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
	},
	handle: handlePayments,
}

func handlePayments(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
	if ev.Type != "OrderCreated" { // OrderCancelled: nothing was charged
		return nil
	}
	p, err := decode(ev)
	if err != nil {
		return err
	}
	status, typ := "succeeded", "PaymentSucceeded"
	if p.Amount > paymentLimit {
		status, typ, p.Reason = "failed", "PaymentFailed", "insufficient funds"
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO payments (order_id, amount, status) VALUES ($1, $2, $3)", p.OrderID, p.Amount, status); err != nil {
		return err
	}
	return emit(ctx, tx, inbox.Postgres, "payment", p.OrderID, typ, p)
}
