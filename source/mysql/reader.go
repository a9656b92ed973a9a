package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// Kind is the source kind stored in checkpoints.
const Kind = "mysql"

// pieceRows bounds the rows of one transaction held in memory: larger
// transactions are handed out in pieces of this many rows.
const pieceRows = 2048

// xaCacheRows bounds the rows of prepared XA transactions kept in memory
// until their XA COMMIT; the others are read again from the binlog then.
const xaCacheRows = 8192

// MariaDB Gtid_log_event flags (log_event.h); go-mysql names only some.
const (
	mariaStandalone = 1
	mariaPreparedXA = 64
)

// Reader streams committed transactions from the binlog.
//
// It reads the binlog's event groups and applies the transaction-boundary
// rules of docs/architecture.md: a group opens at its GTID event (MariaDB:
// unless flagged standalone, like BEGIN) or BEGIN, and ends only at XID,
// COMMIT, ROLLBACK, an XA_PREPARE event, or, for a standalone group (DDL,
// XA COMMIT, XA ROLLBACK), its statement; MySQL's transaction_length, when
// given, says exactly where a group ends. Savepoints end nothing; rows
// rolled back to a savepoint are dropped. An XA transaction publishes at
// its XA COMMIT (or ONE PHASE commit), re-reading its prepared events
// from the binlog when they are no longer in memory. Compressed
// transaction payloads are read as the events they contain.
type Reader struct {
	cfg    Config
	log    zerolog.Logger
	filter *schema.Filter
	si     serverInfo
	events eventSource

	// decideMu guards decisions and decodeErr, used by the decode hook
	// on the syncer's goroutine.
	decideMu  sync.Mutex
	decisions map[uint64]decision
	decodeErr error

	tables map[*replication.TableMapEvent]*schema.Table
	known  *schema.Cache // layouts from the binlog's column names
	// fallback holds the outbox tables' columns from information_schema
	// when the server sends no column names (binlog_row_metadata=MINIMAL);
	// nil otherwise. Reloaded at every DDL.
	fallback *schema.Cache

	startTables []*schema.Table // outbox tables visible in information_schema at open

	file  string       // current binlog file
	gtids *gtidState   // executed set; nil when the server has no GTIDs
	xa    []PreparedXA // prepared, unresolved XA transactions
	// xaRows holds the survivors of small prepared XA transactions until
	// their XA COMMIT, so that the common case needs no second read.
	xaRows  map[string][]source.Row
	xaRowsN int

	g       *group      // the group being read
	skip    int         // survivors of the first group delivered before a restart
	replay  *replayPlan // for the group starting at replay.file:replay.at
	collect *collectXA  // reading a prepared XA transaction again for its XA COMMIT
	// seekFile/seekTo: the start position's GTID set is derived by reading
	// the file from its start (MySQL's Previous_gtids plus the GTIDs up to
	// the offset); nothing is handed out before seekTo.
	seekFile string
	seekTo   uint32
	out      []*source.Tx // handed out by Next, oldest first
}

type decision struct {
	schema, table []byte
	include       bool
}

// collectXA is an XA COMMIT whose prepared events are being read again.
type collectXA struct {
	commit   *group
	xid      string
	prepared PreparedXA
	back     Position // right after the XA COMMIT event: streaming resumes there
}

// decodeRows runs on the syncer's goroutine for every rows event. It decodes
// the rows only of INSERTs into outbox tables; the others cost a header parse.
func (r *Reader) decodeRows(e *replication.RowsEvent, data []byte) error {
	pos, err := e.DecodeHeader(data)
	if err != nil {
		return err
	}
	if e.Type() != replication.EnumRowsEventTypeInsert {
		return nil
	}
	t := e.Table
	r.decideMu.Lock()
	d, ok := r.decisions[e.TableID]
	if !ok || !bytes.Equal(d.schema, t.Schema) || !bytes.Equal(d.table, t.Table) {
		d = decision{
			schema:  bytes.Clone(t.Schema),
			table:   bytes.Clone(t.Table),
			include: r.filter.Match(string(t.Schema), string(t.Table)),
		}
		// Table ids grow with every table opened (temporary tables get a
		// new one each time): keep the map small.
		if len(r.decisions) >= 4096 {
			clear(r.decisions)
		}
		r.decisions[e.TableID] = d
	}
	if d.include && len(t.ColumnName) == 0 && r.fallback == nil {
		err := source.Permanent(fmt.Errorf("table %s.%s: the binlog carries no column names: set binlog_row_metadata=FULL on the server (MySQL ≥ 8.0.1, MariaDB ≥ 10.5)", t.Schema, t.Table))
		r.decodeErr = err
		r.decideMu.Unlock()
		return err
	}
	r.decideMu.Unlock()
	if !d.include {
		return nil
	}
	return e.DecodeData(pos, data)
}

