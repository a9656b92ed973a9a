package main

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// wait returns once the saga has settled: every expected order is shipped
// or cancelled, every outbox row is on its topic, and every consumer group
// has committed offsets up to the end of its topics — twice in a row, half
// a second apart, so that late redeliveries are consumed before the check.
func wait(ctx context.Context, e *env, n int, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	st, err := openState(ctx, e)
	if err != nil {
		return err
	}
	defer st.close()
	client, err := sarama.NewClient([]string{e.brokers}, e.kafka())
	if err != nil {
		return err
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return err
	}
	settled, last := 0, time.Time{}
	for {
		msg, done, err := progress(ctx, st, client, admin, n)
		if err != nil {
			msg, done = err.Error(), false
		}
		if done {
			settled++
		} else {
			settled = 0
		}
		if settled == 2 {
			fmt.Println("settled:", msg)
			return nil
		}
		if time.Since(last) > 5*time.Second {
			fmt.Println("waiting:", msg)
			last = time.Now()
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("not settled: %s: %w", msg, ctx.Err())
		}
	}
}

func progress(ctx context.Context, st *state, client sarama.Client, admin sarama.ClusterAdmin, n int) (string, bool, error) {
	var total, final int
	err := st.db["orders"].QueryRowContext(ctx, "SELECT count(*), COALESCE(SUM(status IN ('shipped', 'cancelled')), 0) FROM orders").Scan(&total, &final)
	if err != nil {
		return "", false, err
	}
	if err := client.RefreshMetadata(); err != nil {
		return "", false, err
	}
	ends := map[string]int64{} // records per topic
	endOf := map[string]map[int32]int64{}
	for _, t := range []string{topicOrder, topicPayment, topicShipment} {
		parts, err := client.Partitions(t)
		if err != nil {
			return "", false, err
		}
		endOf[t] = map[int32]int64{}
		for _, p := range parts {
			off, err := client.GetOffset(t, p, sarama.OffsetNewest)
			if err != nil {
				return "", false, err
			}
			endOf[t][p], ends[t] = off, ends[t]+off
		}
	}
	unrelayed := 0
	for name, topic := range map[string]string{"orders": topicOrder, "payments": topicPayment, "shipping": topicShipment} {
		var rows int64
		if err := st.db[name].QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&rows); err != nil {
			return "", false, err
		}
		if rows > ends[topic] {
			unrelayed += int(rows - ends[topic])
		}
	}
	var lag int64
	for name, s := range services {
		want := map[string][]int32{}
		for _, t := range s.topics {
			for p := range endOf[t] {
				want[t] = append(want[t], p)
			}
		}
		offs, err := admin.ListConsumerGroupOffsets(name, want)
		if err != nil {
			return "", false, err
		}
		for t, ps := range want {
			for _, p := range ps {
				committed := int64(0)
				if b := offs.GetBlock(t, p); b != nil && b.Offset > 0 {
					committed = b.Offset
				}
				lag += endOf[t][p] - committed
			}
		}
	}
	msg := fmt.Sprintf("%d/%d orders placed, %d final; %d outbox rows not yet relayed; consumer lag %d", total, n, final, unrelayed, lag)
	return msg, total == n && final == n && unrelayed == 0 && lag == 0, nil
}

// state holds a connection to each service's database.
type state struct{ db map[string]*sqlDB }

func openState(ctx context.Context, e *env) (*state, error) {
	st := &state{db: map[string]*sqlDB{}}
	for name, s := range services {
		db, err := e.open(ctx, s.dialect, name)
		if err != nil {
			st.close()
			return nil, err
		}
		st.db[name] = &sqlDB{DB: db, d: s.dialect}
	}
	return st, nil
}

func (st *state) close() {
	for _, db := range st.db {
		db.Close()
	}
}
