package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/outboxrelay/outboxrelay/source"
)

// stream is the goroutine that owns the replication connection.
func (r *Reader) stream(ctx context.Context) error {
	w := &waker{conn: r.conn}
	r.wakeMu.Lock()
	r.wake = w.wake // Ack interrupts a pending receive with it
	r.wakeMu.Unlock()
	stop := context.AfterFunc(ctx, w.wake)
	defer stop()
	// Report the start position at once: the server learns the flush
	// position this session will never go below.
	if err := r.sendStatus(); err != nil {
		return err
	}
	for {
		select {
		case <-r.nudge:
			if err := r.onAck(); err != nil {
				return err
			}
		default:
		}
		if !time.Now().Before(r.nextStatus) {
			if err := r.sendStatus(); err != nil {
				return err
			}
		}
		if err := r.quiet(ctx); err != nil {
			return err
		}
		msg, err := r.receive(ctx, w)
		if err != nil {
			return err
		}
		if msg == nil {
			continue
		}
		if err := r.handle(ctx, msg); err != nil {
			return err
		}
	}
}

// waker lets other goroutines interrupt the stream goroutine's pending
// receive. Receives run with a read deadline on the connection (the next
// status update) rather than a context per message: pgconn watches a
// context with a goroutine hand-off and the context needs a timer, which
// together cost as much CPU per message as decoding it (profile in
// docs/performance.md). A timeout leaves the connection usable.
type waker struct {
	conn     *pgconn.PgConn
	mu       sync.Mutex
	reading  bool      // a receive is pending
	deadline time.Time // the read deadline in place; zero: must be set again
}

// wake makes a pending receive return at once (an Ack arrived, or the
// stream's context ended); a receive about to start checks for those itself.
func (w *waker) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reading {
		_ = w.conn.Conn().SetReadDeadline(time.Now())
		w.deadline = time.Time{}
	}
}

// receive waits for the next message until the next status update is due
// or an Ack arrives; then it returns nil, nil.
func (r *Reader) receive(ctx context.Context, w *waker) (pgproto3.BackendMessage, error) {
	w.mu.Lock()
	if err := ctx.Err(); err != nil {
		w.mu.Unlock()
		return nil, err
	}
	if len(r.nudge) > 0 { // an Ack is waiting to be reported
		w.mu.Unlock()
		return nil, nil
	}
	if !w.deadline.Equal(r.nextStatus) {
		if err := r.conn.Conn().SetReadDeadline(r.nextStatus); err != nil {
			w.mu.Unlock()
			return nil, fmt.Errorf("replication stream from slot %s: %w", r.cfg.Slot, err)
		}
		w.deadline = r.nextStatus
	}
	w.reading = true
	w.mu.Unlock()
	msg, err := r.conn.ReceiveMessage(context.Background())
	w.mu.Lock()
	w.reading = false
	if err != nil {
		w.deadline = time.Time{}
	}
	w.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if pgconn.Timeout(err) && !r.conn.IsClosed() {
			return nil, nil // status due or woken by Ack: the connection is fine
		}
		return nil, fmt.Errorf("replication stream from slot %s: %w", r.cfg.Slot, err)
	}
	return msg, nil
}

func (r *Reader) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return errors.New("replication stream: empty CopyData message")
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return fmt.Errorf("replication stream: %w", err)
			}
			r.received = max(r.received, pkm.ServerWALEnd)
			if !r.inTx {
				r.walEnd = max(r.walEnd, pkm.ServerWALEnd)
			}
			if pkm.ReplyRequested {
				return r.sendStatus()
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return fmt.Errorf("replication stream: %w", err)
			}
			r.received = max(r.received, xld.WALStart)
			return r.decode(ctx, xld)
		}
	case *pgproto3.ErrorResponse:
		return explain("replication stream from slot "+r.cfg.Slot, pgconn.ErrorResponseToPgError(m), &r.cfg)
	case *pgproto3.CopyDone:
		return fmt.Errorf("replication stream from slot %s: the server ended the stream", r.cfg.Slot)
	}
	return nil
}

