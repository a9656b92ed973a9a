package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
)

// Reading the position: partition 0, from its oldest offset to its high
// watermark as Load begins, committed records only.
//
// Up to the last stable offset (LSO) the brokers filter for us: a fetch
// with isolation level read_committed returns what lies below it, with
// the list of aborted transactions among it. A sarama PartitionConsumer
// cannot be used for this: it drops control records and aborted batches
// without telling how far it has read, so a reader waiting for the
// offset before the LSO waits forever when that is a commit marker —
// which it is after every transactional Save.
//
// Beyond the LSO, a read_committed fetch returns nothing until every
// transaction open there has ended: one hung transaction of another relay
// (until its transaction.timeout.ms) would hide every newer position of
// ours, and a relay resuming from an older position than it committed
// sends records twice. So the rest, up to the high watermark, is read
// uncommitted and judged here as Kafka would: a record outside a
// transaction is committed; a transactional one counts once its
// producer's commit marker follows it, and not at all while none does
// (its transaction is still open: not committed yet) or after an abort
// marker. Nothing beyond the LSO has been compacted: the log cleaner
// stops there.

// found is the newest committed record of the key.
type found struct {
	found  bool
	offset int64
	value  []byte // nil: a tombstone
}

// Fetch sizes: a position record is a few hundred bytes; a response may
// hold many thousands of them.
const (
	fetchResponseBytes  = 32 << 20
	fetchPartitionBytes = 8 << 20
	fetchMaxBatch       = 256 << 20 // the largest batch the store asks for
)

// Control record types (the key of a control record: version, type).
const (
	controlAbort  = 0
	controlCommit = 1
)

// newest reads the newest committed record of the relay's key.
func (s *Store) newest(ctx context.Context, client sarama.Client) (found, error) {
	r := &reader{s: s, client: client, key: []byte(s.name), best: found{offset: -1}}
	start, err := r.listOffset(ctx, sarama.OffsetOldest, sarama.ReadUncommitted)
	if err != nil {
		return found{}, err
	}
	lso, err := r.listOffset(ctx, sarama.OffsetNewest, sarama.ReadCommitted)
	if err != nil {
		return found{}, err
	}
	hw, err := r.listOffset(ctx, sarama.OffsetNewest, sarama.ReadUncommitted)
	if err != nil {
		return found{}, err
	}
	began := time.Now()
	next, err := r.scan(ctx, start, lso, sarama.ReadCommitted)
	if err != nil {
		return found{}, err
	}
	if next < hw {
		if next, err = r.scan(ctx, next, hw, sarama.ReadUncommitted); err != nil {
			return found{}, err
		}
	}
	s.log.Debug().Int64("from", start).Int64("lso", lso).Int64("hw", hw).Int64("read_to", next).Int("fetches", r.fetches).Int("batches", r.nbatches).
		Str("took", time.Since(began).String()).Bool("found", r.best.found).Msg("read the positions topic")
	return r.best, nil
}

// reader is one read of the partition.
type reader struct {
	s        *Store
	client   sarama.Client
	key      []byte
	best     found
	fetches  int
	nbatches int
	// pending holds, per producer id, the newest record of the key in
	// that producer's transaction not yet seen to end (uncommitted reads).
	pending map[int64]found
}

// leader is the partition's leader, refreshing the metadata after a
// failure.
func (r *reader) leader(attempt int) (*sarama.Broker, error) {
	if attempt > 0 {
		_ = r.client.RefreshMetadata(r.s.cfg.Topic)
	}
	b, err := r.client.Leader(r.s.cfg.Topic, 0)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// retried runs f against the leader until it succeeds, fails in a way
// trying again cannot fix, or attempts run out (an outage: the relay
// retries the whole session later).
func (r *reader) retried(ctx context.Context, what string, f func(*sarama.Broker) error) error {
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(100<<min(attempt, 4)) * time.Millisecond):
			}
		}
		var b *sarama.Broker
		if b, err = r.leader(attempt); err == nil {
			if err = f(b); err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(err) {
			break
		}
	}
	return r.s.classify(fmt.Errorf("%s of topic %s partition 0: %w", what, r.s.cfg.Topic, err), opRead)
}

