package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/failpoint"
	"github.com/outboxrelay/outboxrelay/internal/outbox"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/source"
)

// snapshotTrue is the value of outbox.HeaderSnapshot (shared: headers are
// only read).
var snapshotTrue = []byte("true")

// pump moves transactions from the reader to the sink, telling the
// committer what it sent. It keeps where it stopped, so that a clean
// shutdown can finish the transaction it stopped in.
type pump struct {
	r       *Relay
	reader  source.Reader
	sink    sink.Sink
	tracker *checkpoint.Tracker[txEnd]
	failed  func() error // the first failed acknowledgement
	// eos, under exactly-once, is where the pump says how far it sent,
	// under the lock the commits take: a commit falls between rows.
	eos *sent

	cur  *checkpoint.Txn[txEnd] // the open transaction, if any
	tx   *source.Tx             // the piece being sent, if any
	next int                    // index in tx.Rows of the next row to send
	txID string
	read time.Time // when the piece was read
}

// open reports whether pump stopped inside a transaction.
func (p *pump) open() bool { return p.cur != nil }

// run sends until an error, or, with untilEnd, until the open transaction
// has ended.
func (p *pump) run(ctx context.Context, untilEnd bool) error {
	if untilEnd && p.cur == nil {
		return nil
	}
	for {
		if p.tx == nil {
			tx, err := p.reader.Next(ctx)
			if err != nil {
				return err
			}
			if p.cur == nil {
				p.cur = p.tracker.Begin()
				if tx.Start != nil {
					// Acknowledged by index: the checkpoint may stop
					// inside this transaction.
					p.cur.Resume(tx.FirstIndex, txEnd{start: tx.Start})
				}
			}
			p.tx, p.next, p.txID, p.read = tx, 0, tx.ID, time.Now()
		}
		if err := p.sendPiece(ctx); err != nil {
			return err
		}
		tx, cur := p.tx, p.cur
		p.tx = nil
		if tx.End != nil {
			cur.End(txEnd{pos: tx.End, commit: tx.CommitTime, read: p.read, records: tx.FirstIndex + len(tx.Rows)})
			if p.eos != nil {
				p.eos.ended(tx.End)
			}
			p.cur = nil
			if untilEnd {
				return nil
			}
		}
	}
}

// sendPiece sends the rows of the current piece from p.next on.
func (p *pump) sendPiece(ctx context.Context) error {
	tx, cur := p.tx, p.cur
	n := len(tx.Rows) - p.next
	if n <= 0 {
		return nil
	}
	// The piece's records count as in flight at once (one tracker lock
	// per piece, not per record); those never sent are taken back.
	cur.Add(n)
	for ; p.next < len(tx.Rows); p.next++ {
		i := p.next
		if err := p.failed(); err != nil {
			// After the first failed acknowledgement nothing more is sent
			// in this session: records behind it (same key) must not
			// reach Kafka before it does.
			cur.Add(i - len(tx.Rows))
			return err
		}
		row := tx.Rows[i]
		index := tx.FirstIndex + i
		if err := p.sendRow(ctx, tx, row, index, cur); err != nil {
			cur.Add(i - len(tx.Rows))
			return err
		}
	}
	return nil
}

// sendRow maps and sends one row (or applies on_bad_row to it). Under
// exactly-once it holds the commit lock meanwhile and then says how far
// the pump got.
func (p *pump) sendRow(ctx context.Context, tx *source.Tx, row source.Row, index int, cur *checkpoint.Txn[txEnd]) error {
	if p.eos != nil {
		p.eos.mu.Lock()
		if err := p.eos.waitRoom(ctx); err != nil {
			return err
		}
		defer p.eos.mu.Unlock()
	}
	sent, err := p.sendOne(ctx, tx, row, index, cur)
	if err == nil && p.eos != nil {
		p.eos.row(tx.Start, index, sent)
	}
	return err
}

