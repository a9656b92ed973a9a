package kafka

import (
	"encoding/json"
	"testing"

	"github.com/IBM/sarama"
)

// TestStoreRoundTrip: nothing stored, then each Save is what Load
// returns, on a new store too (nothing is cached in the process).
func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	kc := kafkaConfig(c)
	s := newStore(t, kc, "orders", Options{})
	wantNotFound(t, s)
	var last = save(t, s, "mysql-bin.000001:4")
	wantPosition(t, s, last)
	last = save(t, s, "mysql-bin.000002:1200@0-1-9")
	wantPosition(t, s, last)
	wantPosition(t, newStore(t, kc, "orders", Options{}), last)
}

// TestRecordEncoding: Record is what Save writes, JSON like the file
// store's plus the relay's name, keyed by the name, to the positions
// topic.
func TestRecordEncoding(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	s := newStore(t, kafkaConfig(c), "orders", Options{})
	want := save(t, s, "0/16B3748")

	r, err := s.Record(want)
	if err != nil {
		t.Fatal(err)
	}
	if r.Topic != DefaultTopic || string(r.Key) != "orders" || len(r.Headers) != 0 {
		t.Fatalf("Record = topic %q key %q headers %v", r.Topic, r.Key, r.Headers)
	}
	var v map[string]any
	if err := json.Unmarshal(r.Value, &v); err != nil {
		t.Fatal(err)
	}
	if v["relay"] != "orders" || v["source"] != "mysql" || v["position"] != "0/16B3748" || v["updated_at"] == nil || len(v) != 4 {
		t.Fatalf("value %s", r.Value)
	}

	// What Save wrote, read back with a plain consumer.
	consumer, err := sarama.NewConsumer(c.ListenAddrs(), saramaConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(DefaultTopic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	m := <-pc.Messages()
	if string(m.Key) != "orders" || string(m.Value) != string(r.Value) {
		t.Fatalf("Save wrote key %q value %s; Record is %s", m.Key, m.Value, r.Value)
	}
}
