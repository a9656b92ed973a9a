package kafka

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"
	"golang.org/x/net/proxy"
)

// errFenced is what a write to a broker gets once the producer stopped.
var errFenced = errors.New("the producer stopped producing after a failed acknowledgement")

// gate lets the producer's first error stop every later write to the
// brokers, with no window in between.
//
// Sarama's idempotent producer, after a batch fails, lets the next batch of
// the same partition go — records of the same key, queued behind the
// failed one — once it has handed the failed batch's errors to its Errors
// channel. The gate is that channel's only reader, and every write to a
// broker connection asks it for leave first. Since an error is received
// before the next batch exists as a write, and the gate answers questions
// only between receiving, no write can pass after the first error.
type gate struct {
	ask    chan chan bool // a write asks whether it may go
	feed   chan (<-chan *sarama.ProducerError)
	out    chan *sarama.ProducerError
	fenced atomic.Bool
	done   chan struct{}
	once   sync.Once
}

// newGate starts the gate: it answers writes at once (the client writes
// before the producer, and so its Errors channel, exists).
func newGate() *gate {
	g := &gate{ask: make(chan chan bool), feed: make(chan (<-chan *sarama.ProducerError), 1),
		out: make(chan *sarama.ProducerError), done: make(chan struct{})}
	go g.run()
	return g
}

// errors makes the gate read sarama's errors and hand them on; receiving
// one fences. The returned channel is closed once in is closed and every
// error was handed on.
func (g *gate) errors(in <-chan *sarama.ProducerError) <-chan *sarama.ProducerError {
	g.feed <- in
	return g.out
}

func (g *gate) run() {
	var in <-chan *sarama.ProducerError
	fed := false
	var queue []*sarama.ProducerError // never block on out: keep answering
	for !fed || in != nil || len(queue) > 0 {
		var send chan<- *sarama.ProducerError
		var head *sarama.ProducerError
		if len(queue) > 0 {
			send, head = g.out, queue[0]
		}
		select {
		case c := <-g.feed:
			in, fed = c, true
		case e, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			g.fenced.Store(true)
			queue = append(queue, e)
		case reply := <-g.ask:
			reply <- !g.fenced.Load()
		case send <- head:
			queue[0] = nil
			queue = queue[1:]
		case <-g.done:
			return
		}
	}
	close(g.out)
	// Questions after the producer closed: answer until the gate closes,
	// so that no write hangs.
	for {
		select {
		case reply := <-g.ask:
			reply <- false
		case <-g.done:
			return
		}
	}
}

// fence stops every later write (Abort).
func (g *gate) fence() { g.fenced.Store(true) }

// allow reports whether a write may go to a broker now.
func (g *gate) allow() bool {
	if g.fenced.Load() {
		return false
	}
	reply := make(chan bool, 1)
	select {
	case g.ask <- reply:
		return <-reply
	case <-g.done:
		return false
	}
}

func (g *gate) close() { g.once.Do(func() { close(g.done) }) }

// dialer returns the dialer sarama uses for broker connections: sarama's
// own settings, connections that ask the gate before each write, and no
// new connection once fenced. TLS, when enabled, is layered on top by
// sarama.
func (g *gate) dialer(sc *sarama.Config) proxy.Dialer {
	return gateDialer{g: g, d: &net.Dialer{Timeout: sc.Net.DialTimeout, KeepAlive: sc.Net.KeepAlive, LocalAddr: sc.Net.LocalAddr}}
}

type gateDialer struct {
	g *gate
	d *net.Dialer
}

func (d gateDialer) Dial(network, addr string) (net.Conn, error) {
	if d.g.fenced.Load() {
		return nil, errFenced
	}
	c, err := d.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return gatedConn{Conn: c, g: d.g}, nil
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c gatedConn) Write(p []byte) (int, error) {
	if !c.g.allow() {
		return 0, errFenced
	}
	return c.Conn.Write(p)
}
