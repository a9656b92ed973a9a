package mysql

import (
	"fmt"
	"slices"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// The outbox tables as information_schema shows them to the relay's user,
// read at every open and by `outboxrelay check` alike, so that both judge
// them the same way.

// tableReport is what the catalog says about the outbox tables.
type tableReport struct {
	tables    []*schema.Table   // visible outbox tables with their columns and types
	engines   map[string]string // schema.table → storage engine
	missing   []string          // exact names in the filter that are not visible
	unmatched bool              // a /regexp/ filter matched no visible table
	user      string            // the relay's user, as GRANT names it
}

// readOutboxTables reads the layouts and engines of the tables the filter
// includes. information_schema shows a table only to users with a
// privilege on it: the relay's user needs one (REFERENCES is enough, and
// reads no data).
func readOutboxTables(conn *client.Conn, filter *schema.Filter) (tableReport, error) {
	rep := tableReport{engines: map[string]string{}}
	if u, err := queryString(conn, "SELECT CURRENT_USER()"); err == nil {
		rep.user = grantUser(u)
	}
	res, err := conn.Execute(`SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.DATA_TYPE), COALESCE(t.ENGINE, '')
		FROM information_schema.COLUMNS c JOIN information_schema.TABLES t
		  ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
		WHERE t.TABLE_TYPE = 'BASE TABLE' AND ` + tableWhere(filter, "c.") + `
		ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION`)
	if err != nil {
		return rep, fmt.Errorf("read the outbox tables from information_schema: %w", err)
	}
	defer res.Close()
	var cur *schema.Table
	for i := 0; i < res.RowNumber(); i++ {
		sch, _ := res.GetString(i, 0)
		tbl, _ := res.GetString(i, 1)
		if !filter.Match(sch, tbl) {
			continue
		}
		col, _ := res.GetString(i, 2)
		typ, _ := res.GetString(i, 3)
		if cur == nil || cur.Schema != sch || cur.Name != tbl {
			cur = &schema.Table{Schema: strings.Clone(sch), Name: strings.Clone(tbl)}
			rep.tables = append(rep.tables, cur)
			eng, _ := res.GetString(i, 4)
			rep.engines[cur.FullName()] = strings.Clone(eng)
		}
		cur.Columns = append(cur.Columns, strings.Clone(col))
		cur.Types = append(cur.Types, strings.Clone(typ))
	}
	seen := map[string]bool{}
	for _, t := range rep.tables {
		seen[t.FullName()] = true
	}
	for _, n := range filter.Exact() {
		if !seen[n] {
			rep.missing = append(rep.missing, n)
		}
	}
	rep.unmatched = !filter.ExactOnly() && len(rep.tables) == len(filter.Exact())-len(rep.missing)
	return rep, nil
}

// problem is the first reason the relay cannot stream these tables, with
// the fix; check is the mapping's check of a table (may be nil).
func (rep tableReport) problem(check source.TableCheck) error {
	if len(rep.missing) > 0 {
		user := rep.user
		if user == "" {
			user = "the relay's user"
		}
		var grants []string
		for _, n := range rep.missing {
			grants = append(grants, fmt.Sprintf("GRANT REFERENCES ON %s TO %s", n, user))
		}
		return fmt.Errorf("source.mysql.tables: no table %s, or %s cannot see it: check the name (schema.table, as in SHOW TABLES), or let the relay read its layout (no data) with %s",
			strings.Join(rep.missing, ", "), user, strings.Join(grants, "; "))
	}
	var bad []string
	for name, eng := range rep.engines {
		if !transactionalEngines[strings.ToUpper(eng)] {
			bad = append(bad, fmt.Sprintf("%s (%s)", name, eng))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("source.mysql.tables: outbox table(s) %s are not transactional: their rows are written when inserted, not when the transaction commits, and never roll back: make them InnoDB (ALTER TABLE … ENGINE=InnoDB)", strings.Join(bad, ", "))
	}
	if check != nil {
		for _, t := range rep.tables {
			if err := check(t); err != nil {
				return fmt.Errorf("outbox mapping: %w", err)
			}
		}
	}
	return nil
}

// transactionalEngines are the storage engines whose rows commit and roll
// back with their transaction.
var transactionalEngines = map[string]bool{"INNODB": true, "ROCKSDB": true, "TOKUDB": true}

// grantUser turns CURRENT_USER()'s user@host into GRANT's 'user'@'host'.
func grantUser(u string) string {
	if i := strings.LastIndexByte(u, '@'); i > 0 {
		return fmt.Sprintf("'%s'@'%s'", u[:i], u[i+1:])
	}
	return u
}

// outboxTables reads the layouts of the visible outbox tables (best
// effort: none when the catalog cannot be read).
func outboxTables(conn *client.Conn, filter *schema.Filter, log zerolog.Logger) []*schema.Table {
	rep, err := readOutboxTables(conn, filter)
	if err != nil {
		log.Debug().Err(err).Msg("cannot read information_schema; the mapping is checked at each table's first row")
	}
	return rep.tables
}

// tableWhere restricts an information_schema query to the tables filter
// may include (columns qualified by prefix). Exact names (the usual case)
// are looked up by name: the whole catalog of a large server is slow to
// read, and this runs at every session start.
func tableWhere(filter *schema.Filter, prefix string) string {
	if !filter.ExactOnly() {
		return prefix + "TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
	}
	var in []string
	for _, n := range filter.Exact() {
		sch, tbl, _ := strings.Cut(n, ".")
		in = append(in, fmt.Sprintf("(%s, %s)", sqlString(sch), sqlString(tbl)))
	}
	return "(" + prefix + "TABLE_SCHEMA, " + prefix + "TABLE_NAME) IN (" + strings.Join(in, ", ") + ")"
}
