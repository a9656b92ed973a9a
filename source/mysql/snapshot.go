package mysql

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// start: snapshot on MariaDB. START TRANSACTION WITH CONSISTENT SNAPSHOT
// makes the server record, in binlog_snapshot_file and
// binlog_snapshot_position, the binlog position that matches the
// transaction's view exactly (MariaDB's consistent-snapshot extension for
// InnoDB): every transaction before it is in the view, every one after it
// is in the binlog from there. The relay reads the outbox tables in that
// transaction, then streams from that position (with its GTID state).
//
// MySQL has no such status variables. Its documented way, and the one
// taken with snapshot_lock: flush-tables, is a short global read lock
// around the snapshot's start: FLUSH TABLES WITH READ LOCK; START
// TRANSACTION WITH CONSISTENT SNAPSHOT; SHOW BINARY LOG STATUS; UNLOCK
// TABLES. No transaction commits while the lock is held, so the position
// and the GTID set read under it are those of the snapshot. It needs
// RELOAD and stalls every writer meanwhile: the relay takes it only when
// configured to.

// SnapshotLockFlushTables is source.mysql.snapshot_lock's FLUSH TABLES
// WITH READ LOCK.
const SnapshotLockFlushTables = "flush-tables"

// ErrSnapshotMySQL is the refusal of start: snapshot on MySQL without
// snapshot_lock.
var ErrSnapshotMySQL = errors.New("start: snapshot on MySQL needs source.mysql.snapshot_lock: flush-tables: MySQL has no binlog_snapshot_file/binlog_snapshot_position, so the relay must hold FLUSH TABLES WITH READ LOCK (RELOAD privilege; every writer waits meanwhile, for the instant it takes to start the snapshot) to find the snapshot's binlog position. Set it, or use start: current (docs/operations.md: first start with existing rows)")

// snapshotStatements are what a snapshot's connection runs, in order,
// before it reads the tables: MariaDB reads the position with the last
// one. MySQL runs mysqlLocked's instead.
func snapshotStatements(flavor string) ([]string, error) {
	switch flavor {
	case gomysql.MariaDBFlavor:
		return []string{
			// Keys quoted as literals below: backslashes must escape.
			"SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
			"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
			"START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
			"SHOW STATUS LIKE 'binlog_snapshot_%'",
		}, nil
	}
	return nil, source.Permanent(ErrSnapshotMySQL)
}

// mysqlLocked starts the snapshot's transaction on MySQL under FLUSH
// TABLES WITH READ LOCK, reads the binlog position with status (SHOW
// BINARY LOG STATUS, with its GTID set) while the lock holds, and always
// unlocks. Unit-tested against a fake connection only: no MySQL server in
// this project's test environment.
func mysqlLocked(conn execer, status func() (Position, error)) (p Position, err error) {
	for _, q := range []string{
		"SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		// A long-running statement would hold the lock's wait, and every
		// writer queued behind it: give up instead (and retry).
		"SET SESSION lock_wait_timeout = 10",
	} {
		if _, err := conn.Execute(q); err != nil {
			return p, fmt.Errorf("snapshot: %s: %w", q, err)
		}
	}
	if _, err := conn.Execute("FLUSH TABLES WITH READ LOCK"); err != nil {
		return p, fmt.Errorf("snapshot: FLUSH TABLES WITH READ LOCK (needs the RELOAD privilege; snapshot_lock: flush-tables): %w", err)
	}
	defer func() {
		if _, uerr := conn.Execute("UNLOCK TABLES"); uerr != nil && err == nil {
			err = fmt.Errorf("snapshot: UNLOCK TABLES: %w", uerr)
		}
	}()
	if _, err := conn.Execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return p, fmt.Errorf("snapshot: START TRANSACTION WITH CONSISTENT SNAPSHOT: %w", err)
	}
	if p, err = status(); err != nil {
		return p, fmt.Errorf("snapshot: read the binlog position under the lock: %w", err)
	}
	return p, nil
}

