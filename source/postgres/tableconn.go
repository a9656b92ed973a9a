package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// SQL on the outbox tables themselves, for cleanup and republish
// (source.TableAccess): one plain (non-replication) connection, in UTC.

var _ source.TableAccess = (*Source)(nil)

// OpenTables connects a connection of its own for work on the outbox
// tables; its session time zone is UTC.
func (s *Source) OpenTables(ctx context.Context) (source.TableConn, error) {
	conn, cfg, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SET TIME ZONE 'UTC'"); err != nil {
		closeConn(ctx, conn)
		return nil, explain("set the session time zone", err, cfg)
	}
	c := &tableConn{conn: conn, cfg: cfg, keyTypes: map[string]string{}, layouts: map[string]*schema.Table{}}
	if len(cfg.Tables) > 0 {
		if c.filter, err = schema.NewFilter(cfg.Tables); err != nil {
			closeConn(ctx, conn)
			return nil, source.Permanent(fmt.Errorf("source.postgres.tables: %w", err))
		}
	}
	return c, nil
}

type tableConn struct {
	conn     *pgx.Conn
	cfg      *Config
	filter   *schema.Filter
	keyTypes map[string]string        // table → the key column's type, for casts
	layouts  map[string]*schema.Table // table → layout, for the mapper's per-layout cache
}

func (c *tableConn) Close() error {
	closeConn(context.Background(), c.conn)
	return nil
}

func (c *tableConn) Tables(ctx context.Context) ([]string, error) {
	if c.filter == nil {
		return nil, nil
	}
	var db string
	if err := c.conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return nil, explain("read the database name", err, c.cfg)
	}
	ts, err := resolveTables(ctx, c.conn, c.filter, db)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out, nil
}

func sqlTable(name string) string {
	sch, tbl, _ := strings.Cut(name, ".")
	return pgx.Identifier{sch, tbl}.Sanitize()
}

func sqlCol(name string) string { return pgx.Identifier{name}.Sanitize() }

func (c *tableConn) CheckTable(ctx context.Context, t source.TableSpec) error {
	var hasTime bool
	var keyType *string
	var unique bool
	err := c.conn.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $3 AND attnum > 0 AND NOT attisdropped),
		(SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped),
		EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = $2)`,
		sqlTable(t.Table), t.Key, t.Time).Scan(&hasTime, &keyType, &unique)
	if err != nil {
		return explain("table "+t.Table+": read its columns and indexes", err, c.cfg)
	}
	switch {
	case keyType == nil:
		return source.Permanent(fmt.Errorf("table %s has no column %s (outbox columns.id)", t.Table, t.Key))
	case t.Time != "" && !hasTime:
		return source.Permanent(fmt.Errorf("table %s has no column %s: set outbox.cleanup.column to the column holding each row's creation time (or add one: ALTER TABLE %s ADD COLUMN %s timestamptz NOT NULL DEFAULT now())", t.Table, t.Time, sqlTable(t.Table), sqlCol(t.Time)))
	case !unique:
		return source.Permanent(fmt.Errorf("table %s: column %s (outbox columns.id) is neither its primary key nor alone in a unique index, so it does not identify one row: make it the primary key (ALTER TABLE %s ADD PRIMARY KEY (%s)) or add a unique index on it", t.Table, t.Key, sqlTable(t.Table), sqlCol(t.Key)))
	}
	c.keyTypes[t.Table] = *keyType
	return nil
}

// keyType is the key column's type, read once per table.
func (c *tableConn) keyType(ctx context.Context, t source.TableSpec) (string, error) {
	if kt, ok := c.keyTypes[t.Table]; ok {
		return kt, nil
	}
	var kt *string
	err := c.conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped`, sqlTable(t.Table), t.Key).Scan(&kt)
	if err != nil {
		return "", explain("table "+t.Table+": read the type of column "+t.Key, err, c.cfg)
	}
	if kt == nil {
		return "", source.Permanent(fmt.Errorf("table %s has no column %s (outbox columns.id)", t.Table, t.Key))
	}
	c.keyTypes[t.Table] = *kt
	return *kt, nil
}

// Position is pg_current_wal_insert_lsn(): a transaction is visible only
// after its commit record is inserted into the WAL, even with
// synchronous_commit off (when the written position, pg_current_wal_lsn,
// may still be behind it).
func (c *tableConn) Position(ctx context.Context) (string, error) {
	var lsn string
	if err := c.conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return "", explain("read the current WAL position", err, c.cfg)
	}
	p, err := ParsePosition(lsn)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

func interval(d time.Duration) string { return fmt.Sprintf("%d microseconds", d.Microseconds()) }

func (c *tableConn) OldKeys(ctx context.Context, t source.TableSpec, age time.Duration, limit int) ([]string, error) {
	q := fmt.Sprintf("SELECT %[1]s::text FROM %[2]s WHERE %[3]s < now() - $1::interval ORDER BY %[1]s LIMIT %[4]d", sqlCol(t.Key), sqlTable(t.Table), sqlCol(t.Time), limit)
	rows, err := c.conn.Query(ctx, q, interval(age))
	if err != nil {
		return nil, explain("table "+t.Table+": select rows older than "+age.String(), err, c.cfg)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, explain("table "+t.Table+": select rows older than "+age.String(), err, c.cfg)
	}
	return keys, nil
}