// Next returns the next committed transaction (or piece of one).
func (r *Reader) Next(ctx context.Context) (*source.Tx, error) {
	for len(r.out) == 0 {
		ev, err := r.events.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r.decideMu.Lock()
			derr := r.decodeErr
			r.decideMu.Unlock()
			if derr != nil {
				return nil, derr
			}
			return nil, r.streamError(err)
		}
		if err := r.step(ev); err != nil {
			return nil, err
		}
	}
	tx := r.out[0]
	r.out[0] = nil
	r.out = r.out[1:]
	return tx, nil
}

// streamError classifies an error from the binlog stream.
func (r *Reader) streamError(err error) error {
	var me *gomysql.MyError
	if errors.As(err, &me) && me.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		if strings.Contains(me.Message, "server_id") || strings.Contains(me.Message, "server_uuid") {
			return fmt.Errorf("another replica uses server_id %d: give each relay a unique source.mysql.server_id: %w", r.cfg.ServerID, err)
		}
		return source.PositionLost(r.file, "the server cannot send the binlog from the relay's position (the log may have been purged): %s; see `outboxrelay checkpoint show` and docs/operations.md", me.Message)
	}
	if strings.Contains(err.Error(), "A slave with the same server_uuid/server_id") {
		return fmt.Errorf("another replica uses server_id %d: give each relay a unique source.mysql.server_id: %w", r.cfg.ServerID, err)
	}
	return fmt.Errorf("binlog stream: %w", err)
}

// step handles one event from the stream.
func (r *Reader) step(ev *replication.BinlogEvent) error {
	if r.seekTo == 0 {
		return r.handle(ev)
	}
	h := ev.Header
	if h.LogPos == 0 || preamble(ev.Event) {
		// A file's preamble (format description, the GTID set before the
		// file) starts no transaction: a position at its start means the
		// first event after it.
		if h.LogPos != 0 && r.file == r.seekFile && h.LogPos-h.EventSize == r.seekTo {
			r.seekTo = h.LogPos
		}
		return r.handle(ev)
	}
	at := h.LogPos - h.EventSize
	if r.file == r.seekFile && at < r.seekTo {
		// Before the start: only the GTIDs and prepared XA transactions
		// count; nothing is handed out.
		err := r.handle(ev)
		clear(r.out)
		r.out = r.out[:0]
		return err
	}
	if r.file != r.seekFile || at != r.seekTo {
		return source.Permanent(fmt.Errorf("position %s:%d is not at the start of a binlog event (the next event starts at %s:%d): pick a position from SHOW BINLOG EVENTS", r.seekFile, r.seekTo, r.file, at))
	}
	if r.g != nil {
		return source.Permanent(fmt.Errorf("position %s:%d is inside a transaction (it began at %s): resume after an Xid or COMMIT event", r.seekFile, r.seekTo, r.g.id))
	}
	if r.gtids == nil {
		return source.Permanent(fmt.Errorf("binlog %s has no Previous_gtids event: the GTID set at %s:%d cannot be derived; give the position with its GTID set (FILE:OFFSET@GTIDSET)", r.seekFile, r.seekFile, r.seekTo))
	}
	r.seekTo = 0
	r.log.Info().Str("position", r.here(at).String()).Msg("derived the GTID set of the start position")
	return r.handle(ev)
}

// preamble reports whether e is an event of a binlog file's preamble, or
// one that stands between transactions without being part of any.
func preamble(e replication.Event) bool {
	switch e.(type) {
	case *replication.RotateEvent, *replication.FormatDescriptionEvent, *replication.PreviousGTIDsEvent,
		*replication.MariadbGTIDListEvent, *replication.MariadbBinlogCheckPointEvent, *replication.HeartbeatEvent:
		return true
	}
	return false
}

