package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-mysql-org/go-mysql/client"
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

// eventsAhead is how many binlog events the syncer may read and decode
// ahead of Next.
const eventsAhead = 512

// Reader streams committed transactions from the binlog.
type Reader struct {
	cfg    Config
	log    zerolog.Logger
	filter *schema.Filter
	si     serverInfo

	syncer   *replication.BinlogSyncer
	streamer *replication.BinlogStreamer

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

	file string          // current binlog file
	gset gomysql.GTIDSet // executed set; nil when not tracked

	// The transaction being read.
	inTx     bool // a GTID or BEGIN event opened it
	began    bool // BEGIN seen: the transaction ends at XID/COMMIT
	txID     string
	index    int
	rows     []source.Row
	mysqlGID *replication.GTIDEvent
	mariaGID *gomysql.MariadbGTID
}

type decision struct {
	schema, table []byte
	include       bool
}

// Open connects, checks the server, and starts streaming right after from
// (a checkpoint's position text), or where cfg.Start says when from is "".
func Open(ctx context.Context, cfg Config, log zerolog.Logger, from string) (*Reader, error) {
	cfg.SetDefaults()
	filter, err := schema.NewFilter(cfg.Tables)
	if err != nil {
		return nil, backoff.Permanent(fmt.Errorf("source.mysql.tables: %w", err))
	}
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	si, err := inspect(conn, &cfg)
	if err != nil {
		return nil, err
	}

	var start Position
	switch {
	case from != "":
		if start, err = ParsePosition(from); err != nil {
			return nil, backoff.Permanent(fmt.Errorf("stored checkpoint: %w", err))
		}
	case cfg.Start == "current":
		if start, err = currentPosition(conn, si); err != nil {
			return nil, err
		}
	case cfg.Start == "earliest":
		logs, err := binaryLogs(conn)
		if err != nil {
			return nil, err
		}
		if len(logs) == 0 {
			return nil, backoff.Permanent(errors.New("the server has no binary logs"))
		}
		// GTIDs are not tracked from here: the set at the start of the
		// oldest log is not known.
		start = Position{File: logs[0].name, Offset: 4}
	default:
		if start, err = ParsePosition(cfg.Start); err != nil {
			return nil, backoff.Permanent(fmt.Errorf("source.mysql.start: %w", err))
		}
	}
	if start.File == "" && !si.gtidEnabled {
		return nil, backoff.Permanent(fmt.Errorf("position %s is a GTID set, but the server has GTIDs off: give a FILE:OFFSET position", start))
	}
	if start.File != "" {
		if err := checkServable(conn, start); err != nil {
			return nil, err
		}
	}

	r := &Reader{
		cfg:       cfg,
		log:       log,
		filter:    filter,
		si:        si,
		decisions: make(map[uint64]decision),
		tables:    make(map[*replication.TableMapEvent]*schema.Table),
		known:     schema.NewCache(),
		file:      start.File,
	}
	// Before streaming: the decode hook reads r.fallback.
	r.startTables = outboxTables(conn, filter, log)
	if si.rowMetadata != "FULL" {
		r.fallback = schema.NewCache()
		for _, t := range r.startTables {
			r.fallback.Layout(t.Schema, t.Name, t.Columns)
		}
		log.Warn().Str("binlog_row_metadata", si.rowMetadata).Int("tables", r.fallback.Len()).
			Msg("the binlog carries no column names: using information_schema (correct only while no DDL on an outbox table lies between the relay's position and now; set binlog_row_metadata=FULL)")
	}
	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	r.syncer = replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:        cfg.ServerID,
		Flavor:          si.flavor,
		Host:            host,
		Port:            uint16(port),
		User:            cfg.User,
		Password:        cfg.Password,
		TLSConfig:       cfg.tlsUsed, // as the metadata connection (tls.go)
		HeartbeatPeriod: cfg.Heartbeat,
		ReadTimeout:     3 * cfg.Heartbeat,
		// Reconnecting is the relay's job: it restarts from the durable
		// checkpoint with backoff and logs once per outage.
		DisableRetrySync:    true,
		RowsEventDecodeFunc: r.decodeRows,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Events decoded ahead of the relay. go-mysql's default (10240)
		// lets a backlog fill hundreds of MiB with decoded rows events
		// (up to 8 KiB each, plus their rows) while Kafka applies
		// backpressure; a few hundred already keep the pipeline busy.
		EventCacheCount: eventsAhead,
	})

	if start.GTID != "" && si.gtidEnabled {
		gset, err := gomysql.ParseGTIDSet(si.flavor, start.GTID)
		if err != nil {
			r.syncer.Close()
			return nil, backoff.Permanent(fmt.Errorf("position %s: bad %s GTID set: %w", start, si.flavor, err))
		}
		r.gset = gset.Clone()
		r.streamer, err = r.syncer.StartSyncGTID(gset)
		if err != nil {
			r.syncer.Close()
			return nil, fmt.Errorf("start binlog stream at GTID set %s: %w", start.GTID, err)
		}
	} else {
		r.streamer, err = r.syncer.StartSync(gomysql.Position{Name: start.File, Pos: start.Offset})
		if err != nil {
			r.syncer.Close()
			return nil, fmt.Errorf("start binlog stream at %s: %w", start, err)
		}
	}
	r.txID = start.String()
	log.Info().Str("position", start.String()).Str("server", si.version).Bool("gtid", r.gset != nil).Msg("streaming binlog")
	return r, nil
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
		r.decisions[e.TableID] = d
	}
	if d.include && len(t.ColumnName) == 0 && r.fallback == nil {
		err := backoff.Permanent(fmt.Errorf("table %s.%s: the binlog carries no column names: set binlog_row_metadata=FULL on the server (MySQL ≥ 8.0.1, MariaDB ≥ 10.5)", t.Schema, t.Table))
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
	for {
		ev, err := r.streamer.GetEvent(ctx)
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
		tx, err := r.handle(ev)
		if err != nil || tx != nil {
			return tx, err
		}
	}
}

