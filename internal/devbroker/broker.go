// Package devbroker is a Kafka broker for development and tests, built on
// franz-go's in-process kfake cluster, plus a read_committed consumer to check
// what a relay actually published.
//
// It owns only test tooling: the relay's production packages must never import
// it, so kfake and the consumer helpers stay out of the production binary. It
// must not reach into the relay's sinks or sources either; tests talk to it
// over the Kafka protocol like any other client would.
package devbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Options configures Start. The zero value is a broker on a free loopback
// port with 3 partitions per topic.
type Options struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	// Default "127.0.0.1:0". The host is also what the broker advertises in
	// metadata, so unspecified addresses (0.0.0.0, ::) are refused.
	Addr string
	// Partitions is the partition count of seeded and auto-created topics.
	// Default 3.
	Partitions int
	// Topics are created at start, so consumers can subscribe before
	// anything is produced.
	Topics []string
	// Brokers is the number of broker nodes. Default 1. With more, partition
	// leaders spread over nodes and each node acknowledges on its own, as
	// in a real cluster (acknowledgements then arrive out of log order).
	// Only the first node listens on Addr's port; the others on free ports.
	Brokers int
	// DataDir, when set, persists the cluster there, so that a broker
	// started again on the same DataDir (and port) has kept every record.
	DataDir string
	// TLS, when set, makes the broker speak only TLS, with this server
	// configuration (it must hold a certificate). Default plaintext.
	TLS *tls.Config
	// Users, when set, make the broker require SASL authentication by one
	// of them (security.go). Default none: no authentication.
	Users []User
}

const (
	defaultAddr       = "127.0.0.1:0"
	defaultPartitions = 3
)

// Broker is a running single-node kfake cluster. It keeps every record in
// memory until Close.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	sec     *security
}

// Start starts a broker and returns once it accepts connections.
func Start(opts Options) (*Broker, error) {
	addr := opts.Addr
	if addr == "" {
		addr = defaultAddr
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("devbroker: Options.Addr %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		// kfake advertises its listener's own address; clients told to
		// connect to 0.0.0.0 would only work by accident.
		return nil, fmt.Errorf("devbroker: Options.Addr %q: host must be an address clients can dial, not a wildcard", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("devbroker: Options.Addr %q: bad port", addr)
	}
	partitions := opts.Partitions
	switch {
	case partitions == 0:
		partitions = defaultPartitions
	case partitions < 0:
		return nil, fmt.Errorf("devbroker: Options.Partitions %d: must not be negative", partitions)
	}
	for _, t := range opts.Topics {
		if t == "" {
			return nil, errors.New("devbroker: Options.Topics: empty topic name")
		}
	}

	brokers := opts.Brokers
	if brokers == 0 {
		brokers = 1
	}
	if brokers < 0 {
		return nil, fmt.Errorf("devbroker: Options.Brokers %d: must not be negative", brokers)
	}
	ports := make([]int, brokers)
	ports[0] = port
	kopts := []kfake.Opt{
		kfake.NumBrokers(brokers),
		kfake.Ports(ports...),
		// kfake always asks for 127.0.0.1; listening on the caller's host
		// instead lets e.g. "localhost" or "[::1]" work too.
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			_, p, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			ln, err := net.Listen(network, net.JoinHostPort(host, p))
			if err != nil || opts.TLS != nil {
				return ln, err
			}
			return plainListener{ln}, nil // security.go
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
	}
	if len(opts.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(partitions), opts.Topics...))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	sec, sopts, err := securityOpts(&opts)
	if err != nil {
		return nil, err
	}
	kopts = append(kopts, sopts...)
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("devbroker: start kfake on %s: %w", addr, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) != brokers {
		c.Close()
		return nil, fmt.Errorf("devbroker: kfake listens on %d addresses, want %d", len(addrs), brokers)
	}
	if err := sec.install(context.Background(), c, addrs[0]); err != nil {
		c.Close()
		return nil, fmt.Errorf("devbroker: %w", err)
	}
	return &Broker{cluster: c, addr: addrs[0], sec: sec}, nil
}

// Addr returns the host:port clients should bootstrap from, with the real
// port when Options.Addr asked for port 0.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker and drops everything it stored. It is safe to call
// more than once.
func (b *Broker) Close() { b.cluster.Close() }

// DelayProduce makes node answer each produce request only after a random
// delay of up to max, while the other nodes answer at once — so records
// produced later to other nodes are acknowledged before earlier ones on
// this node, as happens with a slow broker. Nodes are numbered from 0.
func (b *Broker) DelayProduce(node int32, max time.Duration) {
	b.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if b.cluster.CurrentNode() == node {
			d := rand.N(max)
			b.cluster.SleepControl(func() { time.Sleep(d) })
		}
		return nil, nil, false // then handle the request as usual
	})
}

// StallProduce makes every produce request wait d before it is handled,
// until the returned function is called.
func (b *Broker) StallProduce(d time.Duration) (stop func()) {
	var stopped atomic.Bool
	b.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if stopped.Load() {
			return nil, nil, false
		}
		b.cluster.KeepControl()
		b.cluster.SleepControl(func() { time.Sleep(d) })
		return nil, nil, false
	})
	return func() { stopped.Store(true) }
}

// RefuseProduce makes the broker answer one produce request that writes to
// topic — the one after the first skip such requests — with the Kafka
// error code for every partition in it (as a broker refusing those
// batches); the others are handled as usual. refused reports whether that
// request came.
func (b *Broker) RefuseProduce(topic string, code int16, skip int) (refused func() bool) {
	var done atomic.Bool
	seen := 0
	b.cluster.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.ProduceRequest)
		hit := false
		for _, t := range req.Topics {
			hit = hit || t.Topic == topic
		}
		if hit && !done.Load() {
			seen++
		}
		if !hit || done.Load() || seen <= skip {
			b.cluster.KeepControl()
			return nil, nil, false
		}
		done.Store(true)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = code
				rp.BaseOffset = -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	return done.Load
}
