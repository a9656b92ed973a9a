package mysql

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// SQL on the outbox tables themselves, for cleanup and republish
// (source.TableAccess): one plain connection, in UTC.

var _ source.TableAccess = (*Source)(nil)

// OpenTables connects a connection of its own for work on the outbox
// tables; its session time zone is UTC.
func (s *Source) OpenTables(ctx context.Context) (source.TableConn, error) {
	cfg := s.cfg
	cfg.SetDefaults()
	filter, err := schema.NewFilter(cfg.Tables)
	if err != nil {
		return nil, source.Permanent(fmt.Errorf("source.mysql.tables: %w", err))
	}
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	// TIMESTAMP columns and NOW() then read in UTC, as --since/--until
	// are given.
	if _, err := conn.Execute("SET time_zone = '+00:00'"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("set the session time zone: %w", err)
	}
	si, err := detect(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &tableConn{conn: conn, si: si, filter: filter, layouts: map[string]*schema.Table{}}, nil
}

type tableConn struct {
	conn    *client.Conn
	si      serverInfo
	filter  *schema.Filter
	layouts map[string]*schema.Table // by table, for the mapper's per-layout cache
}

func (c *tableConn) Close() error { return c.conn.Close() }

func (c *tableConn) Tables(ctx context.Context) ([]string, error) {
	rep, err := readOutboxTables(c.conn, c.filter)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range rep.tables {
		out = append(out, t.FullName())
	}
	return out, nil
}

// ident quotes "schema.table" or a column for MySQL.
func ident(parts ...string) string {
	q := make([]string, len(parts))
	for i, p := range parts {
		q[i] = "`" + strings.ReplaceAll(p, "`", "``") + "`"
	}
	return strings.Join(q, ".")
}

func tableIdent(name string) string {
	sch, tbl, _ := strings.Cut(name, ".")
	return ident(sch, tbl)
}

func (c *tableConn) CheckTable(ctx context.Context, t source.TableSpec) error {
	sch, tbl, _ := strings.Cut(t.Table, ".")
	r, err := c.conn.Execute(`SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME IN (?, ?)`, sch, tbl, t.Key, t.Time)
	if err != nil {
		return fmt.Errorf("table %s: read its columns: %w", t.Table, err)
	}
	have := map[string]bool{}
	for i := 0; i < r.RowNumber(); i++ {
		s, _ := r.GetString(i, 0)
		have[strings.ToLower(s)] = true
	}
	r.Close()
	if t.Time != "" && !have[strings.ToLower(t.Time)] {
		return source.Permanent(fmt.Errorf("table %s has no column %s: set outbox.cleanup.column to the column holding each row's creation time (or add one: %s TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))", t.Table, t.Time, ident(t.Time)))
	}
	// An index of the key column alone, unique: the primary key or a
	// UNIQUE index. Deleting by a key several rows share could take a
	// row that is not covered yet.
	r, err = c.conn.Execute(`SELECT INDEX_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0
		GROUP BY INDEX_NAME HAVING COUNT(*) = 1 AND MAX(COLUMN_NAME) = ?`, sch, tbl, t.Key)
	if err != nil {
		return fmt.Errorf("table %s: read its indexes: %w", t.Table, err)
	}
	unique := r.RowNumber() > 0
	r.Close()
	if !unique {
		return source.Permanent(fmt.Errorf("table %s: column %s (outbox columns.id) is neither its primary key nor alone in a unique index, so it does not identify one row: make it the primary key (ALTER TABLE %s ADD PRIMARY KEY (%s)) or add a unique index on it", t.Table, t.Key, tableIdent(t.Table), ident(t.Key)))
	}
	return nil
}

func (c *tableConn) Position(ctx context.Context) (string, error) {
	p, err := currentPosition(c.conn, c.si)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

func (c *tableConn) OldKeys(ctx context.Context, t source.TableSpec, age time.Duration, limit int) ([]string, error) {
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s < NOW(6) - INTERVAL ? MICROSECOND ORDER BY %s LIMIT %d",
		ident(t.Key), tableIdent(t.Table), ident(t.Time), ident(t.Key), limit)
	r, err := c.conn.Execute(q, age.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("table %s: select rows older than %s: %w", t.Table, age, err)
	}
	defer r.Close()
	keys := make([]string, 0, r.RowNumber())
	for i := 0; i < r.RowNumber(); i++ {
		s, err := r.GetString(i, 0)
		if err != nil {
			return nil, fmt.Errorf("table %s: read key: %w", t.Table, err)
		}
		keys = append(keys, strings.Clone(s))
	}
	return keys, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func (c *tableConn) Delete(ctx context.Context, t source.TableSpec, keys []string, age time.Duration) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	q := fmt.Sprintf("DELETE FROM %s WHERE %s IN (%s) AND %s < NOW(6) - INTERVAL ? MICROSECOND",
		tableIdent(t.Table), ident(t.Key), placeholders(len(keys)), ident(t.Time))
	args := make([]any, 0, len(keys)+1)
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, age.Microseconds())
	r, err := c.conn.Execute(q, args...)
	if err != nil {
		return 0, fmt.Errorf("table %s: delete %d delivered rows (needs GRANT DELETE ON %s): %w", t.Table, len(keys), t.Table, err)
	}
	n := int64(r.AffectedRows)
	r.Close()
	return n, nil
}

