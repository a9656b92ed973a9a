package kafka

import (
	"testing"

	"github.com/IBM/sarama"
)

// Send hands sarama keys as *sarama.ByteEncoder pointing into the record's
// envelope (one allocation per record): they must land on the partition
// the Java client picks, like a sarama.ByteEncoder key.
func TestEnvelopeKeyPartitionsLikeJava(t *testing.T) {
	t.Parallel()
	p := NewJavaHashPartitioner("t")
	for _, k := range []string{"agg-1", "0b9e8f3c-7a51-4d2e-9c64-5f1d2a3b4c5d", "x"} {
		env := envelope{key: sarama.ByteEncoder(k)}
		env.msg.Key = &env.key
		got, err := p.Partition(&env.msg, 12)
		if err != nil {
			t.Fatal(err)
		}
		if want := javaPartition([]byte(k), 12); got != want {
			t.Errorf("key %q: partition %d, want %d", k, got, want)
		}
	}
}

func BenchmarkPartitionEnvelopeKey(b *testing.B) {
	p := NewJavaHashPartitioner("t")
	env := envelope{key: sarama.ByteEncoder("0b9e8f3c-7a51-4d2e-9c64-5f1d2a3b4c5d")}
	env.msg.Key = &env.key
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Partition(&env.msg, 12); err != nil {
			b.Fatal(err)
		}
	}
}