// handle applies one event to the transaction being read.
func (r *Reader) handle(ev *replication.BinlogEvent) error {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		r.file = string(e.NextLogName)
	case *replication.TransactionPayloadEvent:
		// A compressed transaction (MySQL ≥ 8.0.20): its events, with the
		// payload's positions (go-mysql stamps them), are the transaction.
		for _, inner := range e.Events {
			if err := r.handle(inner); err != nil {
				return err
			}
		}
	case *replication.PreviousGTIDsEvent:
		return r.fileGTIDs(e.GTIDSets)
	case *replication.MariadbGTIDListEvent:
		// MariaDB's equivalent of Previous_gtids.
		parts := make([]string, len(e.GTIDs))
		for i, g := range e.GTIDs {
			parts[i] = g.String()
		}
		return r.fileGTIDs(strings.Join(parts, ","))
	case *replication.GTIDEvent:
		return r.onMySQLGTID(h, e, gomysql.Tag{})
	case *replication.GtidTaggedLogEvent:
		return r.onMySQLGTID(h, &e.GTIDEvent, e.Tag)
	case *replication.MariadbGTIDEvent:
		if err := r.abandonOpen(h); err != nil {
			return err
		}
		g := r.open(h)
		gt := e.GTID
		g.gtid = &gtidAdd{maria: gt}
		g.standalone = e.Flags&mariaStandalone != 0
		g.began = !g.standalone
		g.xa = e.Flags&mariaPreparedXA != 0
	case *replication.QueryEvent:
		return r.onQuery(h, e)
	case *replication.XIDEvent:
		if r.g == nil {
			r.open(h)
		}
		return r.commit(h)
	case *replication.RowsEvent:
		return r.onRows(h, e)
	case *replication.GenericEvent:
		if h.EventType == replication.XA_PREPARE_LOG_EVENT {
			return r.onXAPrepare(h, e.Data)
		}
	}
	return nil
}

// fileGTIDs takes the GTID set before the current file, when the start
// position's set is being derived.
func (r *Reader) fileGTIDs(set string) error {
	if r.gtids != nil || r.seekTo == 0 || !r.si.gtidEnabled {
		return nil
	}
	s, err := newGTIDState(r.si.flavor, set)
	if err != nil {
		return source.Permanent(fmt.Errorf("the GTID set before binlog %s: %w", r.file, err))
	}
	r.gtids = s
	return nil
}

func (r *Reader) onMySQLGTID(h *replication.EventHeader, e *replication.GTIDEvent, tag gomysql.Tag) error {
	if err := r.abandonOpen(h); err != nil {
		return err
	}
	g := r.open(h)
	g.length = e.TransactionLength
	if t := e.ImmediateCommitTime(); !t.IsZero() {
		g.commitTime, g.preciseTime = t, true
	}
	if bytes.Equal(e.SID, make([]byte, len(e.SID))) {
		return nil // anonymous: gtid_mode is off
	}
	u, err := uuid.FromBytes(e.SID)
	if err != nil {
		return fmt.Errorf("GTID event at %s:%d: %w", r.file, h.LogPos, err)
	}
	g.gtid = &gtidAdd{sid: u, tag: tag, gno: e.GNO}
	return nil
}

// abandonOpen handles a group that never ended before the next one began:
// the server crashed while writing it, so it never committed.
func (r *Reader) abandonOpen(h *replication.EventHeader) error {
	g := r.g
	if g == nil {
		return nil
	}
	if g.handed > g.skip {
		return source.Permanent(fmt.Errorf("the transaction at %s (binlog %s) has no end before the next one at offset %d, but %d of its rows were already published: the binlog is damaged; republish or skip its rows and move the checkpoint past it with `outboxrelay checkpoint set`", g.id, r.file, h.LogPos-h.EventSize, g.handed-g.skip))
	}
	r.log.Warn().Str("transaction", g.id).Msg("binlog event group without an end (the server stopped while writing it): it never committed, its rows are dropped")
	r.g = nil
	return nil
}

// here is the position of the event starting at offset at, between groups.
func (r *Reader) here(at uint32) Position {
	p := Position{File: r.file, Offset: at, XA: r.xa}
	if r.gtids != nil {
		p.snap = r.gtids.snapshot()
	}
	return p
}

