package main

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"

	"github.com/outboxrelay/outboxrelay/inbox"
)

type sqlDB struct {
	*sql.DB
	d inbox.Dialect
}

// counts maps order id → event type (or status) → rows.
type counts map[string]map[string]int

func (c counts) add(order, key string, n int) {
	if c[order] == nil {
		c[order] = map[string]int{}
	}
	c[order][key] += n
}

// load runs a query of (order id, key, count) rows into c.
func (db *sqlDB) load(ctx context.Context, c counts, query string) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	for rows.Next() {
		var order, key string
		var n int
		if err := rows.Scan(&order, &key, &n); err != nil {
			return err
		}
		c.add(order, key, n)
	}
	return rows.Err()
}

// inboxStats returns the inbox rows and the redeliveries they absorbed.
func (db *sqlDB) inboxStats(ctx context.Context) (rows, dups int, err error) {
	err = db.QueryRowContext(ctx, "SELECT count(*), COALESCE(SUM(duplicates), 0) FROM inbox").Scan(&rows, &dups)
	return rows, dups, err
}

// check prints every service's final state and fails unless it is
// consistent: every order shipped or cancelled as its amount says, each
// effect (a payment, a shipment, a status change, an outgoing event)
// exactly once, nothing about unknown orders.
func check(ctx context.Context, e *env, n, minDups int) error {
	st, err := openState(ctx, e)
	if err != nil {
		return err
	}
	defer st.close()
	amount := map[string]int{}
	status := counts{}
	rows, err := st.db["orders"].QueryContext(ctx, "SELECT id, amount, status FROM orders")
	if err != nil {
		return err
	}
	for rows.Next() {
		var id, s string
		var a int
		if err := rows.Scan(&id, &a, &s); err != nil {
			rows.Close()
			return err
		}
		amount[id] = a
		status.add(id, s, 1)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// One map per kind of effect, each keyed by order.
	applied, ordersOut, pays, paysOut, ships, shipsOut := counts{}, counts{}, counts{}, counts{}, counts{}, counts{}
	for _, l := range []struct {
		db    string
		c     counts
		query string
	}{
		{"orders", applied, "SELECT order_id, type, count(*) FROM order_events GROUP BY order_id, type"},
		{"orders", ordersOut, "SELECT aggregateid, type, count(*) FROM outbox GROUP BY aggregateid, type"},
		{"payments", pays, "SELECT order_id, status, count(*)::int FROM payments GROUP BY order_id, status"},
		{"payments", paysOut, "SELECT aggregateid, type, count(*)::int FROM outbox GROUP BY aggregateid, type"},
		{"shipping", ships, "SELECT order_id, 'shipment', count(*) FROM shipments GROUP BY order_id"},
		{"shipping", shipsOut, "SELECT aggregateid, type, count(*) FROM outbox GROUP BY aggregateid, type"},
	} {
		if err := st.db[l.db].load(ctx, l.c, l.query); err != nil {
			return err
		}
	}

	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if len(amount) != n {
		fail("%d orders, want %d", len(amount), n)
	}
	var shipped, cancelled int
	ids := make([]string, 0, len(amount))
	for id := range amount {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ok := amount[id] <= paymentLimit
		// What each set of rows must hold for this order, exactly.
		want := map[string]map[string]int{
			"order status":    {"cancelled": 1},
			"order_events":    {"PaymentFailed": 1},
			"orders outbox":   {"OrderCreated": 1, "OrderCancelled": 1},
			"payments":        {"failed": 1},
			"payments outbox": {"PaymentFailed": 1},
			"shipments":       {},
			"shipping outbox": {},
		}
		if ok {
			want = map[string]map[string]int{
				"order status":    {"shipped": 1},
				"order_events":    {"PaymentSucceeded": 1, "ShipmentCreated": 1},
				"orders outbox":   {"OrderCreated": 1},
				"payments":        {"succeeded": 1},
				"payments outbox": {"PaymentSucceeded": 1},
				"shipments":       {"shipment": 1},
				"shipping outbox": {"ShipmentCreated": 1},
			}
		}
		got := map[string]map[string]int{
			"order status": status[id], "order_events": applied[id], "orders outbox": ordersOut[id],
			"payments": pays[id], "payments outbox": paysOut[id], "shipments": ships[id], "shipping outbox": shipsOut[id],
		}
		for _, what := range []string{"order status", "order_events", "orders outbox", "payments", "payments outbox", "shipments", "shipping outbox"} {
			if w := want[what]; !sameCounts(got[what], w) {
				fail("%s (amount %d): %s = %s, want %s", id, amount[id], what, show(got[what]), show(w))
			}
		}
		switch {
		case status[id]["shipped"] == 1:
			shipped++
		case status[id]["cancelled"] == 1:
			cancelled++
		}
	}
	for what, c := range map[string]counts{"order_events": applied, "payments": pays, "shipments": ships, "payments outbox": paysOut, "shipping outbox": shipsOut} {
		for id := range c {
			if _, known := amount[id]; !known {
				fail("%s: rows for unknown order %q", what, id)
			}
		}
	}

	totalDups := 0
	fmt.Println("final state of every service:")
	for _, line := range []struct{ name, db, what string }{
		{"orders", "MariaDB", fmt.Sprintf("%d orders: %d shipped, %d cancelled, %d other; %d events applied; %d events in its outbox",
			len(amount), shipped, cancelled, len(amount)-shipped-cancelled, total(applied), total(ordersOut))},
		{"payments", "PostgreSQL", fmt.Sprintf("%d payments: %d succeeded, %d failed; %d events in its outbox",
			total(pays), sum(pays, "succeeded"), sum(pays, "failed"), total(paysOut))},
		{"shipping", "MariaDB", fmt.Sprintf("%d shipments; %d events in its outbox", total(ships), total(shipsOut))},
	} {
		r, d, err := st.db[line.name].inboxStats(ctx)
		if err != nil {
			return err
		}
		totalDups += d
		fmt.Printf("  %-8s (%-10s) %s; inbox: %d events, %d redeliveries recognised\n", line.name, line.db, line.what, r, d)
	}
	if totalDups < minDups {
		fail("the inboxes skipped %d redeliveries, fewer than the %d injected: the duplicate path was not exercised", totalDups, minDups)
	}
	if len(bad) > 0 {
		limit := min(len(bad), 25)
		fmt.Printf("INCONSISTENT: %d problems%s:\n  %s\n", len(bad), map[bool]string{true: fmt.Sprintf(" (first %d)", limit)}[limit < len(bad)], strings.Join(bad[:limit], "\n  "))
		return fmt.Errorf("the saga's final state is inconsistent (%d problems)", len(bad))
	}
	fmt.Printf("CONSISTENT: every order is shipped or cancelled, every effect applied exactly once (%d redeliveries skipped)\n", totalDups)
	return nil
}

func sameCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func show(m map[string]int) string {
	if len(m) == 0 {
		return "{}"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, fmt.Sprintf("%s×%d", k, m[k]))
	}
	sort.Strings(keys)
	return "{" + strings.Join(keys, " ") + "}"
}

func total(c counts) int {
	n := 0
	for _, m := range c {
		for _, v := range m {
			n += v
		}
	}
	return n
}

func sum(c counts, key string) int {
	n := 0
	for _, m := range c {
		n += m[key]
	}
	return n
}
