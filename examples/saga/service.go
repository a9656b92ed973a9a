package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"

	"github.com/outboxrelay/outboxrelay/inbox"
)

// service is one participant of the saga. The three differ only in these
// fields; everything else (connecting, consuming, the inbox, the outbox)
// is shared below.
type service struct {
	name    string
	dialect inbox.Dialect
	topics  []string // what it consumes
	tables  []string // its own tables, created by setup (the outbox is added)
	// handle applies one event; ev.Type says which. Unknown types are
	// ignored (a consumer skips what it does not care about).
	handle func(ctx context.Context, tx *sql.Tx, ev inbox.Event) error
}

// Topics, one per producing service (the relay's default
// outbox.event.${aggregatetype}); each is fed by one relay, which is what
// the inbox's per-topic version check needs.
const (
	topicOrder    = "outbox.event.order"
	topicPayment  = "outbox.event.payment"
	topicShipment = "outbox.event.shipment"
)

var services = map[string]*service{"orders": orders, "payments": payments, "shipping": shipping}

func (s *service) inbox() (*inbox.Inbox, error) {
	return inbox.New(inbox.Config{Dialect: s.dialect, CheckVersion: true}, s.handle)
}

func outboxDDL(d inbox.Dialect) string {
	if d == inbox.Postgres {
		// payload text: jsonb would rewrite the bytes the relay sends.
		return `CREATE TABLE IF NOT EXISTS outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
  aggregateid text NOT NULL, type text NOT NULL, payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`
	}
	return `CREATE TABLE IF NOT EXISTS outbox (id VARCHAR(36) PRIMARY KEY, aggregatetype VARCHAR(64) NOT NULL,
  aggregateid VARCHAR(64) NOT NULL, type VARCHAR(64) NOT NULL, payload LONGTEXT NOT NULL,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`
}

// emit writes an outgoing event to the service's outbox, in tx: it leaves
// with the change that caused it, or not at all.
func emit(ctx context.Context, tx *sql.Tx, d inbox.Dialect, aggType, aggID, typ string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, q(d, "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (?, ?, ?, ?, ?)"),
		uuid.NewString(), aggType, aggID, typ, string(b))
	return err
}

// q rewrites ? placeholders as $n for Postgres, so that each service's SQL
// is written once.
func q(d inbox.Dialect, s string) string {
	if d != inbox.Postgres {
		return s
	}
	var b strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// orderEvent is the payload every saga event carries.
type orderEvent struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
	Reason  string `json:"reason,omitempty"`
}

func decode(ev inbox.Event) (orderEvent, error) {
	var p orderEvent
	if err := json.Unmarshal(ev.Message.Value, &p); err != nil {
		return p, fmt.Errorf("%s payload: %w", ev.Type, err)
	}
	if p.OrderID == "" || p.OrderID != string(ev.Aggregate) {
		return p, fmt.Errorf("%s payload: order_id %q does not match the key %q", ev.Type, p.OrderID, ev.Aggregate)
	}
	return p, nil
}

// serve runs one service's consumer group until ctx ends.
func serve(ctx context.Context, e *env, name string) error {
	s, ok := services[name]
	if !ok {
		return fmt.Errorf("-service %q: want orders, payments or shipping", name)
	}
	logger := log.New(os.Stderr, name+": ", log.LstdFlags|log.Lmicroseconds)
	db, err := e.open(ctx, s.dialect, name)
	if err != nil {
		return err
	}
	defer db.Close()
	in, err := s.inbox()
	if err != nil {
		return err
	}
	group, err := sarama.NewConsumerGroup([]string{e.brokers}, name, e.kafka())
	if err != nil {
		return fmt.Errorf("consumer group: %w", err)
	}
	defer group.Close()
	h := &inbox.GroupHandler{DB: db, Inbox: in, MaxBackoff: time.Second,
		OnResult: func(m *sarama.ConsumerMessage, r inbox.Result) {
			if r != inbox.Applied {
				logger.Printf("skipped %s event %s (%s) at %s/%d@%d", r, header(m, inbox.HeaderID), header(m, inbox.HeaderType), m.Topic, m.Partition, m.Offset)
			}
		},
		OnError: func(m *sarama.ConsumerMessage, err error) {
			logger.Printf("retrying %s/%d@%d: %v", m.Topic, m.Partition, m.Offset, err)
		}}
	logger.Printf("consuming %v", s.topics)
	for ctx.Err() == nil {
		if err := group.Consume(ctx, s.topics, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
			logger.Printf("consume: %v", err)
			time.Sleep(time.Second)
		}
	}
	logger.Printf("stopping")
	return nil
}

func header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}
