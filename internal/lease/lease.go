package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
)

// Observer is told of assignments (for metrics).
type Observer interface {
	// Assigned: this instance got pipeline; takeover when another
	// instance held it before.
	Assigned(pipeline string, takeover bool)
	// Active: this instance streams pipeline (on) or stopped (off).
	Active(pipeline string, on bool)
	// Member: this instance is in the group (it got an assignment, maybe
	// of nothing: a standby) or not (why: joining, or the error that put
	// it out), so that a standby cut off from Kafka is not called ready.
	Member(in bool, why string)
}

// RunFunc runs pipeline i until ctx ends (then it returns nil after a
// clean stop) or a failure it cannot retry, which stops the instance.
type RunFunc func(ctx context.Context, i int) error

// Options are what the lease needs besides its Config.
type Options struct {
	// Group is the consumer group (GroupID of the relay's name).
	Group string
	// Topic is the lease topic (Config.Topic, or DefaultTopic).
	Topic string
	// Pipelines names the pipelines; pipeline i is partition i.
	Pipelines []string
	// Brokers and Client are the cluster and how to reach it (the sink's
	// ClientConfig: TLS, SASL, version). Client is changed.
	Brokers  []string
	Client   *sarama.Config
	Observer Observer
}

// Lease is one instance's membership in the group.
type Lease struct {
	cfg  Config
	o    Options
	run  RunFunc
	log  zerolog.Logger
	self holder
}