// streamError classifies an error from the binlog stream.
func (r *Reader) streamError(err error) error {
	var me *gomysql.MyError
	if errors.As(err, &me) && me.Code == gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		return backoff.Permanent(fmt.Errorf("the server cannot send the binlog from the relay's position (the log may have been purged): %s; see `outboxrelay checkpoint show` and docs/operations.md", me.Message))
	}
	if strings.Contains(err.Error(), "A slave with the same server_uuid/server_id") || (errors.As(err, &me) && me.Code == 1236 && strings.Contains(me.Message, "server_id")) {
		return fmt.Errorf("another replica uses server_id %d: give each relay a unique source.mysql.server_id: %w", r.cfg.ServerID, err)
	}
	return fmt.Errorf("binlog stream: %w", err)
}

func (r *Reader) handle(ev *replication.BinlogEvent) (*source.Tx, error) {
	h := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		r.file = string(e.NextLogName)
	case *replication.GTIDEvent:
		r.begin(h)
		if !bytes.Equal(e.SID, make([]byte, len(e.SID))) { // anonymous GTIDs have a zero SID
			r.mysqlGID = e
		}
	case *replication.MariadbGTIDEvent:
		r.begin(h)
		g := e.GTID
		r.mariaGID = &g
	case *replication.QueryEvent:
		q := string(e.Query)
		switch {
		case q == "BEGIN":
			if !r.inTx {
				r.begin(h)
			}
			r.began = true
		case q == "COMMIT" || !r.began:
			// COMMIT ends a non-transactional engine's transaction; any
			// other statement outside BEGIN (DDL) is a transaction alone.
			if !r.inTx {
				r.begin(h)
			}
			if q != "COMMIT" && r.fallback != nil {
				if err := r.onDDL(q, h); err != nil {
					return nil, err
				}
			}
			return r.end(h)
		}
	case *replication.XIDEvent:
		if !r.inTx {
			r.begin(h)
		}
		return r.end(h)
	case *replication.RowsEvent:
		if e.Rows == nil { // not decoded: not an outbox INSERT
			return nil, nil
		}
		if !r.inTx {
			r.begin(h)
		}
		t, err := r.table(e.Table, h)
		if err != nil {
			return nil, err
		}
		for _, vals := range e.Rows {
			r.rows = append(r.rows, source.Row{Table: t, Values: vals})
		}
		if len(r.rows) >= pieceRows {
			tx := &source.Tx{ID: r.txID, FirstIndex: r.index, Rows: r.rows}
			r.index += len(r.rows)
			r.rows = nil
			return tx, nil
		}
	}
	return nil, nil
}

// begin opens a transaction at the event whose header is h.
func (r *Reader) begin(h *replication.EventHeader) {
	r.inTx, r.began = true, false
	r.index = 0
	r.rows = nil
	r.mysqlGID, r.mariaGID = nil, nil
	r.txID = Position{File: r.file, Offset: h.LogPos - h.EventSize}.String()
}

