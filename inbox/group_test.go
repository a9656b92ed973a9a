package inbox_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/inbox"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

// A real sarama consumer group on the dev broker: a redelivered record is
// skipped, a record whose function fails once is retried, and the group's
// committed offset covers only committed work.
func TestIntegrationGroupHandler(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			failed := map[string]bool{}
			f, in := newFixtureFunc(t, b, inbox.Config{CheckVersion: true}, func(f *fixture) inbox.Func {
				return func(ctx context.Context, tx *sql.Tx, ev inbox.Event) error {
					if err := f.apply(ctx, tx, ev); err != nil {
						return err
					}
					mu.Lock()
					defer mu.Unlock()
					if ev.ID == "e-2" && !failed[ev.ID] {
						failed[ev.ID] = true
						return errors.New("transient")
					}
					return nil
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			const topic = "outbox.event.order"
			broker, err := devbroker.Start(devbroker.Options{Topics: []string{topic}, Partitions: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(broker.Close)
			cfg := sarama.NewConfig()
			cfg.Version = sarama.V2_8_0_0
			cfg.Producer.Return.Successes = true
			cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
			cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
			prod, err := sarama.NewSyncProducer([]string{broker.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			send := func(id, pos string) {
				m := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("o-1"), Value: sarama.StringEncoder("{}"), Headers: []sarama.RecordHeader{
					{Key: []byte(inbox.HeaderID), Value: []byte(id)},
					{Key: []byte(inbox.HeaderType), Value: []byte("T")},
					{Key: []byte(inbox.HeaderPosition), Value: []byte(pos)},
					{Key: []byte(inbox.HeaderIndex), Value: []byte("0")},
				}}
				if _, _, err := prod.SendMessage(m); err != nil {
					t.Fatal(err)
				}
			}
			send("e-1", "binlog.000001:100")
			send("e-2", "binlog.000001:200")
			send("e-1", "binlog.000001:100") // the relay resent it
			send("e-3", "binlog.000001:300")
			const total = 4

			group, err := sarama.NewConsumerGroup([]string{broker.Addr()}, "g-"+b.name, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var results []inbox.Result
			var errs int
			done := make(chan struct{})
			h := &inbox.GroupHandler{DB: f.db, Inbox: in, MaxBackoff: 100 * time.Millisecond,
				OnError: func(*sarama.ConsumerMessage, error) { mu.Lock(); errs++; mu.Unlock() },
				OnResult: func(_ *sarama.ConsumerMessage, r inbox.Result) {
					mu.Lock()
					defer mu.Unlock()
					if results = append(results, r); len(results) == total {
						close(done)
					}
				}}
			cctx, stop := context.WithCancel(ctx)
			consumed := make(chan error, 1)
			go func() {
				for cctx.Err() == nil {
					if err := group.Consume(cctx, []string{topic}, h); err != nil {
						consumed <- err
						return
					}
				}
				consumed <- nil
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("timed out; results so far %v", results)
			}
			stop()
			if err := <-consumed; err != nil {
				t.Fatal(err)
			}
			if err := group.Close(); err != nil { // commits the marked offsets
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []inbox.Result{inbox.Applied, inbox.Applied, inbox.Duplicate, inbox.Applied}
			for i := range want {
				if results[i] != want[i] {
					t.Fatalf("results = %v, want %v", results, want)
				}
			}
			if errs != 1 {
				t.Fatalf("OnError called %d times, want 1", errs)
			}
			if n := f.count(t, "SELECT count(*) FROM effects"); n != 3 {
				t.Fatalf("effects = %d, want 3", n)
			}
			admin, err := sarama.NewClusterAdmin([]string{broker.Addr()}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			offs, err := admin.ListConsumerGroupOffsets("g-"+b.name, map[string][]int32{topic: {0}})
			if err != nil {
				t.Fatal(err)
			}
			if blk := offs.GetBlock(topic, 0); blk == nil || blk.Offset != total {
				t.Fatalf("committed offset = %+v, want %d", blk, total)
			}
		})
	}
}
