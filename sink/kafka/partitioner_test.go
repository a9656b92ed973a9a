package kafka

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// javaVectors pins murmur2 and the Java client's partition choice.
//
// Produced outside this repository by two implementations that agree on every
// row: kafkajs 2.2.4 from npm (its "Java compatible" murmur2 in
// src/producer/partitioners/default/murmur2.js, partitions taken from its
// DefaultPartitioner with 3, 6 and 12 partitions), and a standalone Java 17
// program doing murmur2 in Java int arithmetic with Utils.toPositive. The six
// values from Kafka's UtilsTest.testMurmur2 ("21", "foobar",
// "a-little-bit-long-string", "a-little-bit-longer-string", "lkjh234…",
// "abc") come out of both unchanged. Keys are the bytes of the Go string; the
// long ones are written as the expressions that build the same bytes. The
// generators are deliberately not kept here: the table is the contract.
var javaVectors = []struct {
	key         string
	murmur2     int32
	p3, p6, p12 int32
}{
	{"", 275646681, 0, 3, 9},
	{"a", -1563381124, 1, 4, 4},
	{"ab", 316155434, 2, 2, 2},
	{"abc", 479470107, 0, 3, 3},
	{"abcd", -1323649548, 2, 2, 8},
	{"abcde", 461995741, 1, 1, 1},
	{"abcdef", 1870650108, 0, 0, 0},
	{"abcdefg", -346467175, 1, 1, 1},
	{"abcdefgh", -955427363, 0, 3, 9},
	{"0", 971027396, 2, 2, 8},
	{"1", -1993445489, 0, 3, 3},
	{"21", -973932308, 0, 0, 0},
	{"key", -1079937367, 1, 1, 1},
	{"foobar", -790332482, 0, 0, 6},
	{"order-42", 501153024, 0, 0, 0},
	{"customer:1001", 2000451828, 0, 0, 0},
	{"a-little-bit-long-string", -985981536, 2, 2, 8},
	{"a-little-bit-longer-string", -1486304829, 2, 5, 11},
	{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 2, 5, 5},
	{"00000000-0000-0000-0000-000000000000", 713427837, 0, 3, 9},
	{"0b9e8f3c-7a51-4d2e-9c64-5f1d2a3b4c5d", 1913883288, 0, 0, 0},
	{" ", -987232127, 0, 3, 9},
	{"\x00", 375494588, 2, 2, 8},
	{"\x00\x00\x00\x00", 850957120, 1, 4, 4},
	{"\xff", -311467685, 0, 3, 3},
	{"\xff\xfe", 1717632651, 0, 3, 3},
	{"\xff\xfe\xfd", 998637092, 2, 2, 8},
	{"\xff\xfe\xfd\xfc", 2136149935, 1, 1, 7},
	{"\x80\x81\x82\x83\x84\x85\x86", -47880214, 1, 4, 10},
	{"Zoë", -1306457314, 1, 4, 10},
	{"日本語", 1431860170, 1, 4, 10},
	{"🎉", 2031907914, 0, 0, 6},
	{"emoji 🚀 key", 1284120626, 2, 2, 2},
	{"naïve café", 1338837213, 0, 3, 9},
	{"Ünïcödé-ключ-键", 279157213, 1, 1, 1},
	{"👩\u200d👩\u200d👧\u200d👦", 551589213, 0, 3, 9},
	{"é", 186971271, 0, 3, 3},
	{strings.Repeat("x", 100), 1249054468, 1, 4, 4},
	{strings.Repeat("y", 1001), -16272701, 0, 3, 3},
	{string(byteRange(256)), -1948347274, 1, 4, 10},
	{strings.Repeat("outbox.events/tenant-7/", 20)[:459], -2086694260, 1, 4, 4},
}

// byteRange returns the bytes 0, 1, …, n-1 (n ≤ 256).
func byteRange(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestMurmur2JavaVectors(t *testing.T) {
	t.Parallel()
	for _, tc := range javaVectors {
		t.Run(vectorName(tc.key), func(t *testing.T) {
			t.Parallel()
			key := []byte(tc.key)
			if got := murmur2(key); got != tc.murmur2 {
				t.Errorf("murmur2 = %d, want %d", got, tc.murmur2)
			}
			if got := murmur2Of(tc.key); got != tc.murmur2 {
				t.Errorf("murmur2Of(string) = %d, want %d", got, tc.murmur2)
			}
			for _, w := range []struct{ n, want int32 }{{3, tc.p3}, {6, tc.p6}, {12, tc.p12}} {
				if got := javaPartition(key, w.n); got != w.want {
					t.Errorf("javaPartition(_, %d) = %d, want %d", w.n, got, w.want)
				}
			}
		})
	}
}

// vectorName keeps subtest names readable for long or binary keys.
func vectorName(key string) string {
	if key == "" {
		return "empty"
	}
	if len(key) > 24 {
		key = key[:24] + "…"
	}
	return strings.ToValidUTF8(key, "?")
}

// randomKeys returns reproducible keys of every tail length, including empty
// keys and keys far longer than one word.
func randomKeys(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, n)
	for i := range keys {
		size := rng.IntN(40)
		if i%10 == 0 {
			size = rng.IntN(2000)
		}
		k := make([]byte, size)
		for j := range k {
			k[j] = byte(rng.Uint32())
		}
		keys[i] = k
	}
	return keys
}

