package devbroker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrStop, returned by a Consume callback, ends consuming without an error.
var ErrStop = errors.New("devbroker: stop consuming")

// fetchKey is the Kafka API key of Fetch requests.
const fetchKey = 1

// Consume reads every topic matching topicRegex from the earliest offset with
// read_committed isolation, so aborted or still-open transactions stay
// invisible exactly as they would to a downstream consumer. It calls fn for
// each record in offset order per partition (partitions interleave) and runs
// until ctx is done, returning ctx.Err(), or until fn returns an error:
// ErrStop gives nil, anything else is returned wrapped.
//
// topicRegex matches anywhere in a name, like regexp.MatchString; anchor it
// (^…$) to match whole names. Internal topics are never consumed. Topics
// created after Consume starts are picked up within about a second. No
// consumer group is used and nothing is committed. If no broker answers at
// start, Consume fails at once instead of retrying.
func Consume(ctx context.Context, brokers []string, topicRegex string, fn func(Record) error) error {
	return consume(ctx, brokers, topicRegex, fn)
}

func consume(ctx context.Context, brokers []string, topicRegex string, fn func(Record) error, extra ...kgo.Opt) error {
	if len(brokers) == 0 {
		return errors.New("devbroker: consume: no brokers")
	}
	// kgo would only report a bad pattern from inside its metadata loop.
	if _, err := regexp.Compile(topicRegex); err != nil {
		return fmt.Errorf("devbroker: consume: topic regex: %w", err)
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topicRegex),
		kgo.ConsumeRegex(),
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A regex consumer only discovers new topics when it refreshes
		// metadata, every 5 minutes by default: far too slow for tests
		// that subscribe before the relay has created anything.
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("devbroker: consume: new client: %w", err)
	}
	defer cl.Close()
	// kgo retries unreachable brokers forever; a wrong address should fail
	// the caller now rather than look like an idle topic or hang a test.
	if err := cl.Ping(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("devbroker: consume: no broker reachable at %v: %w", brokers, err)
	}

	for {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var fatal error
		fetches.EachError(func(topic string, partition int32, err error) {
			if fatal == nil && !transient(err) {
				fatal = fmt.Errorf("devbroker: consume %s[%d]: %w", topic, partition, err)
			}
		})
		if fatal != nil {
			return fatal
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			if err := fn(newRecord(r)); err != nil {
				if errors.Is(err, ErrStop) {
					return nil
				}
				return fmt.Errorf("devbroker: handle %s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, err)
			}
		}
	}
}

// transient reports fetch errors the client recovers from by itself.
func transient(err error) bool {
	var loss *kgo.ErrDataLoss
	// Data loss is informational: the client has already reset the offset.
	return kerr.IsRetriable(err) || errors.As(err, &loss)
}

// ConsumeUntilIdle is Consume that also returns, with nil, once no record has
// arrived for idle. The idle clock starts when the consumer sends its first
// fetch, not when it is created, so a slow start cannot pass for silence.
// If ctx ends first, its error is returned.
func ConsumeUntilIdle(ctx context.Context, brokers []string, topicRegex string, idle time.Duration, fn func(Record) error) error {
	if idle <= 0 {
		return fmt.Errorf("devbroker: consume until idle: idle %v must be positive", idle)
	}
	idleCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(idle, cancel)
	timer.Stop()
	defer timer.Stop()
	var started atomic.Bool
	hook := fetchStartHook(func() {
		if started.CompareAndSwap(false, true) {
			timer.Reset(idle)
		}
	})
	err := consume(idleCtx, brokers, topicRegex, func(r Record) error {
		timer.Reset(idle)
		return fn(r)
	}, kgo.WithHooks(hook))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.Canceled) && idleCtx.Err() != nil {
		return nil
	}
	return err
}

// fetchStartHook calls its function whenever a fetch request went out.
type fetchStartHook func()

func (h fetchStartHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == fetchKey && err == nil {
		h()
	}
}

// CollectN consumes like Consume and returns the first n records to arrive.
// If ctx ends first it returns the records that did arrive together with an
// error saying how many that was.
func CollectN(ctx context.Context, brokers []string, topicRegex string, n int) ([]Record, error) {
	if n < 0 {
		return nil, fmt.Errorf("devbroker: collect: n %d must not be negative", n)
	}
	if n == 0 {
		return nil, nil
	}
	got := make([]Record, 0, n)
	err := consume(ctx, brokers, topicRegex, func(r Record) error {
		got = append(got, r)
		if len(got) == n {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		return got, fmt.Errorf("devbroker: collect %d records from topics %q: %d arrived: %w", n, topicRegex, len(got), err)
	}
	return got, nil
}

// CollectUntilIdle consumes like Consume and returns every record that
// arrived before the topics were idle for idle (see ConsumeUntilIdle). Tests
// use it to prove nothing beyond the expected records was published. If ctx
// ends first it returns what arrived together with an error.
func CollectUntilIdle(ctx context.Context, brokers []string, topicRegex string, idle time.Duration) ([]Record, error) {
	var got []Record
	err := ConsumeUntilIdle(ctx, brokers, topicRegex, idle, func(r Record) error {
		got = append(got, r)
		return nil
	})
	if err != nil {
		return got, fmt.Errorf("devbroker: collect from topics %q until idle for %v: %d arrived: %w", topicRegex, idle, len(got), err)
	}
	return got, nil
}
