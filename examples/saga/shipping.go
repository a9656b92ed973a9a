package main

import (
	"context"
	"database/sql"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// shipping ships each paid order once: one row in shipments (no unique key
// on order_id, so a second shipment would show) and ShipmentCreated.
var shipping = &service{
	name:    "shipping",
	dialect: inbox.MySQL,
	topics:  []string{topicPayment},
	tables: []string{
		`CREATE TABLE IF NOT EXISTS shipments (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id VARCHAR(64) NOT NULL, KEY (order_id))`,
	},
	handle: handleShipping,
}

func handleShipping(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
	if ev.Type != "PaymentSucceeded" {
		return nil
	}
	p, err := decode(ev)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO shipments (order_id) VALUES (?)", p.OrderID); err != nil {
		return err
	}
	return emit(ctx, tx, inbox.MySQL, "shipment", p.OrderID, "ShipmentCreated", orderEvent{OrderID: p.OrderID, Amount: p.Amount})
}
