package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// Preflight checks (outboxrelay check) read the server's settings, the
// relay role's attributes, the publication and the slot, and say for each
// what is wrong and the exact fix. They create nothing: a missing
// publication or slot passes when the relay would create it at start.
// pos is the stored checkpoint ("" if none).

// pgFacts is what the checks read once.
type pgFacts struct {
	walLevel, database, version, user string
	versionNum                        int
	replication, superuser            bool
	maxSlots, usedSlots               int
	maxSenders, usedSenders           int
	keepSizeMB                        int64 // max_slot_wal_keep_size; -1: no limit
	walEnd                            pglogrepl.LSN
}

// Preflight runs the PostgreSQL checks.
func (s *Source) Preflight(ctx context.Context, pos string, _ time.Time, o source.PreflightOptions) []preflight.Check {
	conn, cfg, err := s.connect(ctx)
	if err != nil {
		return []preflight.Check{preflight.Fail("postgres.connect", hidePassword(err, s.cfg.DSN).Error(),
			"check source.postgres.dsn (OUTBOXRELAY_SOURCE_POSTGRES_DSN): host, port, database, user and password, and that pg_hba.conf lets this user in from this host")}
	}
	defer closeConn(ctx, conn)
	var f pgFacts
	var walEnd string
	err = conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_database(), current_setting('server_version'),
		current_setting('server_version_num')::int, current_user, r.rolreplication, r.rolsuper,
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int,
		coalesce((SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), -1),
		pg_current_wal_lsn()::text
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&f.walLevel, &f.database, &f.version, &f.versionNum, &f.user,
		&f.replication, &f.superuser, &f.maxSlots, &f.usedSlots, &f.maxSenders, &f.usedSenders, &f.keepSizeMB, &walEnd)
	if err != nil {
		return []preflight.Check{preflight.Fail("postgres.connect", hidePassword(err, s.cfg.DSN).Error(), "the relay's role must be able to read pg_settings, pg_roles and pg_replication_slots")}
	}
	f.walEnd, _ = pglogrepl.ParseLSN(walEnd)
	slot, slotExists, slotErr := readSlot(ctx, conn, cfg)
	var activePID *int32
	var retained int64
	if slotExists {
		_ = conn.QueryRow(ctx, `SELECT active_pid, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&activePID, &retained)
	}

	checks := []preflight.Check{pgConnect(&f, cfg), pgTLS(conn)}
	if f.walLevel == "logical" {
		checks = append(checks, preflight.Pass("postgres.wal_level", "logical"))
	} else {
		checks = append(checks, preflight.Fail("postgres.wal_level", fmt.Sprintf("wal_level is %s: logical decoding needs logical", f.walLevel),
			"ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf), then restart the server"))
	}
	checks = append(checks, pgSlots(&f, cfg, slotExists), pgSenders(&f, cfg, activePID != nil), s.pgReplication(ctx, &f, cfg))
	tables, tablesCheck := pgTables(ctx, conn, cfg, f.database, o.CheckTable)
	checks = append(checks, tablesCheck, pgPublication(ctx, conn, cfg, &f, tables, tablesCheck.OK))
	checks = append(checks, pgSlot(cfg, &f, slot, slotExists, slotErr, activePID, pos), pgSlotWAL(cfg, &f, slot, slotExists, retained))
	if c, ok := pgSnapshot(ctx, conn, cfg, tables, pos); ok {
		checks = append(checks, c)
	}
	return checks
}

func pgConnect(f *pgFacts, cfg *Config) preflight.Check {
	if f.versionNum < 140000 {
		return preflight.Fail("postgres.connect", fmt.Sprintf("PostgreSQL %s: the relay needs PostgreSQL 14 or later", f.version), "upgrade the server")
	}
	c := preflight.Pass("postgres.connect", "PostgreSQL %s, database %s, as %s", f.version, f.database, f.user)
	if pc, err := pgx.ParseConfig(cfg.DSN); err == nil {
		c.Detail = fmt.Sprintf("PostgreSQL %s at %s", f.version, describe(&pc.Config))
	}
	return c
}

func pgSlots(f *pgFacts, cfg *Config, exists bool) preflight.Check {
	const name = "postgres.max_replication_slots"
	switch {
	case exists:
		return preflight.Pass(name, "%d of %d slots in use, one of them %s", f.usedSlots, f.maxSlots, cfg.Slot)
	case f.usedSlots < f.maxSlots:
		return preflight.Pass(name, "%d of %d slots in use: room for %s", f.usedSlots, f.maxSlots, cfg.Slot)
	}
	return preflight.Fail(name, fmt.Sprintf("all %d replication slots are in use: the relay cannot create %s", f.maxSlots, cfg.Slot),
		fmt.Sprintf("drop an unused slot (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active AND …), or ALTER SYSTEM SET max_replication_slots = %d and restart the server", f.maxSlots+4))
}

func pgSenders(f *pgFacts, cfg *Config, slotActive bool) preflight.Check {
	const name = "postgres.max_wal_senders"
	switch {
	case slotActive:
		return preflight.Pass(name, "%d of %d WAL senders in use, one of them streaming %s", f.usedSenders, f.maxSenders, cfg.Slot)
	case f.usedSenders < f.maxSenders:
		return preflight.Pass(name, "%d of %d WAL senders in use: room for the relay", f.usedSenders, f.maxSenders)
	}
	return preflight.Fail(name, fmt.Sprintf("all %d WAL senders are in use: the relay's replication connection would be refused", f.maxSenders),
		fmt.Sprintf("ALTER SYSTEM SET max_wal_senders = %d and restart the server (or stop an idle replication client)", f.maxSenders+4))
}

// pgReplication opens a replication connection as the relay does: that is
// the one test that covers both the REPLICATION attribute (or a managed
// service's equivalent grant) and pg_hba.conf.
func (s *Source) pgReplication(ctx context.Context, f *pgFacts, cfg *Config) preflight.Check {
	const name = "postgres.replication"
	attr := f.replication || f.superuser
	pgxCfg, err := cfg.parse()
	if err == nil {
		pgxCfg.ConnectTimeout = cfg.ConnectTimeout
		conn, cerr := connectReplication(ctx, cfg, pgxCfg)
		err = cerr
		if err == nil {
			var id pglogrepl.IdentifySystemResult
			id, err = pglogrepl.IdentifySystem(ctx, conn)
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			if err == nil {
				how := "REPLICATION attribute"
				if f.superuser {
					how = "superuser"
				} else if !f.replication {
					how = "a grant that allows it"
				}
				return preflight.Pass(name, "%s may open a replication connection (%s; IDENTIFY_SYSTEM: system %s, timeline %d)", f.user, how, id.SystemID, id.Timeline)
			}
		}
	}
	msg := hidePassword(err, cfg.DSN).Error()
	if !attr {
		return preflight.Fail(name, fmt.Sprintf("role %s lacks the REPLICATION attribute: it cannot stream a replication slot (%s)", f.user, msg),
			fmt.Sprintf("ALTER ROLE %s WITH REPLICATION", ident(f.user)))
	}
	return preflight.Fail(name, fmt.Sprintf("role %s has the REPLICATION attribute but a replication connection failed: %s", f.user, msg),
		fmt.Sprintf("let the role in for replication in pg_hba.conf: a line such as `host %s %s 10.0.0.0/8 scram-sha-256` (logical replication matches the database name, not \"replication\"), then SELECT pg_reload_conf()", f.database, f.user))
}

func pgTables(ctx context.Context, conn *pgx.Conn, cfg *Config, database string, check source.TableCheck) ([]qualifiedTable, preflight.Check) {
	const name = "postgres.tables"
	if len(cfg.Tables) == 0 {
		return nil, preflight.Pass(name, "no outbox tables: logical messages with prefixes %s only", strings.Join(cfg.MessagePrefixes, ", "))
	}
	filter, err := schema.NewFilter(cfg.Tables)
	if err != nil {
		return nil, preflight.Fail(name, err.Error(), "correct source.postgres.tables")
	}
	tables, err := resolveTables(ctx, conn, filter, database)
	if err != nil {
		return nil, preflight.Fail(name, err.Error(), "create the outbox table(s), or correct source.postgres.tables (schema.table as in the catalog)")
	}
	layouts, err := tableColumns(ctx, conn, tables)
	if err != nil {
		return nil, preflight.Fail(name, err.Error(), "the relay's role must be able to read pg_attribute")
	}
	if err := checkLayouts(layouts, check); err != nil {
		return nil, preflight.Fail(name, err.Error(), "fix the outbox mapping (outbox.*) or the table")
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.String()
	}
	return tables, preflight.Pass(name, "%s (the mapping suits them)", strings.Join(names, ", "))
}

// pgPublication is ensurePublication without the changes.
func pgPublication(ctx context.Context, conn *pgx.Conn, cfg *Config, f *pgFacts, tables []qualifiedTable, tablesOK bool) preflight.Check {
	const name = "postgres.publication"
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	var pubInsert, viaRoot bool
	err := conn.QueryRow(ctx, `SELECT pubinsert, pubviaroot FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&pubInsert, &viaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		create := createPublicationSQL(pub, tables)
		if !tablesOK {
			return preflight.Fail(name, fmt.Sprintf("publication %s does not exist, and the tables to put in it are not right (see postgres.tables)", cfg.Publication), "fix postgres.tables first")
		}
		if cfg.Create == CreateNever {
			return preflight.Fail(name, fmt.Sprintf("publication %s does not exist and source.postgres.create is never", cfg.Publication), "as an owner of the tables: "+create)
		}
		can := f.superuser
		if !can {
			var createDB, ownsAll bool
			oids := make([]string, len(tables))
			for i, t := range tables {
				oids[i] = t.sql()
			}
			err := conn.QueryRow(ctx, `SELECT has_database_privilege(current_database(), 'CREATE'),
				coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), true)
				FROM pg_class c WHERE c.oid = ANY($1::text[]::regclass[])`, oids).Scan(&createDB, &ownsAll)
			can = err == nil && createDB && ownsAll
		}
		if can {
			return preflight.Pass(name, "%s does not exist yet; the relay creates it at start: %s", cfg.Publication, create)
		}
		return preflight.Fail(name, fmt.Sprintf("publication %s does not exist, and role %s cannot create it (that needs CREATE on the database and ownership of the outbox tables)", cfg.Publication, f.user),
			fmt.Sprintf("as an owner of the tables run %s; and set source.postgres.create: never", create))
	}
	if err != nil {
		return preflight.Fail(name, fmt.Sprintf("read publication %s: %v", cfg.Publication, err), "the relay's role must be able to read pg_publication")
	}
	if !pubInsert {
		return preflight.Fail(name, fmt.Sprintf("publication %s does not publish inserts", cfg.Publication), fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert')", pub))
	}
	rows, err := conn.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1`, cfg.Publication)
	if err != nil {
		return preflight.Fail(name, fmt.Sprintf("read the tables of publication %s: %v", cfg.Publication, err), "the relay's role must be able to read pg_publication_tables")
	}
	covered := map[string]bool{}
	for rows.Next() {
		var s, t string
		if rows.Scan(&s, &t) == nil {
			covered[s+"."+t] = true
		}
	}
	rows.Close()
	var missing, missingSQL []string
	partitioned := false
	for _, t := range tables {
		partitioned = partitioned || t.partitioned
		if !covered[t.String()] {
			missing = append(missing, t.String())
			missingSQL = append(missingSQL, t.sql())
		}
	}
	if len(missing) > 0 {
		return preflight.Fail(name, fmt.Sprintf("publication %s does not cover %s", cfg.Publication, strings.Join(missing, ", ")),
			fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pub, strings.Join(missingSQL, ", ")))
	}
	if partitioned && !viaRoot {
		return preflight.Fail(name, fmt.Sprintf("publication %s publishes partitions under their own names, so inserts into a partitioned outbox table would not match", cfg.Publication),
			fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true)", pub))
	}
	return preflight.Pass(name, "%s publishes inserts of %d outbox table(s)", cfg.Publication, len(tables))
}

func pgSlot(cfg *Config, f *pgFacts, slot slotInfo, exists bool, readErr error, activePID *int32, pos string) preflight.Check {
	const name = "postgres.slot"
	if readErr != nil {
		return preflight.Fail(name, readErr.Error(), "the relay's role must be able to read pg_replication_slots")
	}
	if snapshot.IsPending(pos) {
		if exists && activePID != nil {
			return preflight.Warn(name, fmt.Sprintf("the initial snapshot is pending and %s is in use by PID %d (a running relay taking it?)", cfg.Slot, *activePID),
				"one relay per slot; if no relay should be running, SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '"+cfg.Slot+"'")
		}
		if exists {
			return preflight.Pass(name, "the initial snapshot is pending: the relay drops %s (its failed attempt's) and creates it again with a snapshot", cfg.Slot)
		}
		return preflight.Pass(name, "the initial snapshot is pending: the relay creates %s with a snapshot at start", cfg.Slot)
	}
	if !exists {
		switch {
		case pos != "":
			return preflight.Fail(name, fmt.Sprintf("replication slot %s does not exist, but the checkpoint is at %s: the transactions after it can no longer be read", cfg.Slot, pos),
				"see docs/operations.md, \"Slot lost\": recover the events if you can, create the slot again and move the position to it with outboxrelay checkpoint set")
		case cfg.Create == CreateNever:
			return preflight.Fail(name, fmt.Sprintf("replication slot %s does not exist and source.postgres.create is never", cfg.Slot),
				fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", cfg.Slot))
		}
		return preflight.Pass(name, "%s does not exist yet; the relay creates it at start (logical, pgoutput)", cfg.Slot)
	}
	if err := checkSlot(slot, cfg, f.database); err != nil {
		return preflight.Fail(name, err.Error(), "see docs/operations.md, \"Slot lost\"")
	}
	where := fmt.Sprintf("the relay starts at its confirmed_flush_lsn %s (no checkpoint yet)", slot.confirmedFlush)
	if pos != "" {
		if _, err := startPosition(pos, slot, cfg, serverInfo{database: f.database, version: f.versionNum, walEnd: f.walEnd}); err != nil {
			return preflight.Fail(name, err.Error(), "see docs/operations.md, \"Slot lost\"")
		}
		where = fmt.Sprintf("confirmed_flush_lsn %s, the relay resumes after its checkpoint %s", slot.confirmedFlush, pos)
	}
	if activePID != nil {
		return preflight.Warn(name, fmt.Sprintf("%s is in use by PID %d (a running relay?); %s", cfg.Slot, *activePID, where),
			"one relay per slot: a second one waits until the first lets go; if no relay should be running, SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '"+cfg.Slot+"'")
	}
	return preflight.Pass(name, "%s (logical, pgoutput): %s", cfg.Slot, where)
}

func pgSlotWAL(cfg *Config, f *pgFacts, slot slotInfo, exists bool, retained int64) preflight.Check {
	const name = "postgres.slot_wal"
	limit := "no limit (max_slot_wal_keep_size = -1)"
	if f.keepSizeMB >= 0 {
		limit = fmt.Sprintf("max_slot_wal_keep_size = %d MB", f.keepSizeMB)
	}
	if !exists {
		if f.keepSizeMB < 0 {
			return preflight.Warn(name, "no slot yet; "+limit+": a relay that stays down makes the server keep WAL until its disk is full",
				"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (sized to the disk; then SELECT pg_reload_conf()): the slot is then lost instead of the server")
		}
		return preflight.Pass(name, "no slot yet; %s", limit)
	}
	detail := fmt.Sprintf("wal_status %s, %s of WAL retained for %s, %s", orUnknown(slot.walStatus), bytesText(retained), cfg.Slot, limit)
	switch slot.walStatus {
	case "lost":
		return preflight.Fail(name, detail, "see docs/operations.md, \"Slot lost\"")
	case "unreserved":
		return preflight.Warn(name, detail+": the WAL the slot needs is past max_slot_wal_keep_size and goes at the next checkpoint",
			"start the relay now so the slot catches up, or raise max_slot_wal_keep_size")
	}
	if f.keepSizeMB < 0 {
		return preflight.Warn(name, detail+": a relay that stays down makes the server keep WAL until its disk is full",
			"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (sized to the disk; then SELECT pg_reload_conf()): the slot is then lost instead of the server")
	}
	return preflight.Pass(name, "%s", detail)
}

// RetainedWAL is how many bytes of WAL the server keeps for the relay's
// slot (from its restart_lsn to the current WAL position), for metrics; -1
// when the slot does not exist.
func (s *Source) RetainedWAL(ctx context.Context) (int64, error) {
	conn, cfg, err := s.connect(ctx)
	if err != nil {
		return -1, err
	}
	defer closeConn(ctx, conn)
	var n int64
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return -1, nil
	}
	return n, err
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ident quotes a name for SQL only when it needs quotes, so that fixes read
// as people write them.
func ident(s string) string {
	if plainIdent.MatchString(s) {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
