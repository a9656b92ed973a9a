package devbroker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func startBroker(t *testing.T, opts Options) *Broker {
	t.Helper()
	b, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// producerConfig is the idempotent setup the relay uses; a non-empty txnID
// makes it transactional.
func producerConfig(txnID string) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	// Tests choose partitions so they can check them on the way out.
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.Transaction.ID = txnID
	return cfg
}

func newProducer(t *testing.T, b *Broker, txnID string) sarama.SyncProducer {
	t.Helper()
	p, err := sarama.NewSyncProducer([]string{b.Addr()}, producerConfig(txnID))
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
}

func TestStartOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     Options
		wantHost string
		wantErr  string
	}{
		{name: "defaults", opts: Options{}, wantHost: "127.0.0.1"},
		{name: "explicit loopback", opts: Options{Addr: "127.0.0.1:0"}, wantHost: "127.0.0.1"},
		{name: "empty host", opts: Options{Addr: ":0"}, wantHost: "127.0.0.1"},
		{name: "localhost", opts: Options{Addr: "localhost:0"}, wantHost: "127.0.0.1"},
		{name: "no port", opts: Options{Addr: "127.0.0.1"}, wantErr: "Options.Addr"},
		{name: "bad port", opts: Options{Addr: "127.0.0.1:99999"}, wantErr: "bad port"},
		{name: "wildcard", opts: Options{Addr: "0.0.0.0:0"}, wantErr: "wildcard"},
		{name: "negative partitions", opts: Options{Partitions: -1}, wantErr: "Options.Partitions"},
		{name: "empty topic", opts: Options{Topics: []string{""}}, wantErr: "Options.Topics"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := Start(tc.opts)
			if tc.wantErr != "" {
				if err == nil {
					b.Close()
					t.Fatalf("Start succeeded, want error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer b.Close()
			host, port, err := net.SplitHostPort(b.Addr())
			if err != nil {
				t.Fatalf("Addr %q: %v", b.Addr(), err)
			}
			if host != tc.wantHost || port == "0" {
				t.Errorf("Addr = %q, want host %s and a real port", b.Addr(), tc.wantHost)
			}
			conn, err := net.Dial("tcp", b.Addr())
			if err != nil {
				t.Fatalf("dial %s: %v", b.Addr(), err)
			}
			_ = conn.Close()
		})
	}
}

func TestPartitionCounts(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Options{Partitions: 5, Topics: []string{"seeded"}})
	cl, err := sarama.NewClient([]string{b.Addr()}, producerConfig(""))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Asking for an unknown topic auto-creates it, as a relay's first
	// produce would.
	for _, topic := range []string{"seeded", "auto-created"} {
		ps, err := cl.Partitions(topic)
		if err != nil {
			t.Fatalf("partitions of %s: %v", topic, err)
		}
		if len(ps) != 5 {
			t.Errorf("%s has %d partitions, want 5", topic, len(ps))
		}
	}
}