// open starts a group at the event whose header is h.
func (r *Reader) open(h *replication.EventHeader) *group {
	at := h.LogPos - h.EventSize
	g := &group{
		id:         txID(r.file, at),
		start:      r.here(at),
		file:       r.file,
		at:         at,
		commitTime: time.Unix(int64(h.Timestamp), 0),
	}
	if p := r.replay; p != nil && p.file == g.file && p.at == g.at {
		g.replay, g.skip = p, p.handed
		r.replay = nil
	}
	if r.skip > 0 && r.seekTo == 0 {
		g.skip, r.skip = max(g.skip, r.skip), 0
	}
	if c := r.collect; c != nil {
		// The prepared events belong to the XA COMMIT's transaction.
		g.collect = c
		g.id, g.start, g.commitTime = c.commit.id, c.commit.start, c.commit.commitTime
		if g.replay == nil {
			g.skip = c.commit.skip
		}
	}
	r.g = g
	return g
}

func (r *Reader) onQuery(h *replication.EventHeader, e *replication.QueryEvent) error {
	q := classify(e.Query)
	g := r.g
	switch q.kind {
	case qBegin:
		if g == nil {
			g = r.open(h)
		}
		g.began = true
		return nil
	case qXAStart:
		if g == nil {
			g = r.open(h)
		}
		g.began, g.xa = true, true
		return nil
	}
	if g == nil {
		// A statement outside any group (servers without GTIDs write DDL
		// so): a transaction alone.
		g = r.open(h)
	}
	// With MySQL's transaction_length the end is known exactly (so
	// CREATE TABLE … SELECT, one group with a DDL statement, rows and an
	// XID, is read whole); else a statement ends a group that no BEGIN
	// opened.
	last := g.length > 0 && uint64(h.LogPos) == uint64(g.at)+g.length
	ends := last || g.length == 0 && !g.began
	switch q.kind {
	case qCommit:
		return r.commit(h)
	case qRollback:
		return r.rollback(h)
	case qSavepoint:
		if g.replay == nil {
			g.savepoint(q.name)
		}
		return nil
	case qRollbackTo:
		if g.replay == nil && !g.rollbackTo(q.name) {
			r.log.Warn().Str("transaction", g.id).Str("savepoint", q.name).Msg("ROLLBACK TO an unknown savepoint in the binlog; ignored")
		}
		return nil
	case qRelease:
		g.release(q.name, true)
		return nil
	case qXAEnd:
		return nil
	case qDML:
		if t := r.outboxNamed(string(e.Query)); t != "" {
			return source.Permanent(fmt.Errorf("transaction at %s: the binlog holds a statement-based change to outbox table %s (%.80q), which the relay cannot decode: a session ran with binlog_format other than ROW. Set binlog_format=ROW for every session (SET GLOBAL, and no SET SESSION binlog_format), republish those rows with `outboxrelay republish`, and move the checkpoint past %s:%d with `outboxrelay checkpoint set`", g.id, t, e.Query, r.file, h.LogPos))
		}
	case qOther:
		if r.fallback != nil {
			if err := r.onDDL(string(e.Query), h); err != nil {
				return err
			}
		}
	}
	if !ends {
		return nil
	}
	switch q.kind {
	case qXACommit:
		return r.xaCommit(h, q.name)
	case qXARollback:
		return r.xaRollback(h, q.name)
	}
	return r.commit(h)
}

// outboxNamed returns the outbox table a statement names ("" if none).
func (r *Reader) outboxNamed(q string) string {
	for _, n := range r.filter.Exact() {
		_, tbl, _ := strings.Cut(n, ".")
		if mentions(q, tbl) {
			return n
		}
	}
	return ""
}

func (r *Reader) onRows(h *replication.EventHeader, e *replication.RowsEvent) error {
	if e.Rows == nil { // not decoded: not an outbox INSERT
		return nil
	}
	g := r.g
	if g == nil {
		g = r.open(h)
	}
	t, err := r.table(e.Table, h)
	if err != nil {
		return err
	}
	for _, vals := range e.Rows {
		o := g.seen
		g.seen++
		if g.scanning || g.replay != nil && discarded(g.replay.discard, o) {
			continue
		}
		g.buf = append(g.buf, orow{row: source.Row{Table: t, Values: vals}, ord: o})
	}
	r.flushSafe(g)
	return nil
}