// OpenSnapshot takes the snapshot for a relay whose checkpoint is pending
// (snapshot.Pending), hands out the tables' rows, then streams the binlog
// from the snapshot's position.
func OpenSnapshot(ctx context.Context, cfg Config, log zerolog.Logger, pending string) (source.Reader, error) {
	cfg.SetDefaults()
	raw := cfg
	filter, err := schema.NewFilter(cfg.Tables)
	if err != nil {
		return nil, source.Permanent(fmt.Errorf("source.mysql.tables: %w", err))
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
	var stmts []string
	if si.flavor != gomysql.MySQLFlavor || cfg.SnapshotLock == "" {
		if stmts, err = snapshotStatements(si.flavor); err != nil {
			return nil, err
		}
	}
	rep, err := readOutboxTables(conn, filter)
	if err != nil {
		return nil, err
	}
	if err := rep.problem(cfg.checkTable); err != nil {
		return nil, source.Permanent(err)
	}
	keys, err := primaryKeys(conn, rep.tables)
	if err != nil {
		return nil, err
	}

	snap, err := connect(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	var end Position
	if stmts == nil {
		end, err = mysqlLocked(snap, func() (Position, error) { return currentPosition(snap, si) })
	} else {
		end, err = startSnapshot(snap, stmts)
	}
	if err != nil {
		snap.Close()
		return nil, err
	}
	if si.gtidEnabled && si.flavor == gomysql.MariaDBFlavor {
		g, err := binlogGTIDPos(conn, end)
		if err != nil {
			snap.Close()
			return nil, err
		}
		end = end.WithGTID(g)
	}
	names := make([]string, len(rep.tables))
	for i, t := range rep.tables {
		names[i] = t.FullName()
	}
	log.Info().Strs("tables", names).Str("stream_from", end.String()).Msg("snapshot of the outbox tables started (START TRANSACTION WITH CONSISTENT SNAPSHOT)")
	return snapshot.New(snapshot.Options{
		Scanner: &scanner{conn: snap, tables: rep.tables, keys: keys, log: log},
		// Right before the stream's first transaction (whose id is
		// txID(end.File, end.Offset)): consumers ordering by (position,
		// index) must see every snapshot record as older than it.
		ID:      txID(end.File, end.Offset-1),
		Pending: pending,
		End:     end,
		Open: func(ctx context.Context) (source.Reader, error) {
			return Open(ctx, raw, log, end.String())
		},
		Tables: rep.tables,
		Log:    log,
	}), nil
}

// execer runs one statement (a *client.Conn; a fake in unit tests).
type execer interface {
	Execute(q string, args ...any) (*gomysql.Result, error)
}

// startSnapshot opens the snapshot's transaction and returns the binlog
// position that matches it.
func startSnapshot(conn execer, stmts []string) (Position, error) {
	var res *gomysql.Result
	for _, q := range stmts {
		r, err := conn.Execute(q)
		if err != nil {
			return Position{}, fmt.Errorf("snapshot: %s: %w", q, err)
		}
		res = r
	}
	var p Position
	var haveFile, haveOffset bool
	if res != nil && res.Resultset != nil {
		for i := 0; i < res.RowNumber(); i++ {
			name, _ := res.GetString(i, 0)
			val, _ := res.GetString(i, 1)
			switch strings.ToLower(name) {
			case "binlog_snapshot_file":
				p.File, haveFile = strings.Clone(val), val != ""
			case "binlog_snapshot_position":
				n, err := strconv.ParseUint(val, 10, 32)
				if err != nil {
					return Position{}, fmt.Errorf("snapshot: binlog_snapshot_position %q: %w", val, err)
				}
				p.Offset, haveOffset = uint32(n), true
			}
		}
		res.Close()
	}
	if !haveFile || !haveOffset || p.Offset < 4 {
		return Position{}, source.Permanent(fmt.Errorf("snapshot: the server did not report binlog_snapshot_file and binlog_snapshot_position (got %q:%d): is the binlog enabled (log_bin) and are the outbox tables InnoDB?", p.File, p.Offset))
	}
	return p, nil
}

// primaryKeys returns the primary key columns of each table, in key
// order; a table without one is refused (the snapshot pages by it).
func primaryKeys(conn *client.Conn, tables []*schema.Table) ([][]string, error) {
	out := make([][]string, len(tables))
	for i, t := range tables {
		q := fmt.Sprintf(`SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
			WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'
			ORDER BY ORDINAL_POSITION`, sqlString(t.Schema), sqlString(t.Name))
		r, err := conn.Execute(q)
		if err != nil {
			return nil, fmt.Errorf("read the primary key of %s: %w", t.FullName(), err)
		}
		for j := 0; j < r.RowNumber(); j++ {
			c, _ := r.GetString(j, 0)
			out[i] = append(out[i], strings.Clone(c))
		}
		r.Close()
		if len(out[i]) == 0 {
			return nil, source.Permanent(fmt.Errorf("start: snapshot: outbox table %s has no primary key, and the snapshot reads a table in pages by its primary key: add one (ALTER TABLE %s ADD PRIMARY KEY (…)), or use start: current", t.FullName(), quoteTable(t)))
		}
	}
	return out, nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteTable(t *schema.Table) string { return quoteIdent(t.Schema) + "." + quoteIdent(t.Name) }

// scanner reads each table in primary key order, a page at a time (keyset
// pagination inside the snapshot's transaction): memory stays bounded, and
// no statement stays open while the relay waits for Kafka.
type scanner struct {
	conn   *client.Conn
	tables []*schema.Table
	keys   [][]string
	log    zerolog.Logger
}

func (s *scanner) Scan(ctx context.Context, emit func([]source.Row) error) error {
	for i, t := range s.tables {
		n, err := s.table(ctx, t, s.keys[i], emit)
		if err != nil {
			return err
		}
		s.log.Info().Str("table", t.FullName()).Int("rows", n).Msg("snapshot: table read")
	}
	return nil
}

func (s *scanner) table(ctx context.Context, t *schema.Table, key []string, emit func([]source.Row) error) (int, error) {
	cols := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		cols[i] = quoteIdent(c)
	}
	keyAt := make([]int, len(key))
	for i, k := range key {
		keyAt[i] = -1
		for j, c := range t.Columns {
			if strings.EqualFold(c, k) {
				keyAt[i] = j
			}
		}
		if keyAt[i] < 0 {
			return 0, fmt.Errorf("snapshot of %s: primary key column %s is not among its columns", t.FullName(), k)
		}
	}
	order := make([]string, len(key))
	for i, k := range key {
		order[i] = quoteIdent(k)
	}
	base := "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteTable(t)
	tail := " ORDER BY " + strings.Join(order, ", ") + " LIMIT " + strconv.Itoa(snapshot.PieceRows)
	var last []any // the key of the last row read
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		q := base + tail
		if last != nil {
			q = base + " WHERE " + after(key, t, keyAt, last) + tail
		}
		res, err := s.conn.Execute(q)
		if err != nil {
			return total, fmt.Errorf("snapshot of %s: %w", t.FullName(), err)
		}
		n := res.RowNumber()
		piece := make([]source.Row, 0, n)
		for i := 0; i < n; i++ {
			vals := make([]any, len(t.Columns))
			for j := range vals {
				vals[j] = fieldValue(&res.Values[i][j])
			}
			piece = append(piece, source.Row{Table: t, Values: vals})
		}
		res.Close()
		if n > 0 {
			lastRow := piece[n-1].Values
			last = make([]any, len(keyAt))
			for i, j := range keyAt {
				last[i] = lastRow[j]
			}
		}
		total += n
		if err := emit(piece); err != nil {
			return total, err
		}
		if n < snapshot.PieceRows {
			return total, nil
		}
	}
}

// fieldValue copies a text-protocol value out of go-mysql's pooled buffer.
func fieldValue(fv *gomysql.FieldValue) any {
	switch fv.Type {
	case gomysql.FieldValueTypeNull:
		return nil
	case gomysql.FieldValueTypeUnsigned:
		return fv.AsUint64()
	case gomysql.FieldValueTypeSigned:
		return fv.AsInt64()
	case gomysql.FieldValueTypeFloat:
		return fv.AsFloat64()
	}
	return bytes.Clone(fv.AsString())
}

// after is the keyset condition "key > last" in the expanded form
// (a > x OR (a = x AND b > y)) that the range optimizer uses.
func after(key []string, t *schema.Table, keyAt []int, last []any) string {
	var ors []string
	for i := range key {
		var ands []string
		for j := 0; j < i; j++ {
			ands = append(ands, quoteIdent(key[j])+" = "+literal(last[j], t.Types[keyAt[j]]))
		}
		ands = append(ands, quoteIdent(key[i])+" > "+literal(last[i], t.Types[keyAt[i]]))
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

// literal is a key value as SQL: numbers as they are, binary strings in
// hex, other strings quoted (compared in the column's collation).
func literal(v any, typ string) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []byte:
		switch typ {
		case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
			return "X'" + hex.EncodeToString(x) + "'"
		}
		return quoteString(string(x))
	}
	return quoteString(fmt.Sprint(v))
}

// quoteString quotes s as a string literal, the connection's sql_mode
// having backslash escapes (snapshotStatements).
func quoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "''").Replace(s) + "'"
}

// Close ends the snapshot's transaction.
func (s *scanner) Close() error {
	_, _ = s.conn.Execute("ROLLBACK")
	return s.conn.Close()
}