// sendOne maps and sends row; sent is false when on_bad_row skipped it.
func (p *pump) sendOne(ctx context.Context, tx *source.Tx, row source.Row, index int, cur *checkpoint.Txn[txEnd]) (sent bool, _ error) {
	ack := p.ackFunc(cur, index)
	rec, err := p.r.mapper.Map(row, tx.ID, index, tx.CommitTime)
	if err == nil && tx.Snapshot {
		rec.Headers = append(rec.Headers, sink.Header{Key: outbox.HeaderSnapshot, Value: snapshotTrue})
	}
	if err == nil && len(p.r.refused) > 0 {
		if detail, ok := p.r.refused[rowKey{tx.ID, index}]; ok {
			err = p.tooLarge(row, tx.ID, index, rec, detail)
		}
	}
	if err != nil {
		send, perr := p.r.onBadRow(row, err, errors.Is(err, sink.ErrTooLarge), &rec)
		if perr != nil {
			return false, perr
		}
		if !send { // skipped: it counts as done
			cur.DoneAt(index, nil)
			return false, nil
		}
	}
	err = p.sink.Send(ctx, rec, ack)
	if err == nil {
		failpoint.Inject("produce-before-ack")
	}
	if errors.Is(err, sink.ErrTooLarge) {
		send, perr := p.r.onBadRow(row, p.tooLarge(row, tx.ID, index, rec, err.Error()), true, &rec)
		switch {
		case perr != nil:
			err = perr
		case !send:
			cur.DoneAt(index, nil)
			return false, nil
		default:
			err = p.sink.Send(ctx, rec, ack)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if ackErr := p.failed(); ackErr != nil {
			return false, ackErr // the sink refuses because an earlier record failed
		}
		if isPermanent(err) {
			return false, err
		}
		// The sink stopped (a failed acknowledgement the tracker has not
		// heard of yet, a commit that failed): the next session resumes.
		return false, fmt.Errorf("table %s, transaction at %s, row %d: %w", row.Table.FullName(), tx.ID, index, err)
	}
	return true, nil
}

// tooLarge is the bad-row error of a record refused for its size.
func (p *pump) tooLarge(row source.Row, txID string, index int, rec sink.Record, detail string) error {
	bad := &outbox.BadRowError{Table: row.Table.FullName(), TxID: txID, Index: index, Reason: outbox.ReasonTooLarge, Detail: detail}
	if id, ok := recordHeader(rec, outbox.HeaderID); ok {
		bad.EventID = id
	}
	return bad
}

// ackFunc acknowledges record index of cur, naming a record the broker
// refused as too large so that the next session can apply on_bad_row to
// it.
func (p *pump) ackFunc(cur *checkpoint.Txn[txEnd], index int) sink.AckFunc {
	return func(err error) {
		if err != nil && errors.Is(err, sink.ErrTooLarge) {
			var re *sink.RecordError
			if errors.As(err, &re) {
				pos, _ := headerOf(re.Headers, outbox.HeaderPosition)
				idx, _ := headerOf(re.Headers, outbox.HeaderIndex)
				if n, perr := strconv.Atoi(idx); perr == nil && pos != "" {
					err = &refusedTooLarge{key: rowKey{pos, n}, detail: err.Error(), err: err}
				}
			}
		}
		cur.DoneAt(index, err)
	}
}

// refusedTooLarge is a record the broker refused for its size.
type refusedTooLarge struct {
	key    rowKey
	detail string
	err    error
}

func (e *refusedTooLarge) Error() string { return e.err.Error() }
func (e *refusedTooLarge) Unwrap() error { return e.err }

func headerOf(hs []sink.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func recordHeader(r sink.Record, key string) (string, bool) { return headerOf(r.Headers, key) }

// onBadRow applies outbox.on_bad_row to a row the mapping or the sink
// refused (err is an *outbox.BadRowError). Under dead-letter it puts the
// dead-letter record in *rec and returns send; under skip it returns
// !send; under fail, the error that stops the relay at this row (the
// checkpoint stays before its transaction).
func (r *Relay) onBadRow(row source.Row, err error, dropPayload bool, rec *sink.Record) (send bool, _ error) {
	var bad *outbox.BadRowError
	if !errors.As(err, &bad) {
		return false, retry.Stop(err)
	}
	policy := r.mapper.Policy()
	if r.cfg.BadRowHook != nil {
		r.cfg.BadRowHook(bad.Reason, policy)
	}
	switch policy {
	case outbox.PolicySkip:
		r.log.Warn().Str("table", bad.Table).Str("event_id", bad.EventID).Str("transaction", bad.TxID).Int("row", bad.Index).
			Str("reason", bad.Reason).Str("error", bad.Detail).Msg("bad outbox row skipped (on_bad_row: skip)")
		return false, nil
	case outbox.PolicyDeadLetter:
		r.log.Warn().Str("table", bad.Table).Str("event_id", bad.EventID).Str("transaction", bad.TxID).Int("row", bad.Index).
			Str("reason", bad.Reason).Str("error", bad.Detail).Msg("bad outbox row sent to the dead-letter topic")
		*rec = r.mapper.DeadLetter(row, bad, dropPayload)
		return true, nil
	}
	return false, retry.Stop(fmt.Errorf("%w. The relay stopped at this row and the checkpoint stays before its transaction: fix the row (or the outbox mapping), or set outbox.on_bad_row to skip or dead-letter, then start the relay again", bad))
}