func TestProduceAndCollect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Options{Topics: []string{"dev.orders"}})
	p := newProducer(t, b, "")
	ctx := testContext(t)

	ts := time.UnixMilli(1_700_000_000_123)
	msgs := []*sarama.ProducerMessage{
		{Topic: "dev.orders", Partition: 0, Key: sarama.StringEncoder("order-1"), Value: sarama.StringEncoder(`{"total": 12.5}`),
			Headers: []sarama.RecordHeader{{Key: []byte("id"), Value: []byte("1")}, {Key: []byte("type"), Value: []byte("OrderCreated")}}, Timestamp: ts},
		{Topic: "dev.orders", Partition: 2, Key: sarama.StringEncoder("Zoë-日本語-🎉"), Value: sarama.ByteEncoder{0x00, 0xff, 0x10},
			Headers: []sarama.RecordHeader{{Key: []byte("type"), Value: []byte("b")}, {Key: []byte("type"), Value: []byte("a")}}},
		{Topic: "dev.orders", Partition: 0, Key: sarama.StringEncoder("order-1"), Value: nil}, // tombstone
		{Topic: "dev.orders", Partition: 1, Key: sarama.ByteEncoder{}, Value: sarama.StringEncoder("empty key")},
		// Not seeded: created by the produce itself.
		{Topic: "dev.customers", Partition: 1, Key: sarama.StringEncoder("c-9"), Value: sarama.StringEncoder("x")},
	}
	if err := p.SendMessages(msgs); err != nil {
		t.Fatalf("send: %v", err)
	}

	var want []Record
	for _, m := range msgs {
		r := Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
		r.Key, _ = m.Key.Encode()
		if m.Value != nil {
			r.Value, _ = m.Value.Encode()
		}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, Header{Key: string(h.Key), Value: string(h.Value)})
		}
		want = append(want, r)
	}
	sortRecords(want)

	check := func(t *testing.T, got []Record) {
		t.Helper()
		sortRecords(got)
		if len(got) != len(want) {
			t.Fatalf("got %d records, want %d:\n%s", len(got), len(want), lines(got))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Topic != w.Topic || g.Partition != w.Partition || g.Offset != w.Offset ||
				!bytes.Equal(g.Key, w.Key) || (g.Key == nil) != (w.Key == nil) ||
				!bytes.Equal(g.Value, w.Value) || (g.Value == nil) != (w.Value == nil) ||
				!slices.Equal(g.Headers, w.Headers) {
				t.Errorf("record %d:\n got %v\nwant %v", i, g, w)
			}
		}
		for _, g := range got {
			if g.Topic == "dev.orders" && g.Partition == 0 && g.Offset == 0 && !g.Timestamp.Equal(ts) {
				t.Errorf("timestamp = %v, want %v", g.Timestamp, ts)
			}
		}
	}

	t.Run("CollectN", func(t *testing.T) {
		got, err := CollectN(ctx, []string{b.Addr()}, `^dev\.`, len(msgs))
		if err != nil {
			t.Fatal(err)
		}
		check(t, got)
	})
	t.Run("CollectUntilIdle", func(t *testing.T) {
		got, err := CollectUntilIdle(ctx, []string{b.Addr()}, `^dev\.`, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		check(t, got)
	})
	t.Run("regex selects topics", func(t *testing.T) {
		got, err := CollectUntilIdle(ctx, []string{b.Addr()}, `^dev\.customers$`, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Topic != "dev.customers" {
			t.Errorf("got:\n%s\nwant the one dev.customers record", lines(got))
		}
	})
}

func TestReadCommittedHidesUncommitted(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Options{Topics: []string{"txn"}})
	p := newProducer(t, b, "devbroker-test")
	ctx := testContext(t)

	send := func(value string, commit, abort bool) {
		t.Helper()
		if err := p.BeginTxn(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "txn", Partition: 0, Value: sarama.StringEncoder(value)}); err != nil {
			t.Fatalf("send %s: %v", value, err)
		}
		switch {
		case commit:
			if err := p.CommitTxn(); err != nil {
				t.Fatalf("commit: %v", err)
			}
		case abort:
			if err := p.AbortTxn(); err != nil {
				t.Fatalf("abort: %v", err)
			}
		}
	}
	send("aborted", false, true)
	send("committed", true, false)
	send("open", false, false) // left open: beyond the last stable offset

	got, err := CollectUntilIdle(ctx, []string{b.Addr()}, `^txn$`, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Value) != "committed" {
		t.Errorf("got:\n%s\nwant only the committed record", lines(got))
	}
}

func TestCollectNReportsShortfall(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Options{Topics: []string{"short"}})
	p := newProducer(t, b, "")
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "short", Value: sarama.StringEncoder("only")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	got, err := CollectN(ctx, []string{b.Addr()}, `^short$`, 3)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 arrived") {
		t.Fatalf("err = %v, want a deadline error saying 1 arrived", err)
	}
	if len(got) != 1 {
		t.Errorf("got %d records with the error, want 1", len(got))
	}
}

