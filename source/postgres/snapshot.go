package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// start: snapshot. The relay creates its slot with an exported snapshot
// (CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT); a normal connection imports
// it (SET TRANSACTION SNAPSHOT) before the replication connection runs
// anything else, and reads the outbox tables in it. The snapshot sees
// exactly the transactions that committed before the slot's consistent
// point, and the slot streams exactly those that commit after it: no gap,
// no duplicate.

// OpenSnapshot takes the snapshot for a relay whose checkpoint is pending
// (snapshot.Pending): it drops the slot a failed earlier attempt left
// (the checkpoint still says pending, so nothing streamed from it was
// ever acknowledged), creates it again with a snapshot, hands out the
// tables' rows, then streams from the slot's consistent point.
func OpenSnapshot(ctx context.Context, cfg Config, log zerolog.Logger, pending string) (source.Reader, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, source.Permanent(fmt.Errorf("source.postgres: %w", err))
	}
	raw := cfg
	cfg, err := cfg.withSecrets()
	if err != nil {
		return nil, err
	}
	r, err := openSnapshot(ctx, cfg, raw, log, pending)
	return r, hidePassword(err, cfg.DSN)
}

func openSnapshot(ctx context.Context, cfg, raw Config, log zerolog.Logger, pending string) (source.Reader, error) {
	if cfg.Create != CreateAuto {
		return nil, source.Permanent(fmt.Errorf("the checkpoint says a snapshot is pending (%s), but source.postgres.create is never: the relay must create replication slot %s itself, with the snapshot it exports; set create: auto, or delete the checkpoint and use start: current", pending, cfg.Slot))
	}
	o, err := prepare(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer o.close(ctx)
	if len(o.tables) == 0 {
		return nil, source.Permanent(fmt.Errorf("start: snapshot: source.postgres.tables lists no table to read"))
	}
	if err := dropFailedAttempt(ctx, o, &cfg, log); err != nil {
		return nil, err
	}
	keys, err := primaryKeys(ctx, o.conn, o.tables)
	if err != nil {
		return nil, err
	}

	repl, err := connectReplication(ctx, &cfg, o.pgxCfg)
	if err != nil {
		return nil, err
	}
	closeRepl := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = repl.Close(cctx)
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		closeRepl()
		return nil, explain("create replication slot "+cfg.Slot+" with an exported snapshot", err, &cfg)
	}
	consistent, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		closeRepl()
		return nil, fmt.Errorf("create replication slot %s: consistent point %q: %w", cfg.Slot, res.ConsistentPoint, err)
	}
	log.Info().Str("slot", cfg.Slot).Str("position", consistent.String()).Str("snapshot", res.SnapshotName).
		Msg("created replication slot with an exported snapshot")

	// The exported snapshot lives only until the replication connection
	// runs its next command: import it first, then let that connection go.
	snap, err := importSnapshot(ctx, &cfg, o.pgxCfg, res.SnapshotName)
	closeRepl()
	if err != nil {
		return nil, err
	}
	end := Position{LSN: consistent}
	sc := &scanner{conn: snap, tables: o.tables, layouts: o.layouts, keys: keys, log: log}
	names := make([]string, len(o.tables))
	for i, t := range o.tables {
		names[i] = t.String()
	}
	log.Info().Strs("tables", names).Str("stream_from", end.String()).Msg("snapshot of the outbox tables started")
	return snapshot.New(snapshot.Options{
		Scanner: sc,
		// Right before the consistent point, where the first streamed
		// transaction's id (its commit record) can be: consumers ordering
		// by (position, index) must see every snapshot record as older.
		ID:      Position{LSN: consistent - 1}.String(),
		Pending: pending,
		End:     end,
		Open: func(ctx context.Context) (source.Reader, error) {
			return Open(ctx, raw, log, end.String())
		},
		Tables: o.layouts,
		Log:    log,
	}), nil
}

// dropFailedAttempt drops the slot an earlier snapshot attempt created.
// The relay stored the pending checkpoint only when it found no slot (or
// when it dropped one with nothing confirmed), and any position it
// acknowledged would have replaced that checkpoint: a slot now is its
// own, and holds nothing that was delivered from it.
func dropFailedAttempt(ctx context.Context, o *opened, cfg *Config, log zerolog.Logger) error {
	slot, exists, err := readSlot(ctx, o.conn, cfg)
	if err != nil || !exists {
		return err
	}
	if err := checkSlot(slot, cfg, o.si.database); err != nil {
		return err
	}
	if cfg.takeOver {
		if err := takeOverSlot(ctx, o.conn, cfg, log); err != nil {
			return err
		}
	}
	var pid *int32
	if err := o.conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&pid); err != nil {
		return explain("read replication slot "+cfg.Slot, err, cfg)
	}
	if pid != nil {
		return fmt.Errorf("replication slot %s is in use by pid %d while the relay's snapshot is pending: is another instance of the relay running? (it is retried)", cfg.Slot, *pid)
	}
	if _, err := o.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, cfg.Slot); err != nil {
		return explain("drop replication slot "+cfg.Slot+" of the failed snapshot attempt", err, cfg)
	}
	log.Warn().Str("slot", cfg.Slot).Str("confirmed_flush_lsn", slot.confirmedFlush.String()).
		Msg("the snapshot did not complete before the relay stopped: dropped the slot it created and taking the snapshot again (rows sent before are sent again)")
	return nil
}