// flushSafe hands out full pieces of rows no savepoint can discard, and
// starts scanning when the rows still at risk outgrow the buffer.
func (r *Reader) flushSafe(g *group) {
	if g.xa && g.collect == nil && g.replay == nil {
		// Prepared, not committed (yet): nothing goes out now; a large
		// one is read again at its XA COMMIT (or, committed ONE PHASE,
		// from its start) instead of being kept.
		if len(g.buf) > pieceRows {
			g.scanning = true
			clear(g.buf)
			g.buf = nil
		}
		return
	}
	for len(g.buf) >= pieceRows {
		n := min(g.safeRows(), pieceRows)
		if n == 0 {
			g.scanning = true
			clear(g.buf)
			g.buf = nil
			r.log.Debug().Str("transaction", g.id).Msg("large transaction with savepoints: reading it to its end first")
			return
		}
		rows, first := g.take(n)
		if len(rows) > 0 {
			r.emit(g, rows, first, nil)
		}
	}
}

func (r *Reader) emit(g *group, rows []source.Row, first int, end source.Position) {
	r.out = append(r.out, &source.Tx{
		ID: g.id, Start: g.start, FirstIndex: first, Rows: rows, End: end, CommitTime: g.commitTime,
	})
}

// finish hands out the rest of g's rows, the last piece carrying end.
func (r *Reader) finish(g *group, end source.Position) {
	for {
		rows, first := g.take(min(len(g.buf), pieceRows))
		if len(g.buf) == 0 {
			r.emit(g, rows, first, end)
			break
		}
		if len(rows) > 0 {
			r.emit(g, rows, first, nil)
		}
	}
	r.g = nil
}

// end closes the current group at the event whose header is h: its GTID
// joins the executed set, and the position after h is returned.
func (r *Reader) end(h *replication.EventHeader, g *group) (Position, error) {
	if !g.preciseTime && g.collect == nil {
		// Binlog timestamps are when a statement began: the ending
		// event's is the commit's (whole seconds).
		g.commitTime = time.Unix(int64(h.Timestamp), 0)
	}
	if g.gtid != nil && r.gtids != nil {
		if err := r.gtids.add(*g.gtid); err != nil {
			return Position{}, err
		}
	}
	return r.here(h.LogPos), nil
}

// commit ends the group as committed.
func (r *Reader) commit(h *replication.EventHeader) error {
	g := r.g
	if g.collect != nil {
		return source.Permanent(fmt.Errorf("XA COMMIT %s: the events at %s:%d, where the relay recorded its XA PREPARE, end with a commit instead: the binlog does not match the relay's position", xidText(g.collect.xid), g.collect.prepared.File, g.collect.prepared.Offset))
	}
	if g.scanning {
		return r.startReplay(g)
	}
	end, err := r.end(h, g)
	if err != nil {
		return err
	}
	r.finish(g, end)
	return nil
}

// rollback ends the group at a ROLLBACK statement: servers write one (in
// ROW format) only in rare cases where the transaction changed a
// non-transactional table; its transactional rows never happened.
func (r *Reader) rollback(h *replication.EventHeader) error {
	g := r.g
	if g.handed > g.skip {
		return source.Permanent(fmt.Errorf("transaction at %s ends with ROLLBACK after %d of its rows were published: the relay published rows the server rolled back. Keep outbox tables transactional (InnoDB) and out of transactions that change non-transactional tables", g.id, g.handed-g.skip))
	}
	g.buf, g.scanning = nil, false
	end, err := r.end(h, g)
	if err != nil {
		return err
	}
	r.finish(g, end)
	return nil
}

// startReplay reads g again from its start now that its end, and so the
// rows its savepoints discarded, are known.
func (r *Reader) startReplay(g *group) error {
	r.replay = &replayPlan{file: g.file, at: g.at, discard: g.discard, handed: max(g.handed, g.skip)}
	r.g = nil
	return r.restream(g.file, g.at)
}