// holder is who took or released a pipeline: the lease records it in the
// pipeline's partition, so that the next holder can say from whom and why
// it took over.
type holder struct {
	Member     string    `json:"member"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Generation int32     `json:"generation"`
	At         time.Time `json:"at"`
	// Released: the holder stopped the pipeline cleanly (a rebalance or
	// a shutdown); absent when it vanished (killed, paused, partitioned).
	Released string `json:"released,omitempty"`
}

// New returns the lease; nothing connects until Run.
func New(cfg Config, o Options, run RunFunc, log zerolog.Logger) *Lease {
	cfg.SetDefaults()
	host, _ := os.Hostname()
	return &Lease{cfg: cfg, o: o, run: run, log: log, self: holder{Host: host, PID: os.Getpid()}}
}

// member tells the Observer whether this instance is in the group.
func (l *Lease) member(in bool, why string) {
	if l.o.Observer != nil {
		l.o.Observer.Member(in, why)
	}
}

// saramaConfig is the group member's configuration.
func (l *Lease) saramaConfig() *sarama.Config {
	sc := l.o.Client
	// The member id the broker assigns starts with the client id: make it
	// say which instance this is.
	sc.ClientID = clientID(sc.ClientID, l.self.Host, l.self.PID)
	g := &sc.Consumer.Group
	g.Session.Timeout = l.cfg.SessionTimeout
	g.Heartbeat.Interval = l.cfg.HeartbeatInterval
	// Sticky: a standby joining (or an instance restarting) does not move
	// a pipeline that is streaming (under the eager protocol its holder
	// stops and restarts it within the round, which takes a commit and a
	// producer start). Sarama's cooperative protocol would spare that
	// restart, but against kfake it lost JoinGroup answers when a holder
	// died in the middle of a round (takeovers of 20-30s instead of 6):
	// eager is the tried path.
	g.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	// How long the coordinator waits for every member to rejoin: a member
	// that died in the middle of a round holds the others up for that
	// long, so no longer than its heartbeat would. A holder that needs
	// longer to drain is left out of the round, and its successor's
	// producer fences it.
	g.Rebalance.Timeout = l.cfg.SessionTimeout
	// The coordinator answers a JoinGroup when the round completes, at
	// the latest after the rebalance timeout: a read timeout a little
	// longer lets every round finish, and bounds the wait if an answer is
	// lost (instead of the default 30s).
	sc.Net.ReadTimeout = g.Rebalance.Timeout + 3*time.Second
	g.Rebalance.Retry.Backoff = 200 * time.Millisecond
	// The lease topic's records are read from the start (they say who
	// held a pipeline before); the group commits no offsets.
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = false
	sc.Consumer.Return.Errors = true
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	// The lease topic is created with one partition per pipeline, not by
	// a broker's auto.create.topics.enable with its default count.
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Producer.Transaction.ID = ""
	return sc
}

func clientID(base, host string, pid int) string {
	var b strings.Builder
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		b.WriteString("host")
	}
	return fmt.Sprintf("%s-%s-%d", base, b.String(), pid)
}

// Run is a member of the group until ctx ends (it then stops the
// pipelines it streams and leaves the group, so that another instance
// takes them over at once) or a pipeline fails for good, which it
// returns. An unreachable Kafka is waited out.
func (l *Lease) Run(ctx context.Context) error {
	if len(l.o.Pipelines) == 0 {
		return errors.New("lease: no pipelines")
	}
	l.member(false, "joining the standby group")
	sc := l.saramaConfig()
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var (
		group    sarama.ConsumerGroup
		client   sarama.Client
		producer sarama.SyncProducer
		outage   error
	)
	// Connect, and create the lease topic, until it works.
	for wait := 200 * time.Millisecond; ; wait = min(wait*2, 10*time.Second) {
		err := l.connect(sc, &client, &group, &producer)
		if err == nil {
			break
		}
		l.member(false, err.Error())
		if !isPermanent(err) {
			if outage == nil || outage.Error() != err.Error() {
				l.log.Warn().Err(err).Msg("cannot join the standby group yet; retrying")
			}
			outage = err
		}
		if isPermanent(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	defer func() {
		if producer != nil {
			_ = producer.Close()
		}
		// Leaves the group: the others rebalance at once rather than
		// after session_timeout. The pipelines have stopped by now.
		if err := group.Close(); err != nil {
			l.log.Debug().Err(err).Msg("leaving the standby group")
		}
		_ = client.Close()
		l.log.Info().Msg("left the standby group")
	}()
	go func() {
		for err := range group.Errors() {
			l.log.Debug().Err(err).Msg("standby group")
		}
	}()
	h := &handler{l: l, producer: producer, client: client, fail: stop, stopping: ctx}
	l.log.Info().Str("group", l.o.Group).Str("topic", l.o.Topic).Strs("pipelines", l.o.Pipelines).
		Str("host", l.self.Host).Int("pid", l.self.PID).Msg("joining the standby group")
	for wait := 200 * time.Millisecond; runCtx.Err() == nil; {
		err := group.Consume(runCtx, []string{l.o.Topic}, h)
		switch {
		case runCtx.Err() != nil:
		case errors.Is(err, sarama.ErrInvalidSessionTimeout):
			return fmt.Errorf("relay.ha.session_timeout: %s is outside what the brokers allow (group.min.session.timeout.ms, 6s by default, to group.max.session.timeout.ms): %w", l.cfg.SessionTimeout, err)
		case err != nil:
			l.member(false, err.Error())
			l.log.Warn().Err(err).Msg("standby group: rejoining")
			select {
			case <-runCtx.Done():
			case <-time.After(wait):
			}
			wait = min(wait*2, 5*time.Second)
		default:
			wait = 200 * time.Millisecond
		}
	}
	if err := context.Cause(runCtx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// permanentError is a failure that retrying cannot fix (the lease topic
// has too few partitions).
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

func (l *Lease) connect(sc *sarama.Config, client *sarama.Client, group *sarama.ConsumerGroup, producer *sarama.SyncProducer) error {
	c, err := sarama.NewClient(l.o.Brokers, sc)
	if err != nil {
		return fmt.Errorf("connect to kafka.brokers: %w", err)
	}
	if err := l.ensureTopic(c); err != nil {
		_ = c.Close()
		return err
	}
	g, err := sarama.NewConsumerGroupFromClient(l.o.Group, c)
	if err != nil {
		_ = c.Close()
		return fmt.Errorf("join group %s: %w", l.o.Group, err)
	}
	// The producer of lease records only informs the next holder: without
	// it the lease still works.
	p, err := sarama.NewSyncProducerFromClient(c)
	if err != nil {
		l.log.Warn().Err(err).Msg("cannot write lease records: takeovers are logged without the previous holder")
		p = nil
	}
	*client, *group, *producer = c, g, p
	return nil
}

// ensureTopic creates the lease topic with one partition per pipeline,
// or checks that it has enough.
func (l *Lease) ensureTopic(c sarama.Client) error {
	n := int32(len(l.o.Pipelines))
	parts, err := c.Partitions(l.o.Topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		admin, aerr := sarama.NewClusterAdminFromClient(c)
		if aerr != nil {
			return aerr
		}
		// admin is not closed: that would close c.
		detail := &sarama.TopicDetail{NumPartitions: n, ReplicationFactor: int16(min(3, len(c.Brokers())))}
		if v := l.o.Client.Version; v.IsAtLeast(sarama.V2_4_0_0) {
			detail.ReplicationFactor = -1 // the brokers' default.replication.factor
		}
		err = admin.CreateTopic(l.o.Topic, detail, false)
		if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("create the lease topic %s (relay.ha.topic): %w", l.o.Topic, err)
		}
		l.log.Info().Str("topic", l.o.Topic).Int32("partitions", n).Msg("created the lease topic")
		if err := c.RefreshMetadata(l.o.Topic); err != nil {
			return err
		}
		parts, err = c.Partitions(l.o.Topic)
	}
	if err != nil {
		return fmt.Errorf("lease topic %s (relay.ha.topic): %w", l.o.Topic, err)
	}
	if int32(len(parts)) < n {
		return permanentError{fmt.Errorf("lease topic %s has %d partitions for %d pipelines: add partitions (kafka-topics.sh --alter --topic %s --partitions %d) or set relay.ha.topic to a new name", l.o.Topic, len(parts), n, l.o.Topic, n)}
	}
	return nil
}

// handler is the group's ConsumerGroupHandler: each claimed partition
// runs its pipeline for as long as the claim lasts.
type handler struct {
	l        *Lease
	producer sarama.SyncProducer // nil: no lease records
	client   sarama.Client
	fail     context.CancelCauseFunc
	stopping context.Context // the instance's own context: ended by a shutdown
	mu       sync.Mutex
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.l.member(true, "")
	var mine []string
	for _, p := range s.Claims()[h.l.o.Topic] {
		if int(p) < len(h.l.o.Pipelines) {
			mine = append(mine, h.l.o.Pipelines[p])
		}
	}
	ev := h.l.log.Info().Str("member", s.MemberID()).Int32("generation", s.GenerationID())
	if len(mine) == 0 {
		ev.Msg("standing by: another instance streams every pipeline")
	} else {
		ev.Strs("pipelines", mine).Msg("group assignment")
	}
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	l := h.l
	i := int(claim.Partition())
	if i >= len(l.o.Pipelines) {
		<-s.Context().Done() // a partition beyond the pipelines: nothing to run
		return nil
	}
	name := l.o.Pipelines[i]
	me := l.self
	me.Member, me.Generation, me.At = s.MemberID(), s.GenerationID(), time.Now().UTC()
	log := l.log.With().Str("pipeline", name).Str("member", me.Member).Str("host", me.Host).Int("pid", me.PID).Int32("generation", me.Generation).Logger()

	// The claim lasts until its messages channel closes (a revocation, in
	// a cooperative rebalance) or the session ends (an eager one, a lost
	// membership, a shutdown). Who held it before is the last lease record
	// before the end of the partition, read beside the pipeline's start so
	// as not to delay it.
	ctx, revoked := context.WithCancel(s.Context())
	defer revoked()
	// The take record goes first (one produce): a holder killed right
	// after its assignment is still named as the one that vanished.
	end := h.end(claim)
	h.record(claim.Partition(), name, me)
	prevc := make(chan *holder, 1)
	go func() {
		defer revoked()
		readHolders(claim, end, prevc)
	}()
	took := make(chan struct{})
	go func() {
		defer close(took)
		var prev *holder
		first := "first holder of the pipeline in this group"
		select {
		case prev = <-prevc:
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
			first = "the previous holder is unknown: the lease records were not read within 5s"
		}
		takeover := prev != nil && prev.Member != me.Member
		if l.o.Observer != nil {
			l.o.Observer.Assigned(name, takeover)
		}
		switch {
		case prev == nil:
			log.Info().Str("why", first).Msg("this instance streams the pipeline")
		case !takeover:
			log.Info().Str("why", "rebalance: this instance held it before").Msg("this instance streams the pipeline")
		case prev.Released != "":
			log.Info().Str("previous_member", prev.Member).Str("previous_host", prev.Host).Int("previous_pid", prev.PID).
				Str("why", "rebalance: the previous holder released it ("+prev.Released+")").Msg("this instance took over the pipeline")
		default:
			log.Warn().Str("previous_member", prev.Member).Str("previous_host", prev.Host).Int("previous_pid", prev.PID).Time("previous_since", prev.At).
				Str("why", "rebalance: the previous holder left the group without releasing the pipeline (killed, paused or cut off for relay.ha.session_timeout); its producer is fenced when this one's starts").
				Msg("this instance took over the pipeline")
		}
	}()

	if l.o.Observer != nil {
		l.o.Observer.Active(name, true)
	}
	err := l.run(ctx, i)
	if l.o.Observer != nil {
		l.o.Observer.Active(name, false)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("the pipeline stopped on a failure: this instance stops")
		h.fail(err)
		return nil
	}
	// The release record is written once the takeover's goroutine is
	// done (it logged and counted the assignment, or gave up).
	revoked()
	<-took
	rel := me
	rel.At, rel.Released = time.Now().UTC(), "rebalance"
	if h.stopping.Err() != nil {
		rel.Released = "shutdown"
	}
	h.record(claim.Partition(), name, rel)
	log.Info().Str("why", rel.Released).Msg("stopped streaming the pipeline: released it to the group")
	return nil
}

// end is the next offset of the claim's lease partition now: the records
// before it were written by earlier holders.
func (h *handler) end(claim sarama.ConsumerGroupClaim) int64 {
	off, err := h.client.GetOffset(claim.Topic(), claim.Partition(), sarama.OffsetNewest)
	if err != nil {
		return claim.HighWaterMarkOffset()
	}
	return off
}

// readHolders reads the claim's records and sends the last one before
// end on prev (nil: none), then drains the claim until it closes, so that
// the consumer never blocks on it.
func readHolders(claim sarama.ConsumerGroupClaim, end int64, prev chan<- *holder) {
	var last *holder
	sent := end <= 0
	if sent {
		prev <- nil
	}
	for m := range claim.Messages() {
		if sent {
			continue
		}
		var hd holder
		if json.Unmarshal(m.Value, &hd) == nil && hd.Member != "" {
			last = &hd
		}
		if m.Offset >= end-1 {
			sent = true
			prev <- last
		}
	}
}

// record writes a lease record for pipeline name (best effort).
func (h *handler) record(p int32, name string, hd holder) {
	if h.producer == nil {
		return
	}
	b, err := json.Marshal(hd)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _, err = h.producer.SendMessage(&sarama.ProducerMessage{Topic: h.l.o.Topic, Partition: p, Key: sarama.StringEncoder(name), Value: sarama.ByteEncoder(b)})
	if err != nil {
		h.l.log.Debug().Err(err).Str("pipeline", name).Msg("cannot write the lease record")
	}
}
