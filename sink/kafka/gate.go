package kafka

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"golang.org/x/net/proxy"

	"github.com/outboxrelay/outboxrelay/internal/failpoint"
)

// errFenced is what a write to a broker gets once the producer stopped.
var errFenced = errors.New("the producer stopped producing after a failed acknowledgement")

// gate lets the producer's first error stop every later write to the
// brokers, with no window in between.
//
// Sarama's idempotent producer, after a batch fails, lets the next batch of
// the same partition go — records of the same key, queued behind the
// failed one — but only after it has put the failed batch's errors into
// its Errors channel (every path that fails messages does so before
// releasing their partition). So a write may go only while that channel is
// empty and no error was taken from it: the gate takes errors out under
// the same lock as writes check it, fencing as it takes them.
type gate struct {
	mu     sync.Mutex
	errs   <-chan *sarama.ProducerError // sarama's Errors channel, once the producer exists
	fenced bool
	out    chan *sarama.ProducerError
	done   chan struct{}
	once   sync.Once
}

func newGate() *gate {
	return &gate{out: make(chan *sarama.ProducerError), done: make(chan struct{})}
}

// errors starts handing sarama's errors on; taking one fences. The
// returned channel closes once in has closed and every error was handed on.
func (g *gate) errors(in <-chan *sarama.ProducerError) <-chan *sarama.ProducerError {
	g.mu.Lock()
	g.errs = in
	g.mu.Unlock()
	go g.run()
	return g.out
}

// pollEvery is how often the gate looks for errors. It cannot block on the
// channel: taking an error must happen under the lock writes take.
const pollEvery = 2 * time.Millisecond

func (g *gate) run() {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	var batch []*sarama.ProducerError
	for {
		closed := false
		g.mu.Lock()
	take:
		for len(batch) < 256 {
			select {
			case e, ok := <-g.errs:
				if !ok {
					closed = true
					break take
				}
				g.fenced = true
				batch = append(batch, e)
			default:
				break take
			}
		}
		g.mu.Unlock()
		for i, e := range batch {
			select {
			case g.out <- e:
			case <-g.done:
				return
			}
			batch[i] = nil
		}
		taken := len(batch)
		batch = batch[:0]
		if closed {
			close(g.out)
			return
		}
		if taken == 0 {
			select {
			case <-t.C:
			case <-g.done:
				return
			}
		}
	}
}

// fence stops every later write (Abort).
func (g *gate) fence() {
	g.mu.Lock()
	g.fenced = true
	g.mu.Unlock()
}

func (g *gate) isFenced() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fenced
}

// allow reports whether a write may go to a broker now.
func (g *gate) allow() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.fenced && (g.errs == nil || len(g.errs) == 0)
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
	if d.g.isFenced() {
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
	n, err := c.Conn.Write(p)
	// The crash tests kill the relay with an EndTxn request (API key 26)
	// on its way to the coordinator and its answer not yet read: a kill
	// in the middle of a commit. (A request starts with its int32 size
	// and int16 API key; plaintext connections only.)
	if failpoint.Enabled && err == nil && len(p) >= 6 && binary.BigEndian.Uint16(p[4:6]) == 26 {
		failpoint.Inject("endtxn-sent")
	}
	return n, err
}