// decode handles one pgoutput message.
func (r *Reader) decode(ctx context.Context, xld pglogrepl.XLogData) error {
	data := xld.WALData
	if len(data) == 0 {
		return errors.New("replication stream: empty pgoutput message")
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeUpdate, pglogrepl.MessageTypeDelete, pglogrepl.MessageTypeTruncate,
		pglogrepl.MessageTypeType, pglogrepl.MessageTypeOrigin:
		// The outbox is INSERT-only: an application may delete its rows
		// again, even in the same transaction.
		return nil
	case pglogrepl.MessageTypeInsert:
		if len(data) < 5 {
			return fmt.Errorf("replication stream at %s: truncated insert message", xld.WALStart)
		}
		// Skip other tables before paying for decoding their tuples.
		rel := r.dec.rels[binary.BigEndian.Uint32(data[1:5])]
		if rel == nil {
			return fmt.Errorf("replication stream at %s: insert into relation %d before its relation message", xld.WALStart, binary.BigEndian.Uint32(data[1:5]))
		}
		if !rel.include {
			return nil
		}
		row, err := r.dec.insertTuple(rel, data)
		if err != nil {
			return source.Permanent(fmt.Errorf("transaction at %s: %w", r.txID, err))
		}
		return r.add(ctx, row, xld.WALStart)
	case pglogrepl.MessageTypeStreamStart, pglogrepl.MessageTypeStreamStop,
		pglogrepl.MessageTypeStreamCommit, pglogrepl.MessageTypeStreamAbort:
		return source.Permanent(fmt.Errorf("replication stream at %s: the server streams an in-progress transaction (%s), which protocol version 1 never does", xld.WALStart, pglogrepl.MessageType(data[0])))
	}
	msg, err := parse(data)
	if err != nil {
		return fmt.Errorf("replication stream at %s: %w", xld.WALStart, err)
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		if r.inTx {
			return fmt.Errorf("replication stream at %s: begin inside a transaction", xld.WALStart)
		}
		r.inTx = true
		r.txID = m.FinalLSN.String()
		r.txStart = Position{LSN: m.FinalLSN}
		r.commitTime = m.CommitTime
		r.index = 0
		r.rows = nil
		if r.resume.Rows > 0 {
			// The first transaction of a start inside one must be it.
			if m.FinalLSN != r.resume.LSN {
				return r.resumeLost("a transaction committing at " + m.FinalLSN.String())
			}
			r.skip, r.resume = r.resume.Rows, Position{}
		}
	case *pglogrepl.CommitMessage:
		if !r.inTx {
			return fmt.Errorf("replication stream at %s: commit outside a transaction", xld.WALStart)
		}
		if r.skip > 0 {
			return source.Permanent(fmt.Errorf("the checkpoint points inside the transaction that commits at %s after %d of its rows, but it has only %d: the checkpoint does not belong to this slot", r.txID, r.index+r.skip, r.index))
		}
		tx := &source.Tx{
			ID:         r.txID,
			FirstIndex: r.index,
			Rows:       r.rows,
			End:        Position{LSN: m.TransactionEndLSN},
			CommitTime: m.CommitTime,
		}
		if len(r.rows) > 0 || r.index > 0 {
			tx.Start = r.txStart
		}
		r.inTx = false
		r.rows = nil
		r.index = 0
		if err := r.send(ctx, tx); err != nil {
			return err
		}
		r.lastEnd = m.TransactionEndLSN
	case *pglogrepl.RelationMessage:
		r.dec.relation(m)
	case *pglogrepl.LogicalDecodingMessage:
		if !m.Transactional {
			// Outside any transaction of the stream (protocol version 1
			// sends transactions whole): the server has decoded everything
			// before it.
			if !r.inTx {
				r.walEnd = max(r.walEnd, m.LSN)
			}
			return nil
		}
		row, ok, err := r.dec.message(m)
		if err != nil {
			return source.Permanent(err)
		}
		if ok {
			return r.add(ctx, row, xld.WALStart)
		}
	}
	return nil
}

// resumeLost is the error of a start inside a transaction the stream
// does not begin with (found: what it begins with instead).
func (r *Reader) resumeLost(found string) error {
	return source.PositionLost(r.resume.String(), "the checkpoint %s points inside the transaction that commits at %s, but the slot's stream from there begins with %s: that transaction is not in this slot's stream (another server, or a recreated slot). The relay will not skip ahead on its own: use this slot's checkpoint", r.resume, r.resume.LSN, found)
}

// add appends a row to the open transaction, handing out a piece when it
// is full.
func (r *Reader) add(ctx context.Context, row source.Row, at pglogrepl.LSN) error {
	if !r.inTx {
		return fmt.Errorf("replication stream at %s: row outside a transaction", at)
	}
	if r.skip > 0 { // delivered before the restart
		r.skip--
		r.index++
		return nil
	}
	r.rows = append(r.rows, row)
	if len(r.rows) < pieceRows {
		return nil
	}
	tx := &source.Tx{ID: r.txID, Start: r.txStart, FirstIndex: r.index, Rows: r.rows, CommitTime: r.commitTime}
	r.index += len(r.rows)
	r.rows = nil
	return r.send(ctx, tx)
}

// quiet hands out a rows-less transaction at the newest WAL end the server
// reported, when quietEnd says that is safe.
func (r *Reader) quiet(ctx context.Context) error {
	if r.resume.Rows > 0 {
		// Started inside a transaction: nothing moves before it begins.
		// The server reports a WAL end past its commit record only once
		// it has sent it: past that, it is not in this stream.
		if r.walEnd > r.resume.LSN {
			return r.resumeLost("nothing")
		}
		return nil
	}
	end, ok := quietEnd(r.inTx, r.lastEnd, pglogrepl.LSN(r.acked.Load()), r.walEnd)
	if !ok {
		return nil
	}
	if err := r.send(ctx, &source.Tx{ID: end.String(), End: Position{LSN: end}}); err != nil {
		return err
	}
	r.lastEnd = end
	return nil
}

// send hands tx to Next. While the relay is busy it keeps reporting status
// on time, so that backpressure does not make the server drop the
// connection for silence.
func (r *Reader) send(ctx context.Context, tx *source.Tx) error {
	for {
		timer := time.NewTimer(time.Until(r.nextStatus))
		select {
		case r.out <- tx:
			timer.Stop()
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			if err := r.sendStatus(); err != nil {
				return err
			}
		case <-r.nudge:
			timer.Stop()
			if err := r.onAck(); err != nil {
				return err
			}
		}
	}
}

// onAck reports a newly acknowledged position at once.
func (r *Reader) onAck() error {
	if _, flush, _ := statusPositions(r.start, pglogrepl.LSN(r.acked.Load()), r.received); flush > r.sentFlush {
		return r.sendStatus()
	}
	return nil
}

// sendStatus reports the positions, every one set explicitly.
func (r *Reader) sendStatus() error {
	write, flush, apply := statusPositions(r.start, pglogrepl.LSN(r.acked.Load()), r.received)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: flush,
		WALApplyPosition: apply,
		ClientTime:       time.Now(),
	})
	if err != nil {
		return fmt.Errorf("send status update to slot %s: %w", r.cfg.Slot, err)
	}
	r.sentFlush = flush
	r.nextStatus = time.Now().Add(r.cfg.StatusInterval)
	return nil
}
