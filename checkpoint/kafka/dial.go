package kafka

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// ctxDialer ties a client's connections to a context: once it ends, every
// connection is closed and no new one is opened, which fails at once
// whatever sarama waits for — its calls take no context, and a broker
// that accepts connections and never answers would otherwise hold a Load
// for sarama's timeouts and retries.
type ctxDialer struct {
	ctx   context.Context
	d     net.Dialer
	mu    sync.Mutex
	conns []net.Conn
	stop  func() bool
}

// boundTo makes sc's connections end with ctx. Call the returned release
// when the client is closed.
func boundTo(ctx context.Context, sc *sarama.Config) (release func()) {
	d := &ctxDialer{ctx: ctx, d: net.Dialer{Timeout: sc.Net.DialTimeout, KeepAlive: sc.Net.KeepAlive, LocalAddr: sc.Net.LocalAddr}}
	d.stop = context.AfterFunc(ctx, d.closeAll)
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, d
	backoff := sc.Metadata.Retry.Backoff
	sc.Metadata.Retry.BackoffFunc = func(int, int) time.Duration {
		if ctx.Err() != nil {
			return 0 // every attempt fails at once now: fail fast
		}
		return backoff
	}
	return func() { d.stop() }
}

func (d *ctxDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.d.DialContext(d.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx.Err() != nil {
		_ = c.Close()
		return nil, d.ctx.Err()
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *ctxDialer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}