// end closes the transaction at the event whose header is h.
func (r *Reader) end(h *replication.EventHeader) (*source.Tx, error) {
	if r.gset != nil {
		switch {
		case r.mysqlGID != nil:
			u, err := uuid.FromBytes(r.mysqlGID.SID)
			if err != nil {
				return nil, fmt.Errorf("GTID event at %s:%d: %w", r.file, h.LogPos, err)
			}
			r.gset.(*gomysql.MysqlGTIDSet).AddGTID(u, r.mysqlGID.GNO)
		case r.mariaGID != nil:
			if err := r.gset.(*gomysql.MariadbGTIDSet).AddSet(r.mariaGID); err != nil {
				return nil, fmt.Errorf("GTID event at %s:%d: %w", r.file, h.LogPos, err)
			}
		}
	}
	end := Position{File: r.file, Offset: h.LogPos}
	if r.gset != nil {
		end.GTID = r.gset.String()
	}
	tx := &source.Tx{
		ID:         r.txID,
		FirstIndex: r.index,
		Rows:       r.rows,
		End:        end,
		CommitTime: time.Unix(int64(h.Timestamp), 0),
	}
	r.inTx, r.began = false, false
	r.rows = nil
	r.index = 0
	return tx, nil
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
			return nil, backoff.Permanent(fmt.Errorf("table %s.%s at %s:%d: the binlog carries no column names and information_schema does not show the table to the relay's user: grant it SELECT on the table, or set binlog_row_metadata=FULL", tm.Schema, tm.Table, r.file, h.LogPos))
		case uint64(len(t.Columns)) != tm.ColumnCount:
			return nil, backoff.Permanent(fmt.Errorf("table %s.%s at %s:%d: the row has %d columns but information_schema lists %d (%v): the table changed after this row was written, and without column names in the binlog (binlog_row_metadata=MINIMAL) the relay cannot map rows across that change. Set binlog_row_metadata=FULL; then move the checkpoint past this change with `outboxrelay checkpoint set` or restore the old layout", tm.Schema, tm.Table, r.file, h.LogPos, tm.ColumnCount, len(t.Columns), t.Columns))
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
	if r.cfg.Replay {
		for _, name := range r.fallbackNames() {
			if mentions(q, name) {
				return backoff.Permanent(fmt.Errorf("replay stops at %s:%d: a DDL statement changes outbox table %s there (%.80q), and with binlog_row_metadata=MINIMAL the relay cannot map rows from before it; replay up to this position, or set binlog_row_metadata=FULL", r.file, h.LogPos, name, q))
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
	r.syncer.Close()
	return nil
}

// Source opens Readers with one configuration; it is what the relay
// restarts after a failure.
type Source struct {
	cfg Config
	log zerolog.Logger
}

// NewSource returns a Source; nothing connects until Open.
func NewSource(cfg Config, log zerolog.Logger) *Source {
	return &Source{cfg: cfg, log: log.With().Str("component", "source.mysql").Logger()}
}

// Kind implements relay.Source.
func (s *Source) Kind() string { return Kind }

// Open implements relay.Source.
func (s *Source) Open(ctx context.Context, from string) (source.Reader, error) {
	return Open(ctx, s.cfg, s.log, from)
}

// Tables returns the outbox tables' columns as information_schema showed
// them at open, so that the relay can check the mapping before streaming.
// Tables the relay's user cannot see there are missing: the check then
// happens at their first row.
func (r *Reader) Tables() []*schema.Table { return r.startTables }

// outboxTables reads the columns of the tables the filter includes. The
// relay needs no privilege on them to stream; information_schema shows only
// the tables the user has some privilege on (e.g. SELECT), so this is best
// effort.
func outboxTables(conn *client.Conn, filter *schema.Filter, log zerolog.Logger) []*schema.Table {
	// Exact names (the usual case) are looked up by name: the whole
	// catalog of a large server is slow to read, and this runs at every
	// session start.
	where := "TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
	if filter.ExactOnly() {
		var in []string
		for _, n := range filter.Exact() {
			sch, tbl, _ := strings.Cut(n, ".")
			in = append(in, fmt.Sprintf("(%s, %s)", sqlString(sch), sqlString(tbl)))
		}
		where = "(TABLE_SCHEMA, TABLE_NAME) IN (" + strings.Join(in, ", ") + ")"
	}
	res, err := conn.Execute(`SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS
		WHERE ` + where + ` ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`)
	if err != nil {
		log.Debug().Err(err).Msg("cannot read information_schema.COLUMNS; the mapping is checked at each table's first row")
		return nil
	}
	defer res.Close()
	var out []*schema.Table
	var cur *schema.Table
	for i := 0; i < res.RowNumber(); i++ {
		sch, _ := res.GetString(i, 0)
		tbl, _ := res.GetString(i, 1)
		col, _ := res.GetString(i, 2)
		if !filter.Match(sch, tbl) {
			continue
		}
		if cur == nil || cur.Schema != sch || cur.Name != tbl {
			cur = &schema.Table{Schema: strings.Clone(sch), Name: strings.Clone(tbl)}
			out = append(out, cur)
		}
		cur.Columns = append(cur.Columns, strings.Clone(col))
	}
	return out
}

// sqlString quotes s as a MySQL string literal.
func sqlString(s string) string {
	return "'" + strings.NewReplacer(`\\`, `\\\\`, "'", "''").Replace(s) + "'"
}
