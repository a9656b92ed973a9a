package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

// endOffsets sums the high watermarks of the workload's topics: how many
// records the broker holds.
func endOffsets(ctx context.Context, cl *kgo.Client, partitions int) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	for _, t := range topics {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = t
		for p := 0; p < partitions; p++ {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Timestamp = -1 // latest
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("list offsets %s[%d]: %w", t.Topic, p.Partition, err)
			}
			n += p.Offset
		}
	}
	return n, nil
}

// waitDelivered waits until want records are in Kafka: counted from the
// end offsets, or, with d.consume (always under exactly-once, whose
// transaction markers take offsets too), by a read_committed consumer.
func waitDelivered(ctx context.Context, addr string, o *options, want int64, relay *relayProc, timeout time.Duration, d delivery) error {
	if !d.consume && !d.eos {
		return waitRecords(ctx, addr, o, want, relay, timeout)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var n atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- devbroker.Consume(cctx, []string{addr}, `^outbox\.event\.`, func(devbroker.Record) error {
			if n.Add(1) >= want {
				return devbroker.ErrStop
			}
			return nil
		})
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if n.Load() >= want {
				return nil
			}
			return fmt.Errorf("%d of %d records visible to a read_committed consumer: %v", n.Load(), want, err)
		case <-tick.C:
			if relay.exited() {
				cancel()
				<-done
				return fmt.Errorf("relay exited with %d of %d records visible: %v\n%s", n.Load(), want, relay.exitErr, relay.tail())
			}
		}
	}
}

// waitRecords polls the broker until it holds want records, the relay
// exits, or timeout.
func waitRecords(ctx context.Context, addr string, o *options, want int64, relay *relayProc, timeout time.Duration) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(timeout)
	var last int64
	lastLog := time.Now()
	for {
		n, err := endOffsets(ctx, cl, o.partitions)
		if err == nil && n >= want {
			return nil
		}
		if err == nil {
			last = n
		}
		if relay.exited() {
			return fmt.Errorf("relay exited with %d of %d records in Kafka: %v\n%s", last, want, relay.exitErr, relay.tail())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d records in Kafka after %v (last error: %v)", last, want, timeout, err)
		}
		if time.Since(lastLog) > 10*time.Second {
			logf("  … %d of %d records in Kafka", last, want)
			lastLog = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eConsumer measures commit→consumed end to end: the live writer puts
// its wall clock just before each INSERT into the payload ("ts", µs), and
// this consumer, running while the relay does, notes when each record
// arrives. It is an upper bound of commit→ack (it adds the INSERT's own
// round trip and the consumer's fetch), and the only commit-based measure
// for MariaDB, whose binlog timestamps are whole seconds.
type e2eConsumer struct {
	mu   sync.Mutex
	lat  []time.Duration
	done chan error
	stop context.CancelFunc
}

func startConsumer(ctx context.Context, addr string) *e2eConsumer {
	cctx, cancel := context.WithCancel(ctx)
	c := &e2eConsumer{done: make(chan error, 1), stop: cancel}
	go func() {
		c.done <- devbroker.Consume(cctx, []string{addr}, `^outbox\.event\.`, func(r devbroker.Record) error {
			now := time.Now()
			if ts, ok := payloadTS(r.Value); ok {
				c.mu.Lock()
				c.lat = append(c.lat, now.Sub(time.UnixMicro(ts)))
				c.mu.Unlock()
			}
			return nil
		})
	}()
	return c
}

// wait stops the consumer once it saw n records (or after timeout) and
// returns the latencies.
func (c *e2eConsumer) wait(n int, timeout time.Duration) []time.Duration {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		got := len(c.lat)
		c.mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.stop()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lat
}

var tsKey = []byte(`"ts":`)

func payloadTS(v []byte) (int64, bool) {
	i := bytes.Index(v, tsKey)
	if i < 0 {
		return 0, false
	}
	v = v[i+len(tsKey):]
	j := 0
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	ts, err := strconv.ParseInt(string(v[:j]), 10, 64)
	return ts, err == nil
}

// durationQuantiles summarises latencies in µs like the relay's histogram.
func durationQuantiles(lat []time.Duration) quantiles {
	if len(lat) == 0 {
		return quantiles{}
	}
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(f float64) int64 {
		i := int(f*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)].Microseconds()
	}
	return quantiles{N: int64(len(s)), P50: q(0.5), P90: q(0.9), P99: q(0.99), P999: q(0.999), Max: s[len(s)-1].Microseconds()}
}