func TestConsumeErrors(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Options{Topics: []string{"errs"}})
	p := newProducer(t, b, "")
	if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "errs", Value: sarama.StringEncoder("v")}); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	brokers := []string{b.Addr()}
	tests := []struct {
		name    string
		run     func(context.Context) error
		wantErr bool
		wantIs  error
	}{
		{"handler error", func(ctx context.Context) error {
			return Consume(ctx, brokers, `^errs$`, func(Record) error { return errBoom })
		}, true, errBoom},
		{"ErrStop is clean", func(ctx context.Context) error {
			return Consume(ctx, brokers, `^errs$`, func(Record) error { return ErrStop })
		}, false, nil},
		{"context ends", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			return Consume(ctx, brokers, `^nothing-here$`, func(Record) error { return nil })
		}, true, context.DeadlineExceeded},
		{"bad regex", func(ctx context.Context) error {
			return Consume(ctx, brokers, `(`, func(Record) error { return nil })
		}, true, nil},
		{"no brokers", func(ctx context.Context) error {
			return Consume(ctx, nil, `x`, func(Record) error { return nil })
		}, true, nil},
		{"unreachable broker", func(ctx context.Context) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			// A port that was free a moment ago refuses connections.
			addr := ln.Addr().String()
			_ = ln.Close()
			_, err = CollectUntilIdle(ctx, []string{addr}, `x`, time.Second)
			return err
		}, true, nil},
		{"idle must be positive", func(ctx context.Context) error {
			return ConsumeUntilIdle(ctx, brokers, `x`, 0, func(Record) error { return nil })
		}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.run(testContext(t))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want it to wrap %v", err, tc.wantIs)
			}
		})
	}
}

func TestRecordString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    Record
		want string
	}{
		{"plain", Record{Topic: "t", Partition: 1, Offset: 7, Key: []byte("k1"), Value: []byte(`{"a": 1}`),
			Headers: []Header{{"id", "42"}, {"type", "OrderCreated"}}},
			`topic=t partition=1 offset=7 key=k1 headers={id=42, type=OrderCreated} value={"a": 1}`},
		{"nulls", Record{Topic: "t"}, `topic=t partition=0 offset=0 key=<null> headers={} value=<null>`},
		{"empty key and value", Record{Topic: "t", Key: []byte{}, Value: []byte{}}, `topic=t partition=0 offset=0 key="" headers={} value=`},
		{"ambiguous key and header", Record{Topic: "t", Key: []byte("a b"), Value: []byte("<null>"), Headers: []Header{{"k", "x=y, z"}}},
			`topic=t partition=0 offset=0 key="a b" headers={k="x=y, z"} value="<null>"`},
		{"utf-8 stays readable", Record{Topic: "t", Key: []byte("Zoë"), Value: []byte("日本語 🎉")},
			`topic=t partition=0 offset=0 key=Zoë headers={} value=日本語 🎉`},
		{"binary and newlines quoted", Record{Topic: "t", Key: []byte{0xff}, Value: []byte("a\nb")},
			`topic=t partition=0 offset=0 key="\xff" headers={} value="a\nb"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.r.String(); got != tc.want {
				t.Errorf("String() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func lines(rs []Record) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString("  ")
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestBrokersAndDataDir: a three-node cluster spreads partition leaders, and
// a broker restarted on the same DataDir and port has kept its records (the
// crash tests stop the broker this way).
func TestBrokersAndDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := Start(Options{Brokers: 3, Partitions: 6, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.cluster.ListenAddrs()); n != 3 {
		t.Fatalf("%d listeners, want 3", n)
	}
	leaders := map[int32]bool{}
	p := newProducer(t, b, "")
	for i := 0; i < 12; i++ {
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: "persist", Value: sarama.StringEncoder(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for part := int32(0); part < 6; part++ {
		leaders[b.cluster.LeaderFor("persist", part)] = true
	}
	if len(leaders) < 2 {
		t.Errorf("all partitions led by one node: %v", leaders)
	}
	addr := b.Addr()
	b.Close()

	b2, err := Start(Options{Addr: addr, Brokers: 3, Partitions: 6, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	got, err := CollectN(testContext(t), []string{b2.Addr()}, "^persist$", 12)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if len(got) != 12 {
		t.Fatalf("got %d records after restart, want 12", len(got))
	}
}