func (r *Reader) onXAPrepare(h *replication.EventHeader, data []byte) error {
	p, err := parseXAPrepare(data)
	if err != nil {
		return source.Permanent(fmt.Errorf("binlog %s at %d: %w", r.file, h.LogPos, err))
	}
	if r.g == nil {
		r.open(h)
	}
	g := r.g
	if p.onePhase {
		return r.commit(h) // XA COMMIT … ONE PHASE (MySQL writes it so)
	}
	if c := g.collect; c != nil {
		if p.xid != c.xid {
			return source.Permanent(fmt.Errorf("XA COMMIT %s: the events at %s:%d, where the relay recorded its XA PREPARE, prepare %s instead: the binlog does not match the relay's position", xidText(c.xid), c.prepared.File, c.prepared.Offset, xidText(p.xid)))
		}
		if g.scanning {
			return r.startReplay(g)
		}
		// Done: the rows belong to the XA COMMIT, which ends here.
		r.xa, _, _ = withoutXA(r.xa, c.xid)
		end := Position{File: c.back.File, Offset: c.back.Offset, XA: r.xa}
		if c.commit.gtid != nil && r.gtids != nil {
			if err := r.gtids.add(*c.commit.gtid); err != nil {
				return err
			}
		}
		if r.gtids != nil {
			end.snap = r.gtids.snapshot()
		}
		r.collect = nil
		r.finish(g, end)
		return r.restream(end.File, end.Offset)
	}
	if !g.scanning && r.seekTo == 0 && r.xaRowsN+len(g.buf) <= xaCacheRows {
		rows := make([]source.Row, len(g.buf))
		for i, o := range g.buf {
			rows[i] = o.row
		}
		if r.xaRows == nil {
			r.xaRows = map[string][]source.Row{}
		}
		r.xaRowsN -= len(r.xaRows[p.xid])
		r.xaRows[p.xid] = rows
		r.xaRowsN += len(rows)
	}
	g.buf, g.scanning = nil, false
	r.xa = withXA(r.xa, PreparedXA{XID: p.xid, File: g.file, Offset: g.at})
	end, err := r.end(h, g)
	if err != nil {
		return err
	}
	r.finish(g, end)
	return nil
}

// xaCommit ends a standalone XA COMMIT group: the prepared transaction's
// rows are published now, from memory or read again from the binlog.
func (r *Reader) xaCommit(h *replication.EventHeader, xid string) error {
	g := r.g
	if rows, ok := r.xaRows[xid]; ok {
		delete(r.xaRows, xid)
		r.xaRowsN -= len(rows)
		r.xa, _, _ = withoutXA(r.xa, xid)
		for i, row := range rows {
			g.buf = append(g.buf, orow{row: row, ord: i})
		}
		end, err := r.end(h, g)
		if err != nil {
			return err
		}
		r.finish(g, end)
		return nil
	}
	_, x, ok := withoutXA(r.xa, xid)
	if !ok {
		r.log.Warn().Str("xid", xidText(xid)).Str("transaction", g.id).
			Msg("XA COMMIT of a transaction prepared before the relay's start position: its rows were not read and are not published; publish them with `outboxrelay republish` if they hold outbox rows (docs/operations.md)")
		end, err := r.end(h, g)
		if err != nil {
			return err
		}
		r.finish(g, end)
		return nil
	}
	r.collect = &collectXA{commit: g, xid: xid, prepared: x, back: Position{File: r.file, Offset: h.LogPos}}
	r.g = nil
	return r.restream(x.File, x.Offset)
}

// xaRollback ends a standalone XA ROLLBACK group: nothing is published.
func (r *Reader) xaRollback(h *replication.EventHeader, xid string) error {
	g := r.g
	r.xa, _, _ = withoutXA(r.xa, xid)
	if rows, ok := r.xaRows[xid]; ok {
		delete(r.xaRows, xid)
		r.xaRowsN -= len(rows)
	}
	end, err := r.end(h, g)
	if err != nil {
		return err
	}
	r.finish(g, end)
	return nil
}

// restream reads the binlog again from file:offset.
func (r *Reader) restream(file string, offset uint32) error {
	if err := r.events.seek(file, offset); err != nil {
		var me *gomysql.MyError
		if errors.As(err, &me) && me.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
			return source.Permanent(fmt.Errorf("read the binlog again at %s:%d (a prepared XA transaction, or a large transaction with savepoints, starts there): %s: keep binlogs until prepared XA transactions are resolved", file, offset, me.Message))
		}
		return fmt.Errorf("read the binlog again at %s:%d: %w", file, offset, err)
	}
	return nil
}

