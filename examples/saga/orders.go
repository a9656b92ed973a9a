package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// orders owns the orders and their status: pending → paid → shipped, or
// pending → cancelled when the payment fails (it then emits OrderCancelled,
// the compensation). order_events logs every event it applied, with no
// unique key, so that an event applied twice shows as two rows.
var orders = &service{
	name:    "orders",
	dialect: inbox.MySQL,
	topics:  []string{topicPayment, topicShipment},
	tables: []string{
		`CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY, amount INT NOT NULL,
  status VARCHAR(16) NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))`,
		`CREATE TABLE IF NOT EXISTS order_events (order_id VARCHAR(64) NOT NULL, event_id VARCHAR(64) NOT NULL,
  type VARCHAR(64) NOT NULL, KEY (order_id))`,
	},
	handle: handleOrders,
}

func handleOrders(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
	var next, from string
	switch ev.Type {
	case "PaymentSucceeded":
		next, from = "paid", "'pending'"
	case "ShipmentCreated":
		// It may overtake PaymentSucceeded: the two come on different
		// topics. Status only moves forward.
		next, from = "shipped", "'pending', 'paid'"
	case "PaymentFailed":
		next, from = "cancelled", "'pending'"
	default:
		return nil
	}
	p, err := decode(ev)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO order_events (order_id, event_id, type) VALUES (?, ?, ?)", p.OrderID, ev.ID, ev.Type); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, "UPDATE orders SET status = ? WHERE id = ? AND status IN ("+from+")", next, p.OrderID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 || next != "cancelled" {
		return err
	}
	return emit(ctx, tx, inbox.MySQL, "order", p.OrderID, "OrderCancelled", orderEvent{OrderID: p.OrderID, Amount: p.Amount, Reason: p.Reason})
}

// place creates orders, each with its OrderCreated event in one
// transaction: the saga's first step.
func place(ctx context.Context, e *env, first, n int, every time.Duration) error {
	db, err := e.open(ctx, inbox.MySQL, "orders")
	if err != nil {
		return err
	}
	defer db.Close()
	for i := first; i < first+n; i++ {
		id, amount := fmt.Sprintf("o-%04d", i), orderAmount(i)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO orders (id, amount, status) VALUES (?, ?, 'pending')", id, amount); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := emit(ctx, tx, inbox.MySQL, "order", id, "OrderCreated", orderEvent{OrderID: id, Amount: amount}); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		if every > 0 {
			select {
			case <-time.After(every):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	fmt.Printf("placed orders o-%04d … o-%04d\n", first, first+n-1)
	return nil
}

// orderAmount spreads amounts over 100…699, so that about a sixth of the
// orders exceed paymentLimit and are cancelled.
func orderAmount(i int) int { return 100 + (i*37)%600 }