// primaryKeys returns each table's primary key columns, in key order
// (none: the table has no primary key).
func primaryKeys(ctx context.Context, conn *pgx.Conn, tables []qualifiedTable) ([][]string, error) {
	out := make([][]string, len(tables))
	for i, t := range tables {
		rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
			WHERE i.indrelid = $1::regclass AND i.indisprimary
			ORDER BY array_position(i.indkey::int2[], a.attnum)`, t.sql())
		if err != nil {
			return nil, fmt.Errorf("read the primary key of %s: %w", t, err)
		}
		if out[i], err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("read the primary key of %s: %w", t, err)
		}
	}
	return out, nil
}

// importSnapshot opens the connection that reads the tables, inside the
// exported snapshot.
func importSnapshot(ctx context.Context, cfg *Config, pgxCfg *pgx.ConnConfig, name string) (*pgx.Conn, error) {
	c := pgxCfg.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	// Values as the walsender formats them: the same bytes either way.
	c.RuntimeParams["bytea_output"] = "hex"
	if c.RuntimeParams["application_name"] == "" {
		c.RuntimeParams["application_name"] = "outboxrelay-snapshot"
	}
	conn, err := pgx.ConnectConfig(ctx, c)
	if err != nil {
		return nil, explain("connect for the snapshot", err, cfg)
	}
	for _, q := range []string{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "SET TRANSACTION SNAPSHOT " + quoteLiteral(name)} {
		if _, err := conn.Exec(ctx, q); err != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, explain("snapshot: "+q, err, cfg)
		}
	}
	return conn, nil
}

// scanner reads the outbox tables through a cursor each, in primary key
// order, a page at a time: memory stays bounded whatever their size.
type scanner struct {
	conn    *pgx.Conn
	tables  []qualifiedTable
	layouts []*schema.Table
	keys    [][]string
	log     zerolog.Logger
}

const cursorName = "outboxrelay_snapshot"

func (s *scanner) Scan(ctx context.Context, emit func([]source.Row) error) error {
	for i, t := range s.tables {
		n, err := s.table(ctx, t, s.layouts[i], s.keys[i], emit)
		if err != nil {
			return err
		}
		s.log.Info().Str("table", t.String()).Int("rows", n).Msg("snapshot: table read")
	}
	return nil
}

func (s *scanner) table(ctx context.Context, t qualifiedTable, layout *schema.Table, key []string, emit func([]source.Row) error) (int, error) {
	cols := make([]string, len(layout.Columns))
	bytea := make([]bool, len(layout.Columns))
	for i, c := range layout.Columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
		bytea[i] = layout.Types[i] == "bytea"
	}
	q := "DECLARE " + cursorName + " NO SCROLL CURSOR FOR SELECT " + strings.Join(cols, ", ") + " FROM " + t.sql()
	if len(key) > 0 {
		order := make([]string, len(key))
		for i, k := range key {
			order[i] = pgx.Identifier{k}.Sanitize()
		}
		q += " ORDER BY " + strings.Join(order, ", ")
	} else {
		s.log.Warn().Str("table", t.String()).Msg("snapshot: the table has no primary key: its rows are read in storage order, which may differ from insertion order (per-key order of the snapshot is then not guaranteed)")
	}
	if _, err := s.conn.Exec(ctx, q); err != nil {
		return 0, fmt.Errorf("snapshot of %s: %s: %w", t, q, err)
	}
	fetch := fmt.Sprintf("FETCH FORWARD %d FROM %s", snapshot.PieceRows, cursorName)
	total := 0
	for {
		// The simple protocol: text values, as pgoutput sends them.
		res, err := s.conn.PgConn().Exec(ctx, fetch).ReadAll()
		if err != nil {
			return total, fmt.Errorf("snapshot of %s: %w", t, err)
		}
		if len(res) != 1 {
			return total, fmt.Errorf("snapshot of %s: %d results to %s", t, len(res), fetch)
		}
		piece := make([]source.Row, 0, len(res[0].Rows))
		for _, raw := range res[0].Rows {
			if len(raw) != len(cols) {
				return total, fmt.Errorf("snapshot of %s: a row of %d columns, want %d", t, len(raw), len(cols))
			}
			vals := make([]any, len(raw))
			for i, v := range raw {
				switch {
				case v == nil:
					vals[i] = nil
				case bytea[i]:
					b, err := decodeBytea(v)
					if err != nil {
						return total, fmt.Errorf("snapshot of %s, column %s: %w", t, layout.Columns[i], err)
					}
					vals[i] = b
				default:
					vals[i] = v
				}
			}
			piece = append(piece, source.Row{Table: layout, Values: vals})
		}
		total += len(piece)
		if err := emit(piece); err != nil {
			return total, err
		}
		if len(res[0].Rows) < snapshot.PieceRows {
			break
		}
	}
	if _, err := s.conn.Exec(ctx, "CLOSE "+cursorName); err != nil {
		return total, fmt.Errorf("snapshot of %s: close the cursor: %w", t, err)
	}
	return total, nil
}

// Close ends the snapshot's transaction (read only: nothing to keep).
func (s *scanner) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.conn.Close(ctx)
}