// table returns the *schema.Table for a table map, reusing the previous one
// while the layout is unchanged so that per-table caches downstream hold.
func (r *Reader) table(tm *replication.TableMapEvent, h *replication.EventHeader) (*schema.Table, error) {
	if t, ok := r.tables[tm]; ok {
		return t, nil
	}
	var t *schema.Table
	if len(tm.ColumnName) == 0 && r.fallback != nil {
		t = r.fallback.Get(string(tm.Schema), string(tm.Table))
		switch {
		case t == nil:
			return nil, source.Permanent(fmt.Errorf("table %s.%s at %s:%d: the binlog carries no column names and information_schema does not show the table to the relay's user: grant it SELECT on the table, or set binlog_row_metadata=FULL", tm.Schema, tm.Table, r.file, h.LogPos))
		case uint64(len(t.Columns)) != tm.ColumnCount:
			return nil, source.Permanent(fmt.Errorf("table %s.%s at %s:%d: the row has %d columns but information_schema lists %d (%v): the table changed after this row was written, and without column names in the binlog (binlog_row_metadata=MINIMAL) the relay cannot map rows across that change. Set binlog_row_metadata=FULL; then move the checkpoint past this change with `outboxrelay checkpoint set` or restore the old layout", tm.Schema, tm.Table, r.file, h.LogPos, tm.ColumnCount, len(t.Columns), t.Columns))
		}
	} else {
		cols := make([]string, len(tm.ColumnName))
		for i, c := range tm.ColumnName {
			cols[i] = string(c)
		}
		t = r.known.Layout(string(tm.Schema), string(tm.Table), cols)
	}
	// Table map events are new objects per transaction: keep the map small.
	if len(r.tables) > 4096 {
		clear(r.tables)
	}
	r.tables[tm] = t
	return t, nil
}

// onDDL reloads the outbox tables' columns after a DDL statement, in
// fallback mode. A replay refuses to cross a DDL that names an outbox table:
// information_schema shows only today's layout.
func (r *Reader) onDDL(q string, h *replication.EventHeader) error {
	if r.cfg.replay {
		for _, name := range r.fallbackNames() {
			if mentions(q, name) {
				return source.Permanent(fmt.Errorf("replay stops at %s:%d: a DDL statement changes outbox table %s there (%.80q), and with binlog_row_metadata=MINIMAL the relay cannot map rows from before it; replay up to this position, or set binlog_row_metadata=FULL", r.file, h.LogPos, name, q))
			}
		}
		return nil
	}
	cfg := r.cfg
	conn, err := connect(context.Background(), &cfg)
	if err != nil {
		return fmt.Errorf("reload outbox table columns after DDL at %s:%d: %w", r.file, h.LogPos, err)
	}
	defer conn.Close()
	r.fallback.Forget()
	for _, t := range outboxTables(conn, r.filter, r.log) {
		r.fallback.Layout(t.Schema, t.Name, t.Columns)
	}
	clear(r.tables)
	r.log.Info().Str("position", fmt.Sprintf("%s:%d", r.file, h.LogPos)).Int("tables", r.fallback.Len()).Msg("DDL: reloaded outbox table columns from information_schema")
	return nil
}

func (r *Reader) fallbackNames() []string {
	var names []string
	for _, t := range r.startTables {
		names = append(names, t.Name)
	}
	return names
}

// mentions reports whether the statement names the table (bare or quoted).
func mentions(q, table string) bool {
	lq, lt := strings.ToLower(q), strings.ToLower(table)
	for i := strings.Index(lq, lt); i >= 0; {
		before := i == 0 || !isIdent(lq[i-1])
		end := i + len(lt)
		after := end == len(lq) || !isIdent(lq[end])
		if before && after {
			return true
		}
		j := strings.Index(lq[i+1:], lt)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// Ack is a no-op: a MySQL server keeps no per-replica position.
func (r *Reader) Ack(context.Context, source.Position) error { return nil }

// Close stops the binlog stream.
func (r *Reader) Close() error {
	r.events.close()
	return nil
}

// Tables returns the outbox tables' columns as information_schema showed
// them at open, so that the relay can check the mapping before streaming.
// Tables the relay's user cannot see there are missing: the check then
// happens at their first row.
func (r *Reader) Tables() []*schema.Table { return r.startTables }