// listOffset asks the leader for the oldest offset, or the newest: the
// high watermark (read_uncommitted) or the last stable offset
// (read_committed; ListOffsets v2, Kafka 0.11).
func (r *reader) listOffset(ctx context.Context, at int64, iso sarama.IsolationLevel) (int64, error) {
	what := "find the oldest offset"
	if at == sarama.OffsetNewest {
		what = map[sarama.IsolationLevel]string{sarama.ReadUncommitted: "find the high watermark", sarama.ReadCommitted: "find the last stable offset"}[iso]
	}
	var off int64
	err := r.retried(ctx, what, func(b *sarama.Broker) error {
		req := sarama.NewOffsetRequest(r.client.Config().Version)
		req.IsolationLevel = iso
		req.AddBlock(r.s.cfg.Topic, 0, at, 1)
		resp, err := b.GetAvailableOffsets(req)
		if err != nil {
			return err
		}
		blk := resp.GetBlock(r.s.cfg.Topic, 0)
		if blk == nil {
			return sarama.ErrIncompleteResponse
		}
		if !errors.Is(blk.Err, sarama.ErrNoError) {
			return blk.Err
		}
		off = blk.Offset
		if len(blk.Offsets) > 0 && req.Version == 0 {
			off = blk.Offsets[0]
		}
		return nil
	})
	return off, err
}

// scan reads [from, to) at isolation level iso and returns the offset it
// read up to.
func (r *reader) scan(ctx context.Context, from, to int64, iso sarama.IsolationLevel) (int64, error) {
	offset, size := from, int32(fetchPartitionBytes)
	for offset < to {
		if err := ctx.Err(); err != nil {
			return offset, err
		}
		var blk *sarama.FetchResponseBlock
		err := r.retried(ctx, "read", func(b *sarama.Broker) error {
			var err error
			blk, err = r.fetch(b, offset, size, iso)
			return err
		})
		if errors.Is(err, sarama.ErrOffsetOutOfRange) {
			// The log start moved past offset (records deleted):
			// read on from where it is now.
			if offset, err = r.listOffset(ctx, sarama.OffsetOldest, sarama.ReadUncommitted); err != nil {
				return offset, err
			}
			continue
		}
		if err != nil {
			return offset, err
		}
		next, partial, err := r.batches(blk, offset, iso)
		if err != nil {
			return offset, err
		}
		switch {
		case next > offset:
			offset, size = next, fetchPartitionBytes
		case partial && size < fetchMaxBatch:
			size *= 4 // a batch larger than the fetch: ask for more
		case partial:
			return offset, fmt.Errorf("topic %s partition 0 holds a record batch larger than %d bytes at offset %d: that is no position record", r.s.cfg.Topic, fetchMaxBatch, offset)
		default:
			// The brokers hold no batch from offset on below what they
			// may return (the LSO, or the high watermark): nothing
			// more was written before to.
			return to, nil
		}
	}
	return offset, nil
}

// fetch sends one fetch request for partition 0 at offset.
func (r *reader) fetch(b *sarama.Broker, offset int64, size int32, iso sarama.IsolationLevel) (*sarama.FetchResponseBlock, error) {
	req := &sarama.FetchRequest{MaxWaitTime: 50, MinBytes: 1, MaxBytes: max(fetchResponseBytes, size), Isolation: iso}
	req.Version = fetchVersion(r.client.Config().Version)
	if req.Version >= 7 {
		req.SessionID, req.SessionEpoch = 0, -1 // no fetch session
	}
	req.AddBlock(r.s.cfg.Topic, 0, offset, size, -1)
	r.fetches++
	resp, err := b.Fetch(req)
	if err != nil {
		return nil, err
	}
	blk := resp.GetBlock(r.s.cfg.Topic, 0)
	if blk == nil {
		return nil, sarama.ErrIncompleteResponse
	}
	if !errors.Is(blk.Err, sarama.ErrNoError) {
		return nil, blk.Err
	}
	return blk, nil
}

