package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// serverInfo is what the relay learns about the server before it streams.
type serverInfo struct {
	database string
	version  int // server_version_num
	walEnd   pglogrepl.LSN
}

// qualifiedTable is one resolved outbox table.
type qualifiedTable struct {
	schema, name string
	partitioned  bool
}

func (t qualifiedTable) String() string { return t.schema + "." + t.name }
func (t qualifiedTable) sql() string    { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// slotInfo is a row of pg_replication_slots.
type slotInfo struct {
	plugin, slotType, database, walStatus string
	confirmedFlush                        pglogrepl.LSN
}

// inspect reads the server settings and refuses those the relay cannot work
// with, naming the setting to change.
func inspect(ctx context.Context, conn *pgx.Conn, cfg *Config) (serverInfo, error) {
	var si serverInfo
	var walLevel, walEnd string
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_database(),
		current_setting('server_version_num')::int, pg_current_wal_lsn()::text`).Scan(&walLevel, &si.database, &si.version, &walEnd)
	if err != nil {
		return si, explain("read server settings", err, cfg)
	}
	if walLevel != "logical" {
		return si, source.Permanent(fmt.Errorf("the server's wal_level is %q: logical replication needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart the server", walLevel))
	}
	if si.version < 140000 {
		return si, source.Permanent(fmt.Errorf("the server is PostgreSQL %d.%d: the relay needs PostgreSQL 14 or later (pgoutput messages)", si.version/10000, si.version%10000))
	}
	if l, err := pglogrepl.ParseLSN(walEnd); err == nil {
		si.walEnd = l
	}
	return si, nil
}

// resolveTables lists the tables the include filter names, from the
// catalog. Exact names that do not exist, or a filter that matches nothing,
// are permanent errors: the publication needs real tables.
func resolveTables(ctx context.Context, conn *pgx.Conn, filter *schema.Filter, database string) ([]qualifiedTable, error) {
	if filter == nil {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, c.relkind = 'p'
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []qualifiedTable
	found := map[string]bool{}
	for rows.Next() {
		var t qualifiedTable
		if err := rows.Scan(&t.schema, &t.name, &t.partitioned); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if filter.Match(t.schema, t.name) {
			out = append(out, t)
			found[t.String()] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var missing []string
	for _, n := range filter.Exact() {
		if !found[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return nil, source.Permanent(fmt.Errorf("source.postgres.tables: no table %s in database %s (names are case-sensitive: schema.table as in the catalog)", strings.Join(missing, ", "), database))
	}
	if len(out) == 0 {
		return nil, source.Permanent(fmt.Errorf("source.postgres.tables: no table of database %s matches", database))
	}
	return out, nil
}

// ensurePublication checks that the publication exists, publishes inserts
// and covers every outbox table; with create=auto it creates a missing one.
func ensurePublication(ctx context.Context, conn *pgx.Conn, cfg *Config, tables []qualifiedTable) error {
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	var pubInsert, viaRoot bool
	err := conn.QueryRow(ctx, `SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&pubInsert, &viaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		create := createPublicationSQL(pub, tables)
		if cfg.Create == CreateNever {
			return source.Permanent(fmt.Errorf("publication %q does not exist and source.postgres.create is never: create it with\n  %s;", cfg.Publication, create))
		}
		if _, err := conn.Exec(ctx, create); err != nil {
			return explain(fmt.Sprintf("create publication (%s)", create), err, cfg)
		}
		return nil
	}
	if err != nil {
		return explain("read publication "+cfg.Publication, err, cfg)
	}
	if !pubInsert {
		return source.Permanent(fmt.Errorf("publication %q does not publish inserts: run ALTER PUBLICATION %s SET (publish = 'insert')", cfg.Publication, pub))
	}
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1`, cfg.Publication)
	if err != nil {
		return fmt.Errorf("read tables of publication %s: %w", cfg.Publication, err)
	}
	covered := map[string]bool{}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return fmt.Errorf("read tables of publication %s: %w", cfg.Publication, err)
		}
		covered[s+"."+t] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read tables of publication %s: %w", cfg.Publication, err)
	}
	var missing []string
	var missingSQL []string
	partitioned := false
	for _, t := range tables {
		partitioned = partitioned || t.partitioned
		if !covered[t.String()] {
			missing = append(missing, t.String())
			missingSQL = append(missingSQL, t.sql())
		}
	}
	if len(missing) > 0 {
		return source.Permanent(fmt.Errorf("publication %q does not cover outbox table(s) %s: run\n  ALTER PUBLICATION %s ADD TABLE %s;", cfg.Publication, strings.Join(missing, ", "), pub, strings.Join(missingSQL, ", ")))
	}
	if partitioned && !viaRoot {
		return source.Permanent(fmt.Errorf("publication %q publishes partitions under their own names, so inserts into a partitioned outbox table would not match source.postgres.tables: run ALTER PUBLICATION %s SET (publish_via_partition_root = true)", cfg.Publication, pub))
	}
	return nil
}

func createPublicationSQL(pub string, tables []qualifiedTable) string {
	var b strings.Builder
	b.WriteString("CREATE PUBLICATION " + pub)
	partitioned := false
	for i, t := range tables {
		if i == 0 {
			b.WriteString(" FOR TABLE ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(t.sql())
		partitioned = partitioned || t.partitioned
	}
	b.WriteString(" WITH (publish = 'insert'")
	if partitioned {
		b.WriteString(", publish_via_partition_root = true")
	}
	b.WriteString(")")
	return b.String()
}

// readSlot returns the slot, or ok=false when it does not exist.
func readSlot(ctx context.Context, conn *pgx.Conn, cfg *Config) (si slotInfo, ok bool, err error) {
	var confirmed *string
	var database *string
	err = conn.QueryRow(ctx, `SELECT coalesce(plugin, ''), slot_type, database, confirmed_flush_lsn::text, coalesce(wal_status, '')
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&si.plugin, &si.slotType, &database, &confirmed, &si.walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return si, false, nil
	}
	if err != nil {
		return si, false, explain("read replication slot "+cfg.Slot, err, cfg)
	}
	if database != nil {
		si.database = *database
	}
	if confirmed != nil {
		if si.confirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return si, false, fmt.Errorf("slot %s: confirmed_flush_lsn %q: %w", cfg.Slot, *confirmed, err)
		}
	}
	return si, true, nil
}

