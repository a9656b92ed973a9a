// Package snapshot hands the rows that already exist in the outbox tables
// to the relay as pieces of one source.Tx, then the source's stream from
// exactly where the snapshot was taken (source.*.start: snapshot).
//
// It owns the order of that hand-over and the "snapshot pending" position;
// it must not know any database: each source reads its tables inside its
// own consistent snapshot (a Scanner) and opens its own stream.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// Pending is the position a relay stores before its snapshot is complete.
// Every point inside the snapshot is this position too: a relay that
// restarts from it takes the snapshot again from the beginning (sending
// the rows delivered before the restart once more). A source may append
// "@" and what identifies the attempt ("snapshot@0/1A2B3C4": the Postgres
// slot it created).
const Pending = "snapshot"

// IsPending reports whether pos is a snapshot-pending position.
func IsPending(pos string) bool {
	return pos == Pending || strings.HasPrefix(pos, Pending+"@")
}

// Attempt returns what a pending position names after "@" ("" if none).
func Attempt(pos string) string {
	_, a, _ := strings.Cut(pos, "@")
	return a
}

// PendingNote is what position tools (checkpoint show, check) say of a
// pending checkpoint.
const PendingNote = "the checkpoint says the initial snapshot (start: snapshot) is not complete: the next start takes it again from the beginning, then streams from where it was taken"

// NotSettable is Source.Check's refusal of a pending position: it is not
// a place in the log, and moving a checkpoint to it would take a snapshot
// again over a slot or binlog position that has delivered.
func NotSettable(pos string) error {
	return fmt.Errorf("%q is the position of a pending initial snapshot, not a place in the log: it cannot be set or imported. To take a snapshot again, stop the relay, delete its checkpoint (Postgres: and drop its slot), and start it with start: snapshot", pos)
}

// marker is the pending position as a source.TxStart: every point inside
// the snapshot is the snapshot's start, never a resumable row count.
type marker string

func (m marker) String() string            { return string(m) }
func (m marker) After(int) source.Position { return m }

var _ source.TxStart = marker("")

// Marker returns the pending position text as a source.TxStart.
func Marker(text string) source.TxStart { return marker(text) }

// PieceRows bounds the rows of one piece of the snapshot held in memory
// (and the page a Scanner reads at once).
const PieceRows = 2048

// Scanner reads every outbox table inside one consistent snapshot of the
// database.
type Scanner interface {
	// Scan calls emit with the rows of each table, in order, in pieces of
	// at most PieceRows rows; emit blocks while the relay is busy. It
	// returns emit's error, or ctx.Err() when ctx ends.
	Scan(ctx context.Context, emit func(rows []source.Row) error) error
	// Close ends the snapshot's transaction and its connections.
	Close() error
}

// Options of a snapshot Reader.
type Options struct {
	// Scanner reads the tables.
	Scanner Scanner
	// ID is the Tx.ID of the snapshot's pieces: a position right before
	// the stream's start, so that records of the snapshot order before
	// every streamed transaction — even one whose id is the start itself —
	// for consumers that compare (position, index).
	ID string
	// Pending is the checkpoint text while the snapshot is not complete
	// (Pending, or Pending+"@"+attempt).
	Pending string
	// End is where the stream starts: the snapshot's last piece ends
	// there, so the checkpoint moves past Pending only once every row of
	// the snapshot is acknowledged.
	End source.Position
	// Open opens the stream right after End, once the snapshot is read.
	Open func(ctx context.Context) (source.Reader, error)
	// Tables are the outbox tables' layouts (Reader.Tables).
	Tables []*schema.Table
	// Log gets the progress.
	Log zerolog.Logger
	// Progress is how often progress is logged. Default 10s.
	Progress time.Duration
}

// Reader hands out the snapshot, then the stream.
type Reader struct {
	o      Options
	out    chan *source.Tx
	done   chan struct{}
	err    error // why the scan ended; read after done
	cancel context.CancelFunc
	closed sync.Once
	once   sync.Once // closes the Scanner

	mu     sync.Mutex    // guards stream: Ack comes from another goroutine
	stream source.Reader // once the snapshot is handed out
	ended  bool          // the last piece (with End) was handed out (Next only)
}