func (c *tableConn) OldestAge(ctx context.Context, t source.TableSpec) (time.Duration, bool, error) {
	r, err := c.conn.Execute(fmt.Sprintf("SELECT TIMESTAMPDIFF(MICROSECOND, MIN(%s), NOW(6)) FROM %s", ident(t.Time), tableIdent(t.Table)))
	if err != nil {
		return 0, false, fmt.Errorf("table %s: oldest row: %w", t.Table, err)
	}
	defer r.Close()
	if null, _ := r.IsNull(0, 0); null {
		return 0, false, nil
	}
	us, err := r.GetInt(0, 0)
	if err != nil {
		return 0, false, err
	}
	return time.Duration(us) * time.Microsecond, true, nil
}

const mysqlTimeFormat = "2006-01-02 15:04:05.999999"

// where is the selection's condition and its arguments.
func selectionWhere(t source.TableSpec, sel source.Selection, after *string) (string, []any) {
	var conds []string
	var args []any
	if sel.FromKey != "" {
		conds, args = append(conds, ident(t.Key)+" >= ?"), append(args, sel.FromKey)
	}
	if sel.ToKey != "" {
		conds, args = append(conds, ident(t.Key)+" <= ?"), append(args, sel.ToKey)
	}
	if !sel.Since.IsZero() {
		conds, args = append(conds, ident(t.Time)+" >= ?"), append(args, sel.Since.UTC().Format(mysqlTimeFormat))
	}
	if !sel.Until.IsZero() {
		conds, args = append(conds, ident(t.Time)+" < ?"), append(args, sel.Until.UTC().Format(mysqlTimeFormat))
	}
	if len(sel.Keys) > 0 {
		conds = append(conds, ident(t.Key)+" IN ("+placeholders(len(sel.Keys))+")")
		for _, k := range sel.Keys {
			args = append(args, k)
		}
	}
	if after != nil {
		conds, args = append(conds, ident(t.Key)+" > ?"), append(args, *after)
	}
	if len(conds) == 0 {
		return "TRUE", nil
	}
	return strings.Join(conds, " AND "), args
}

func (c *tableConn) Rows(ctx context.Context, t source.TableSpec, sel source.Selection, after *string, limit int) ([]source.Row, string, error) {
	cond, args := selectionWhere(t, sel, after)
	q := fmt.Sprintf("SELECT *, %s AS `outboxrelay$key` FROM %s WHERE %s ORDER BY %s LIMIT %d", ident(t.Key), tableIdent(t.Table), cond, ident(t.Key), limit)
	r, err := c.conn.Execute(q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("table %s: read rows: %w", t.Table, err)
	}
	defer r.Close()
	ncol := len(r.Fields) - 1
	cols := make([]string, ncol)
	for i := range cols {
		cols[i] = string(r.Fields[i].Name)
	}
	layout := c.layouts[t.Table]
	if layout == nil || !slices.Equal(layout.Columns, cols) {
		sch, tbl, _ := strings.Cut(t.Table, ".")
		layout = &schema.Table{Schema: sch, Name: tbl, Columns: cols}
		c.layouts[t.Table] = layout
	}
	rows := make([]source.Row, 0, r.RowNumber())
	var last string
	for i := range r.Values {
		vals := make([]any, ncol)
		for j := 0; j < ncol; j++ {
			vals[j] = tableValue(&r.Values[i][j])
		}
		rows = append(rows, source.Row{Table: layout, Values: vals})
		k, _ := r.GetString(i, ncol)
		last = strings.Clone(k)
	}
	return rows, last, nil
}

// tableValue copies a result value (text as string) out of go-mysql's pooled buffers.
func tableValue(fv *gomysql.FieldValue) any {
	switch fv.Type {
	case gomysql.FieldValueTypeNull:
		return nil
	case gomysql.FieldValueTypeString:
		return strings.Clone(string(fv.AsString()))
	}
	return fv.Value()
}

func (c *tableConn) Count(ctx context.Context, t source.TableSpec, sel source.Selection) (source.RangeInfo, error) {
	var info source.RangeInfo
	cond, args := selectionWhere(t, sel, nil)
	tc := "NULL"
	if t.Time != "" {
		tc = ident(t.Time)
	}
	q := fmt.Sprintf("SELECT COUNT(*), CAST(MIN(%[1]s) AS CHAR), CAST(MAX(%[1]s) AS CHAR), CAST(MIN(%[2]s) AS CHAR), CAST(MAX(%[2]s) AS CHAR) FROM %[3]s WHERE %[4]s",
		ident(t.Key), tc, tableIdent(t.Table), cond)
	r, err := c.conn.Execute(q, args...)
	if err != nil {
		return info, fmt.Errorf("table %s: count rows: %w", t.Table, err)
	}
	defer r.Close()
	n, _ := r.GetInt(0, 0)
	info.Rows = n
	if n == 0 {
		return info, nil
	}
	get := func(j int) string { s, _ := r.GetString(0, j); return strings.Clone(s) }
	info.FirstKey, info.LastKey, info.OldestText, info.NewestText = get(1), get(2), get(3), get(4)
	return info, nil
}