// fetchVersion is the newest Fetch version the configured protocol
// version speaks, as sarama's consumer picks it (≥ 4: isolation level).
func fetchVersion(v sarama.KafkaVersion) int16 {
	switch {
	case v.IsAtLeast(sarama.V2_7_0_0):
		return 12
	case v.IsAtLeast(sarama.V2_3_0_0):
		return 11
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 10
	case v.IsAtLeast(sarama.V2_0_0_0):
		return 8
	case v.IsAtLeast(sarama.V1_1_0_0):
		return 7
	case v.IsAtLeast(sarama.V1_0_0_0):
		return 6
	}
	return 5
}

// batches takes the key's records from one fetch response and returns the
// offset after its last complete batch, and whether a batch was cut off.
func (r *reader) batches(blk *sarama.FetchResponseBlock, from int64, iso sarama.IsolationLevel) (next int64, partial bool, err error) {
	next = from
	// read_committed: the brokers list the aborted transactions among
	// what they returned; a producer's batches are aborted from the
	// first offset of its aborted transaction up to its abort marker.
	aborted := append([]*sarama.AbortedTransaction(nil), blk.AbortedTransactions...)
	sort.Slice(aborted, func(i, j int) bool { return aborted[i].FirstOffset < aborted[j].FirstOffset })
	abortedNow := map[int64]bool{}
	for _, recs := range blk.RecordsSet {
		b := recs.RecordBatch
		if b == nil {
			if recs.MsgSet != nil && len(recs.MsgSet.Messages) > 0 {
				return next, false, fmt.Errorf("topic %s holds records in the message format of Kafka before 0.11 (message.format.version): the Kafka checkpoint store needs format v2", r.s.cfg.Topic)
			}
			continue
		}
		if b.PartialTrailingRecord {
			return next, next == from, nil
		}
		last := b.LastOffset()
		if last < from {
			continue
		}
		r.nbatches++
		next = last + 1
		for len(aborted) > 0 && aborted[0].FirstOffset <= last {
			abortedNow[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		if b.Control {
			typ, err := controlType(b)
			if err != nil {
				return next, false, fmt.Errorf("topic %s offset %d: %w", r.s.cfg.Topic, b.FirstOffset, err)
			}
			if typ == controlAbort {
				delete(abortedNow, b.ProducerID)
			}
			if iso == sarama.ReadUncommitted {
				r.ended(b.ProducerID, typ == controlCommit)
			}
			continue
		}
		if iso == sarama.ReadCommitted && b.IsTransactional && abortedNow[b.ProducerID] {
			continue
		}
		for _, rec := range b.Records {
			off := b.FirstOffset + rec.OffsetDelta
			if off < from || !bytes.Equal(rec.Key, r.key) {
				continue
			}
			f := found{found: true, offset: off, value: rec.Value}
			if iso == sarama.ReadUncommitted && b.IsTransactional {
				if r.pending == nil {
					r.pending = map[int64]found{}
				}
				r.pending[b.ProducerID] = f // counts once its commit marker comes
				continue
			}
			r.take(f)
		}
	}
	return next, false, nil
}

// ended is a transaction marker of producer pid: its pending record is
// committed, or dropped.
func (r *reader) ended(pid int64, committed bool) {
	f, ok := r.pending[pid]
	if !ok {
		return
	}
	delete(r.pending, pid)
	if committed {
		r.take(f)
	}
}

func (r *reader) take(f found) {
	if f.offset > r.best.offset {
		r.best = f
	}
}

// controlType reads a control batch's type from its record's key.
func controlType(b *sarama.RecordBatch) (int, error) {
	if len(b.Records) == 0 || len(b.Records[0].Key) < 4 {
		return 0, errors.New("control batch without a readable control record")
	}
	return int(binary.BigEndian.Uint16(b.Records[0].Key[2:4])), nil
}