// TestJavaPartitionMatchesFranzGo compares with franz-go's partitioner, whose
// nil hasher is its own Kafka-compatible murmur2 (kgo.KafkaHasher(murmur2)).
func TestJavaPartitionMatchesFranzGo(t *testing.T) {
	t.Parallel()
	keys := randomKeys(3000)
	// math.MaxInt32 partitions leaves the 31-bit masked hash unchanged
	// (except the one value MaxInt32 itself), so it compares the hash, not
	// just a partition.
	for _, n := range []int32{1, 2, 3, 6, 7, 12, 64, 1000, math.MaxInt32} {
		t.Run(strconv.Itoa(int(n)), func(t *testing.T) {
			t.Parallel()
			tp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
			for _, key := range keys {
				want := tp.Partition(&kgo.Record{Key: key}, int(n))
				if got := javaPartition(key, n); int(got) != want {
					t.Fatalf("key %x: javaPartition = %d, franz-go = %d", key, got, want)
				}
			}
		})
	}
}

// customEncoder forces the generic Encode path of the partitioner.
type customEncoder struct {
	b   []byte
	err error
}

func (e customEncoder) Encode() ([]byte, error) { return e.b, e.err }
func (e customEncoder) Length() int             { return len(e.b) }

func TestJavaHashPartitionerMatchesJavaPartition(t *testing.T) {
	t.Parallel()
	// Every key here is non-nil, so empty keys must be hashed, not treated
	// as null.
	keys := randomKeys(1000)
	for _, v := range javaVectors {
		keys = append(keys, []byte(v.key))
	}
	encoders := []struct {
		name string
		wrap func([]byte) sarama.Encoder
	}{
		{"ByteEncoder", func(b []byte) sarama.Encoder { return sarama.ByteEncoder(b) }},
		{"StringEncoder", func(b []byte) sarama.Encoder { return sarama.StringEncoder(b) }},
		{"custom", func(b []byte) sarama.Encoder { return customEncoder{b: b} }},
	}
	for _, enc := range encoders {
		t.Run(enc.name, func(t *testing.T) {
			t.Parallel()
			p := NewJavaHashPartitioner("t")
			for _, n := range []int32{1, 3, 6, 12, 100} {
				for _, key := range keys {
					got, err := p.Partition(&sarama.ProducerMessage{Key: enc.wrap(key)}, n)
					if err != nil {
						t.Fatalf("key %x: %v", key, err)
					}
					if want := javaPartition(key, n); got != want {
						t.Fatalf("key %x, %d partitions: got %d, want %d", key, n, got, want)
					}
				}
			}
		})
	}
}

func TestJavaHashPartitionerNullKeyRoundRobin(t *testing.T) {
	t.Parallel()
	nullKeys := []struct {
		name string
		key  sarama.Encoder
	}{
		{"nil interface", nil},
		{"nil ByteEncoder", sarama.ByteEncoder(nil)},
		{"custom encoding to nil", customEncoder{}},
	}
	for _, tc := range nullKeys {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := NewJavaHashPartitioner("t")
			var got []int32
			for range 7 {
				part, err := p.Partition(&sarama.ProducerMessage{Key: tc.key}, 3)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, part)
			}
			want := []int32{0, 1, 2, 0, 1, 2, 0}
			if !slices.Equal(got, want) {
				t.Errorf("partitions = %v, want %v", got, want)
			}
		})
	}
}

func TestJavaHashPartitionerErrors(t *testing.T) {
	t.Parallel()
	errEncode := errors.New("boom")
	tests := []struct {
		name   string
		key    sarama.Encoder
		n      int32
		wantIs error
	}{
		{"no partitions", sarama.StringEncoder("k"), 0, nil},
		{"negative partitions", nil, -1, nil},
		{"encode error", customEncoder{err: errEncode}, 3, errEncode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewJavaHashPartitioner("t").Partition(&sarama.ProducerMessage{Key: tc.key}, tc.n)
			if err == nil {
				t.Fatal("want an error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tc.wantIs)
			}
		})
	}
}

func TestJavaHashPartitionerRequiresConsistency(t *testing.T) {
	t.Parallel()
	if !NewJavaHashPartitioner("t").RequiresConsistency() {
		t.Error("RequiresConsistency = false; keyed records could be rerouted")
	}
}

func BenchmarkJavaPartition(b *testing.B) {
	key := []byte("0b9e8f3c-7a51-4d2e-9c64-5f1d2a3b4c5d")
	b.Run("javaPartition", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(key)))
		for b.Loop() {
			javaPartition(key, 12)
		}
	})
	p := NewJavaHashPartitioner("t")
	for _, tc := range []struct {
		name string
		key  sarama.Encoder
	}{
		{"sarama/ByteEncoder", sarama.ByteEncoder(key)},
		{"sarama/StringEncoder", sarama.StringEncoder(key)},
	} {
		msg := &sarama.ProducerMessage{Key: tc.key}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(key)))
			for b.Loop() {
				if _, err := p.Partition(msg, 12); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
