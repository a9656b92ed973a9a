// Key partitioning that matches Apache Kafka's Java producer.
//
// Consumers written in Java, Kafka Streams joins and ksqlDB all assume that a
// key lives in partition toPositive(murmur2(key)) % n. sarama's hash
// partitioners use FNV-1a (and, by default, abs instead of masking the sign
// bit), so records relayed with them would land in different partitions than
// the same keys produced by any Java service. This file owns the Java-compatible
// hash and the sarama.Partitioner built on it; it must stay bit-for-bit equal to
// org.apache.kafka.common.utils.Utils.murmur2, which the vectors in
// partitioner_test.go pin down.

package kafka

import (
	"fmt"
	"sync/atomic"

	"github.com/IBM/sarama"
)

// murmur2 is Kafka's Utils.murmur2: MurmurHash2 with Kafka's fixed seed,
// reading the key as little-endian 4-byte words. The result is the Java int
// the Java client computes.
func murmur2(data []byte) int32 {
	return murmur2Of(data)
}

// murmur2Of hashes strings too, so that sarama.StringEncoder keys need not be
// copied into a []byte just to be hashed.
func murmur2Of[T string | []byte](data T) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	// Java computes in signed ints with wrapping multiplies and >>> shifts;
	// uint32 arithmetic gives the same bits with plain >>.
	h := seed ^ uint32(n)
	i := 0
	for ; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n - i {
	case 3:
		h ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// javaPartition is the partition the Java client's default partitioner picks
// for a non-null key. numPartitions must be positive.
//
// Java clears the sign bit (Utils.toPositive) rather than taking the absolute
// value: the two differ for every negative hash, so abs must not be used here.
func javaPartition(key []byte, numPartitions int32) int32 {
	return (murmur2(key) & 0x7fffffff) % numPartitions
}

// javaHashPartitioner is a sarama.Partitioner that places keyed records where
// the Java client would.
type javaHashPartitioner struct {
	topic string
	// next drives round-robin for null keys. sarama calls a topic's
	// partitioner from one goroutine, but an atomic keeps the type safe to
	// share at no measurable cost.
	next atomic.Uint32
}

var _ sarama.PartitionerConstructor = NewJavaHashPartitioner

// NewJavaHashPartitioner returns a partitioner for topic that hashes record
// keys exactly as Apache Kafka's Java producer does (murmur2, sign bit
// cleared, modulo the partition count). Use it as
// sarama.Config.Producer.Partitioner.
//
// Records with a null key (only possible once a `null_key: allow` option
// exists) are spread round-robin. An empty, non-null key is hashed like any
// other key, as in Java.
func NewJavaHashPartitioner(topic string) sarama.Partitioner {
	return &javaHashPartitioner{topic: topic}
}

// Partition implements sarama.Partitioner.
func (p *javaHashPartitioner) Partition(msg *sarama.ProducerMessage, numPartitions int32) (int32, error) {
	if numPartitions <= 0 {
		// sarama never asks with zero partitions, but a modulo by zero
		// would panic, so refuse instead of trusting the caller.
		return -1, fmt.Errorf("partition record for topic %q: %d partitions", p.topic, numPartitions)
	}
	// The common encoders are hashed in place: StringEncoder.Encode would
	// allocate a copy of the key for every record.
	switch key := msg.Key.(type) {
	case nil:
		return p.roundRobin(numPartitions), nil
	case sarama.StringEncoder:
		return (murmur2Of(string(key)) & 0x7fffffff) % numPartitions, nil
	case sarama.ByteEncoder:
		if key == nil {
			// sarama writes a nil ByteEncoder as a null key.
			return p.roundRobin(numPartitions), nil
		}
		return javaPartition(key, numPartitions), nil
	}
	b, err := msg.Key.Encode()
	if err != nil {
		return -1, fmt.Errorf("partition record for topic %q: encode key: %w", p.topic, err)
	}
	if b == nil {
		// A nil encoding goes on the wire as a null key.
		return p.roundRobin(numPartitions), nil
	}
	return javaPartition(b, numPartitions), nil
}

func (p *javaHashPartitioner) roundRobin(numPartitions int32) int32 {
	return int32((p.next.Add(1) - 1) % uint32(numPartitions))
}

// RequiresConsistency implements sarama.Partitioner. A key must map to the
// same partition even while that partition is unavailable, or ordering per
// key would break; sarama then waits for the partition instead of rerouting.
func (p *javaHashPartitioner) RequiresConsistency() bool {
	return true
}
