package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/sink"
)

func testProducer(t *testing.T, b *devbroker.Broker, mod func(*Config)) *Producer {
	t.Helper()
	cfg := Config{Brokers: []string{b.Addr()}, Linger: time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProducerStopsAtFirstRefusal: the broker refuses one produce request
// (a non-retriable error) while records of the same key keep coming: no
// record sent after the refused ones reaches Kafka — not those queued in
// the producer behind them either — and Send refuses from then on. Without
// that, records behind a refused one land first, and the replay after a
// restart puts the refused one after them.
func TestProducerStopsAtFirstRefusal(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{Partitions: 1, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Let some batches through first, then refuse one.
	p := testProducer(t, b, nil)
	for i := range 50 {
		if err := p.Send(context.Background(), sink.Record{Topic: "t", Key: []byte("k"), Value: []byte(strconv.Itoa(i))}, func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	// Slow answers: while the refused request is out, the next batch of
	// the partition fills behind it and waits (sarama keeps one in flight
	// per partition) — then, once the refusal is in, sarama numbers it in
	// the bumped epoch from 0, which a broker accepts.
	b.DelayProduce(0, 100*time.Millisecond)
	refused := b.RefuseProduce("t", 87, 0) // INVALID_RECORD
	var mu sync.Mutex
	failed := map[int]bool{}
	firstFailed := -1
	sent := 50
	for i := 50; i < 20000; i++ {
		err := p.Send(context.Background(), sink.Record{Topic: "t", Key: []byte("k"), Value: []byte(strconv.Itoa(i))}, func(err error) {
			if err != nil {
				mu.Lock()
				failed[i] = true
				if firstFailed < 0 || i < firstFailed {
					firstFailed = i
				}
				mu.Unlock()
			}
		})
		if err != nil {
			if p.Err() == nil {
				t.Fatalf("Send refused without a failure: %v", err)
			}
			break
		}
		sent++
	}
	_ = p.Close()
	if !refused() || firstFailed < 0 {
		t.Fatalf("the broker refused nothing (refused %v, first failed %d)", refused(), firstFailed)
	}
	if sent == 20000 {
		t.Errorf("Send never refused after the failure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := devbroker.CollectUntilIdle(ctx, []string{b.Addr()}, "^t$", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for _, r := range recs {
		n, _ := strconv.Atoi(string(r.Value))
		if n >= firstFailed {
			t.Errorf("record %d reached Kafka after record %d was refused", n, firstFailed)
		}
		written++
	}
	if written != firstFailed {
		t.Errorf("%d records in Kafka, want every one before the first refused (%d)", written, firstFailed)
	}
	t.Logf("sent %d, refused from %d, %d records failed, %d in Kafka", sent, firstFailed, len(failed), written)
}

// TestProducerSizeIsSaramas: a record is too large exactly when sarama's
// own count (record format v2, headers included) is over
// kafka.max_message_bytes; one at the limit goes through.
func TestProducerSizeIsSaramas(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := testProducer(t, b, func(c *Config) { c.MaxMessageBytes = 4096 })
	headers := []sink.Header{{Key: "id", Value: []byte("e-1")}, {Key: "type", Value: []byte("T")}, {Key: "outboxrelay-position", Value: []byte("mysql-bin.000001:4")}}
	rec := func(n int) sink.Record {
		return sink.Record{Topic: "big", Key: []byte("k"), Value: []byte(strings.Repeat("x", n)), Headers: headers}
	}
	// The value length at which sarama's count reaches the limit.
	base := (&sarama.ProducerMessage{Key: sarama.ByteEncoder("k"), Headers: []sarama.RecordHeader{
		{Key: []byte("id"), Value: []byte("e-1")}, {Key: []byte("type"), Value: []byte("T")},
		{Key: []byte("outboxrelay-position"), Value: []byte("mysql-bin.000001:4")}}}).ByteSize(2)
	atLimit := 4096 - base
	if r := rec(atLimit); r.Size() >= 4096 {
		own := r.Size()
		t.Fatalf("test needs a record the relay's own count puts under the limit (%d)", own)
	}
	var tl *TooLargeError
	if err := p.Send(context.Background(), rec(atLimit+1), func(error) {}); !errors.As(err, &tl) || !errors.Is(err, sink.ErrTooLarge) {
		t.Fatalf("record one byte over sarama's limit: %v, want TooLargeError", err)
	}
	done := make(chan error, 1)
	if err := p.Send(context.Background(), rec(atLimit), func(err error) { done <- err }); err != nil {
		t.Fatalf("record at the limit refused: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("record at the limit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no acknowledgement")
	}
	_ = p.Close()
}

// TestProducerTopicLimit: a topic whose max.message.bytes is below
// kafka.max_message_bytes is a configuration error naming the fix.
func TestProducerTopicLimit(t *testing.T) {
	t.Parallel()
	b, err := devbroker.Start(devbroker.Options{Partitions: 1, Topics: []string{"small"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	admin, err := sarama.NewClusterAdmin([]string{b.Addr()}, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	v := "20000"
	if err := admin.AlterConfig(sarama.TopicResource, "small", map[string]*string{"max.message.bytes": &v}, false); err != nil {
		t.Fatal(err)
	}
	_ = admin.Close()
	p := testProducer(t, b, nil)
	defer p.Close()
	err = p.Send(context.Background(), sink.Record{Topic: "small", Value: []byte("x")}, func(error) {})
	var le *TopicLimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), fmt.Sprint(20000-recordBatchOverhead)) {
		t.Fatalf("Send to a topic with a smaller limit: %v", err)
	}
}

// TestValidateInFlightHoldsLargestRecord: a cap that cannot hold the
// largest record (and its topic name) is refused: its Send would wait
// forever.
func TestValidateInFlightHoldsLargestRecord(t *testing.T) {
	t.Parallel()
	c := Config{Brokers: []string{"x:9092"}, MaxMessageBytes: 4096, MaxInFlightBytes: 4096}
	c.SetDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_in_flight_bytes") {
		t.Fatalf("Validate: %v", err)
	}
	c.MaxInFlightBytes = 4096 + maxTopicName
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate at the minimum: %v", err)
	}
}