// New starts reading the snapshot in the background.
func New(o Options) *Reader {
	if o.Progress <= 0 {
		o.Progress = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reader{o: o, out: make(chan *source.Tx), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(r.done)
		r.err = r.scan(ctx)
		r.closeScanner()
	}()
	return r
}

// closeScanner ends the snapshot's transaction, once.
func (r *Reader) closeScanner() {
	r.once.Do(func() {
		if err := r.o.Scanner.Close(); err != nil {
			r.o.Log.Debug().Err(err).Msg("end the snapshot's transaction")
		}
	})
}

// scan runs the Scanner and hands out its pieces, holding one back so
// that the last can carry End.
func (r *Reader) scan(ctx context.Context) error {
	var held *source.Tx
	index, rows := 0, 0
	perTable := map[string]int{}
	began := time.Now()
	nextLog := began.Add(r.o.Progress)
	send := func(tx *source.Tx) error {
		select {
		case r.out <- tx:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	emit := func(piece []source.Row) error {
		if len(piece) == 0 {
			return nil
		}
		for _, row := range piece {
			perTable[row.Table.FullName()]++
		}
		rows += len(piece)
		tx := &source.Tx{ID: r.o.ID, Start: marker(r.o.Pending), FirstIndex: index, Rows: piece, Snapshot: true}
		index += len(piece)
		if held != nil {
			if err := send(held); err != nil {
				return err
			}
		}
		held = tx
		if now := time.Now(); !now.Before(nextLog) {
			nextLog = now.Add(r.o.Progress)
			r.o.Log.Info().Int("rows", rows).Interface("rows_per_table", perTable).
				Str("elapsed", now.Sub(began).Round(time.Millisecond).String()).Msg("snapshot in progress")
		}
		return nil
	}
	if err := r.o.Scanner.Scan(ctx, emit); err != nil {
		return err
	}
	// The snapshot's transaction is no longer needed: the stream holds
	// everything after End.
	r.closeScanner()
	last := held
	if last == nil { // empty tables: the checkpoint still moves to End
		last = &source.Tx{ID: r.o.ID, Snapshot: true}
	}
	last.End = r.o.End
	r.o.Log.Info().Int("rows", rows).Interface("rows_per_table", perTable).Str("stream_from", r.o.End.String()).
		Str("elapsed", time.Since(began).Round(time.Millisecond).String()).Msg("snapshot read; the stream continues from its position")
	return send(last)
}

// Next hands out the snapshot's pieces, then the stream's transactions.
func (r *Reader) Next(ctx context.Context) (*source.Tx, error) {
	if s := r.streamReader(); s != nil {
		return s.Next(ctx)
	}
	if !r.ended {
		select {
		case tx := <-r.out:
			r.ended = tx.End != nil
			return tx, nil
		case <-r.done:
			if r.err == nil {
				return nil, errors.New("snapshot: the scan ended without its last piece")
			}
			return nil, fmt.Errorf("snapshot: %w", r.err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	<-r.done
	s, err := r.o.Open(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.stream = s
	r.mu.Unlock()
	return s.Next(ctx)
}

// Ack passes positions of the stream on; pending positions (inside the
// snapshot) and End itself release nothing before the stream opens.
func (r *Reader) Ack(ctx context.Context, pos source.Position) error {
	if _, ok := pos.(marker); ok {
		return nil
	}
	if s := r.streamReader(); s != nil {
		return s.Ack(ctx, pos)
	}
	return nil
}

// streamReader is the stream once open (nil before).
func (r *Reader) streamReader() source.Reader {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stream
}

// Tables implements source.Reader.
func (r *Reader) Tables() []*schema.Table { return r.o.Tables }

// Close stops the scan (or the stream).
func (r *Reader) Close() error {
	var errs []error
	r.closed.Do(func() {
		r.cancel()
		<-r.done
		if s := r.streamReader(); s != nil {
			errs = append(errs, s.Close())
		}
	})
	return errors.Join(errs...)
}