func (c *tableConn) Delete(ctx context.Context, t source.TableSpec, keys []string, age time.Duration) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	kt, err := c.keyType(ctx, t)
	if err != nil {
		return 0, err
	}
	q := fmt.Sprintf("DELETE FROM %s WHERE %s = ANY($1::text[]::%s[]) AND %s < now() - $2::interval", sqlTable(t.Table), sqlCol(t.Key), kt, sqlCol(t.Time))
	tag, err := c.conn.Exec(ctx, q, keys, interval(age))
	if err != nil {
		return 0, explain(fmt.Sprintf("table %s: delete %d delivered rows (needs GRANT DELETE ON %s)", t.Table, len(keys), sqlTable(t.Table)), err, c.cfg)
	}
	return tag.RowsAffected(), nil
}

func (c *tableConn) OldestAge(ctx context.Context, t source.TableSpec) (time.Duration, bool, error) {
	var us *float64
	q := fmt.Sprintf("SELECT extract(epoch FROM now() - min(%s)) * 1000000 FROM %s", sqlCol(t.Time), sqlTable(t.Table))
	if err := c.conn.QueryRow(ctx, q).Scan(&us); err != nil {
		return 0, false, explain("table "+t.Table+": oldest row", err, c.cfg)
	}
	if us == nil {
		return 0, false, nil
	}
	return time.Duration(*us) * time.Microsecond, true, nil
}

// where is the selection's condition and its arguments; keys are cast
// from text to the key column's type kt.
func where(t source.TableSpec, kt string, sel source.Selection, after *string) (string, []any) {
	var conds []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	key := sqlCol(t.Key)
	if sel.FromKey != "" {
		arg(key+" >= $?::text::"+kt, sel.FromKey)
	}
	if sel.ToKey != "" {
		arg(key+" <= $?::text::"+kt, sel.ToKey)
	}
	if !sel.Since.IsZero() {
		arg(sqlCol(t.Time)+" >= $?::timestamptz", sel.Since.UTC())
	}
	if !sel.Until.IsZero() {
		arg(sqlCol(t.Time)+" < $?::timestamptz", sel.Until.UTC())
	}
	if len(sel.Keys) > 0 {
		arg(key+" = ANY($?::text[]::"+kt+"[])", sel.Keys)
	}
	if after != nil {
		arg(key+" > $?::text::"+kt, *after)
	}
	if len(conds) == 0 {
		return "TRUE", nil
	}
	return strings.Join(conds, " AND "), args
}

// Rows reads the rows in text form, as pgoutput sends them (bytea
// decoded from hex as the stream does), so that the mapping sees the
// same values the relay saw.
func (c *tableConn) Rows(ctx context.Context, t source.TableSpec, sel source.Selection, after *string, limit int) ([]source.Row, string, error) {
	kt, err := c.keyType(ctx, t)
	if err != nil {
		return nil, "", err
	}
	cond, args := where(t, kt, sel, after)
	q := fmt.Sprintf("SELECT *, %[1]s::text AS \"outboxrelay$key\" FROM %[2]s WHERE %[3]s ORDER BY %[1]s LIMIT %[4]d", sqlCol(t.Key), sqlTable(t.Table), cond, limit)
	rows, err := c.conn.Query(ctx, q, append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, args...)...)
	if err != nil {
		return nil, "", explain("table "+t.Table+": read rows", err, c.cfg)
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	ncol := len(fds) - 1
	cols := make([]string, ncol)
	for i := range cols {
		cols[i] = fds[i].Name
	}
	layout := c.layouts[t.Table]
	if layout == nil || !slices.Equal(layout.Columns, cols) {
		sch, tbl, _ := strings.Cut(t.Table, ".")
		layout = &schema.Table{Schema: sch, Name: tbl, Columns: cols}
		c.layouts[t.Table] = layout
	}
	var out []source.Row
	var last string
	for rows.Next() {
		raw := rows.RawValues()
		vals := make([]any, ncol)
		for j := 0; j < ncol; j++ {
			if raw[j] == nil {
				continue
			}
			b := slices.Clone(raw[j])
			if fds[j].DataTypeOID == byteaOID {
				if b, err = decodeBytea(b); err != nil {
					return nil, "", fmt.Errorf("table %s, column %s: %w", t.Table, cols[j], err)
				}
			}
			vals[j] = b
		}
		out = append(out, source.Row{Table: layout, Values: vals})
		last = string(raw[ncol])
	}
	if err := rows.Err(); err != nil {
		return nil, "", explain("table "+t.Table+": read rows", err, c.cfg)
	}
	return out, last, nil
}

func (c *tableConn) Count(ctx context.Context, t source.TableSpec, sel source.Selection) (source.RangeInfo, error) {
	var info source.RangeInfo
	kt, err := c.keyType(ctx, t)
	if err != nil {
		return info, err
	}
	cond, args := where(t, kt, sel, nil)
	tc := "NULL::timestamptz"
	if t.Time != "" {
		tc = sqlCol(t.Time)
	}
	// Not min(key): uuid has no min aggregate.
	q := fmt.Sprintf(`SELECT count(*),
		(SELECT %[1]s::text FROM %[3]s WHERE %[4]s ORDER BY %[1]s LIMIT 1),
		(SELECT %[1]s::text FROM %[3]s WHERE %[4]s ORDER BY %[1]s DESC LIMIT 1),
		min(%[2]s)::text, max(%[2]s)::text FROM %[3]s WHERE %[4]s`, sqlCol(t.Key), tc, sqlTable(t.Table), cond)
	var first, last, oldest, newest *string
	if err := c.conn.QueryRow(ctx, q, args...).Scan(&info.Rows, &first, &last, &oldest, &newest); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return info, nil
		}
		return info, explain("table "+t.Table+": count rows", err, c.cfg)
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	info.FirstKey, info.LastKey, info.OldestText, info.NewestText = deref(first), deref(last), deref(oldest), deref(newest)
	return info, nil
}