// takeOverSlot disconnects the WAL sender of an older instance of the
// relay that still streams the slot: it is fenced (it can commit nothing
// more, so it confirms nothing more), and the server would otherwise keep
// the slot busy until its wal_sender_timeout. The relay's user may
// terminate its own backends.
func takeOverSlot(ctx context.Context, conn *pgx.Conn, cfg *Config, log zerolog.Logger) error {
	for deadline := time.Now().Add(15 * time.Second); ; {
		var pid *int32
		if err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&pid); err != nil {
			return explain("read replication slot "+cfg.Slot, err, cfg)
		}
		if pid == nil {
			return nil
		}
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, *pid).Scan(&ok); err != nil {
			return explain(fmt.Sprintf("disconnect the older instance (pid %d) streaming replication slot %s", *pid, cfg.Slot), err, cfg)
		}
		log.Warn().Str("slot", cfg.Slot).Int32("pid", *pid).Bool("terminated", ok).
			Msg("an older, fenced instance still streamed the slot: disconnected it")
		if time.Now().After(deadline) {
			return fmt.Errorf("replication slot %s is still held by pid %d after terminating it", cfg.Slot, *pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkSlot refuses a slot the relay cannot stream from.
func checkSlot(s slotInfo, cfg *Config, database string) error {
	if s.slotType != "logical" || s.plugin != "pgoutput" {
		return source.Permanent(fmt.Errorf("replication slot %q is a %s slot with plugin %q: the relay needs a logical slot with plugin pgoutput; choose another source.postgres.slot", cfg.Slot, s.slotType, s.plugin))
	}
	if s.database != database {
		return source.Permanent(fmt.Errorf("replication slot %q belongs to database %q, not %q: choose another source.postgres.slot", cfg.Slot, s.database, database))
	}
	if s.walStatus == "lost" {
		return source.PositionLost(s.confirmedFlush.String(), "replication slot %q has lost WAL it still needed (wal_status = lost, see max_slot_wal_keep_size): transactions after its confirmed_flush_lsn %s may be gone and the slot can no longer stream. Recover the events from the database if you can, then drop the slot (SELECT pg_drop_replication_slot('%s')) and the checkpoint to start afresh; the relay will not skip ahead on its own", cfg.Slot, s.confirmedFlush, cfg.Slot)
	}
	return nil
}

// startPosition applies the start rules: with a checkpoint, the slot must
// not have confirmed anything beyond it (that WAL is gone for this slot);
// without one, the slot's own confirmed_flush_lsn.
func startPosition(from string, s slotInfo, cfg *Config, si serverInfo) (Position, error) {
	if from == "" {
		return Position{LSN: s.confirmedFlush}, nil
	}
	p, err := ParsePosition(from)
	if err != nil {
		return Position{}, source.Permanent(fmt.Errorf("stored checkpoint: %w", err))
	}
	if s.confirmedFlush > p.LSN {
		return Position{}, source.PositionLost(from, "the checkpoint %s is behind replication slot %q's confirmed_flush_lsn %s: the slot no longer sends transactions that committed before its confirmed_flush_lsn, so those committed in between can no longer be read from it (was the slot used by another relay or client, or the checkpoint restored from an older copy?). The relay will not skip ahead on its own: use the checkpoint that belongs to this slot, or, if losing the transactions between %s and %s is acceptable, move the position to the slot: outboxrelay checkpoint set --to %s", p, cfg.Slot, s.confirmedFlush, p, s.confirmedFlush, s.confirmedFlush)
	}
	if si.walEnd != 0 && p.LSN > si.walEnd {
		return Position{}, source.PositionLost(from, "the checkpoint %s is beyond the server's current WAL position %s: it does not belong to this server; point the relay at this server's checkpoint", p, si.walEnd)
	}
	return p, nil
}

// tableColumns reads the columns of each outbox table, in order, with
// their types.
func tableColumns(ctx context.Context, conn *pgx.Conn, tables []qualifiedTable) ([]*schema.Table, error) {
	out := make([]*schema.Table, 0, len(tables))
	for _, t := range tables {
		rows, err := conn.Query(ctx, `SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, t.sql())
		if err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", t, err)
		}
		tbl := &schema.Table{Schema: t.schema, Name: t.name}
		var col, typ string
		_, err = pgx.ForEachRow(rows, []any{&col, &typ}, func() error {
			tbl.Columns = append(tbl.Columns, col)
			tbl.Types = append(tbl.Types, typ)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", t, err)
		}
		out = append(out, tbl)
	}
	return out, nil
}

// checkLayouts applies the relay's check (the outbox mapping) to each
// table.
func checkLayouts(tables []*schema.Table, check source.TableCheck) error {
	if check == nil {
		return nil
	}
	for _, t := range tables {
		if err := check(t); err != nil {
			return fmt.Errorf("outbox mapping: %w", err)
		}
	}
	return nil
}
