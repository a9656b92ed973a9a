package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// Kind is the source kind stored in checkpoints.
const Kind = "postgres"

// pieceRows bounds the rows of one transaction held in memory: larger
// transactions are handed out in pieces of this many rows.
const pieceRows = 2048

// Reader streams committed transactions from a logical replication slot.
//
// One goroutine owns the replication connection (pgconn is not safe for
// concurrent use): it receives, decodes, hands transactions to Next through
// a channel, and sends status updates. Ack only records the position and
// nudges that goroutine, so it may be called from any goroutine.
type Reader struct {
	cfg   Config
	log   zerolog.Logger
	conn  *pgconn.PgConn
	dec   *decoder
	start pglogrepl.LSN

	out    chan *source.Tx
	done   chan struct{} // closed when the streaming goroutine ends
	err    error         // why it ended; read after done
	cancel context.CancelFunc
	hbDone chan struct{}
	closed sync.Once

	acked  atomic.Uint64 // newest position the relay acknowledged
	nudge  chan struct{} // an Ack arrived
	wakeMu sync.Mutex
	wake   context.CancelFunc // interrupts the pending receive

	tables []*schema.Table // the outbox tables' columns at open

	// Owned by the streaming goroutine (and by Close once it ended).
	received   pglogrepl.LSN // newest WAL position seen: the write position
	sentFlush  pglogrepl.LSN // flush position last reported
	nextStatus time.Time
	inTx       bool
	txID       string
	commitTime time.Time
	index      int
	rows       []source.Row
	lastEnd    pglogrepl.LSN // End of the last transaction handed out (or the start)
	walEnd     pglogrepl.LSN // newest WAL end the server reported outside transactions
	txStart    Position      // the open transaction's final_lsn
	// resume is a start inside a transaction (Rows > 0) until that
	// transaction begins; skip counts its rows still to drop.
	resume Position
	skip   int
}

// Open checks the server, the publication and the slot (creating them when
// cfg.Create is auto), and starts streaming right after from (a
// checkpoint's position text), or at the slot's confirmed_flush_lsn when
// from is "".
func Open(ctx context.Context, cfg Config, log zerolog.Logger, from string) (*Reader, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, source.Permanent(fmt.Errorf("source.postgres: %w", err))
	}
	cfg, err := cfg.withSecrets()
	if err != nil {
		return nil, err
	}
	r, err := open(ctx, cfg, log, from)
	return r, hidePassword(err, cfg.DSN)
}

// opened is what every open learns before it touches the slot: the
// server, the outbox tables and their layouts, the publication checked.
type opened struct {
	pgxCfg  *pgx.ConnConfig
	server  string
	conn    *pgx.Conn
	si      serverInfo
	filter  *schema.Filter
	tables  []qualifiedTable
	layouts []*schema.Table
}

func (o *opened) close(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = o.conn.Close(cctx)
}

// prepare connects, checks the server and the outbox tables, and makes
// sure of the publication. The caller closes the connection.
func prepare(ctx context.Context, cfg *Config) (*opened, error) {
	var filter *schema.Filter
	if len(cfg.Tables) > 0 {
		f, err := schema.NewFilter(cfg.Tables)
		if err != nil {
			return nil, source.Permanent(fmt.Errorf("source.postgres.tables: %w", err))
		}
		filter = f
	}
	pgxCfg, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	pgxCfg.ConnectTimeout = cfg.ConnectTimeout
	server := describe(&pgxCfg.Config)
	conn, err := pgx.ConnectConfig(ctx, pgxCfg)
	if err != nil {
		return nil, explain("connect to "+server, err, cfg)
	}
	o := &opened{pgxCfg: pgxCfg, server: server, conn: conn, filter: filter}
	fail := func(err error) (*opened, error) {
		o.close(ctx)
		return nil, err
	}
	if o.si, err = inspect(ctx, conn, cfg); err != nil {
		return fail(err)
	}
	if o.tables, err = resolveTables(ctx, conn, filter, o.si.database); err != nil {
		return fail(err)
	}
	if o.layouts, err = tableColumns(ctx, conn, o.tables); err != nil {
		return fail(err)
	}
	// Before anything is created on the server: a publication and a slot
	// made for tables the relay cannot map would only hold WAL.
	if err := checkLayouts(o.layouts, cfg.checkTable); err != nil {
		return fail(source.Permanent(err))
	}
	if err := ensurePublication(ctx, conn, cfg, o.tables); err != nil {
		return fail(err)
	}
	return o, nil
}

func open(ctx context.Context, cfg Config, log zerolog.Logger, from string) (*Reader, error) {
	o, err := prepare(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer o.close(ctx)
	conn, si, tables, layouts, pgxCfg, server, filter := o.conn, o.si, o.tables, o.layouts, o.pgxCfg, o.server, o.filter
	slot, exists, err := readSlot(ctx, conn, &cfg)
	if err != nil {
		return nil, err
	}
	if exists {
		if err := checkSlot(slot, &cfg, si.database); err != nil {
			return nil, err
		}
		if cfg.takeOver && !cfg.replay {
			if err := takeOverSlot(ctx, conn, &cfg, log); err != nil {
				return nil, err
			}
		}
	} else {
		if from != "" {
			return nil, source.PositionLost(from, "replication slot %q does not exist, but the checkpoint is at %s: the transactions after it can no longer be read (the slot was dropped, or the relay points at another server). The relay will not skip ahead on its own: if losing them is acceptable, create the slot again and move the position to it (docs/operations.md, \"Slot lost\"; with the file store, deleting the checkpoint file also makes the relay start at a new slot)", cfg.Slot, from)
		}
		if cfg.Create == CreateNever {
			return nil, source.Permanent(fmt.Errorf("replication slot %q does not exist and source.postgres.create is never: create it with\n  SELECT pg_create_logical_replication_slot('%s', 'pgoutput');", cfg.Slot, cfg.Slot))
		}
	}

	repl, err := connectReplication(ctx, &cfg, pgxCfg)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = repl.Close(cctx)
		}
	}()
	if !exists {
		res, err := pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return nil, explain("create replication slot "+cfg.Slot, err, &cfg)
		}
		if slot.confirmedFlush, err = pglogrepl.ParseLSN(res.ConsistentPoint); err != nil {
			return nil, fmt.Errorf("create replication slot %s: consistent point %q: %w", cfg.Slot, res.ConsistentPoint, err)
		}
		log.Info().Str("slot", cfg.Slot).Str("position", slot.confirmedFlush.String()).Msg("created replication slot")
	}
	if cfg.replay && slot.confirmedFlush > 0 && from != "" {
		if p, err := ParsePosition(from); err == nil && p.LSN < slot.confirmedFlush {
			return nil, source.Permanent(fmt.Errorf("replay from %s: replication slot %q has confirmed up to %s, and logical decoding cannot read WAL from before a slot's confirmed_flush_lsn: the earliest position a replay can start from is %s (older events must be re-inserted or restored from a backup)", p, cfg.Slot, slot.confirmedFlush, slot.confirmedFlush))
		}
	}
	at, err := startPosition(from, slot, &cfg, si)
	if err != nil {
		return nil, err
	}
	// Inside a transaction (LSN+ROWS): streaming from its final_lsn sends
	// it again, and its first rows are skipped.
	start := at.LSN
	streamSlot := cfg.Slot
	if cfg.replay {
		// A temporary copy of the relay's slot, made by this walsender
		// session: it streams the range without moving the relay's slot,
		// and disappears with the connection, whatever happens.
		streamSlot = fmt.Sprintf("%s_replay_%d", cfg.Slot, time.Now().UnixNano()%1e9)
		q := fmt.Sprintf("SELECT pg_copy_logical_replication_slot(%s, %s, true)", quoteLiteral(cfg.Slot), quoteLiteral(streamSlot))
		if _, err := repl.Exec(ctx, q).ReadAll(); err != nil {
			return nil, explain("copy replication slot "+cfg.Slot+" for the replay", err, &cfg)
		}
		// The live relay may have confirmed past --from between the check
		// above and the copy: the copy then starts later, and the server
		// would silently skip to there. Check the copy itself.
		if p, err := ParsePosition(from); err == nil && from != "" {
			var confirmed string
			if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, streamSlot).Scan(&confirmed); err != nil {
				return nil, explain("read the replay's slot copy "+streamSlot, err, &cfg)
			}
			if c, err := pglogrepl.ParseLSN(confirmed); err == nil && c > p.LSN {
				return nil, source.Permanent(fmt.Errorf("replay from %s: the relay's slot %q confirmed up to %s while the replay copied it, and logical decoding cannot read WAL from before a slot's confirmed_flush_lsn: replay from %s or later", p, cfg.Slot, c, c))
			}
		}
	}
	args := []string{
		"proto_version '1'",
		"publication_names " + quoteLiteral(pgx.Identifier{cfg.Publication}.Sanitize()),
		"messages 'true'",
	}
	if err := pglogrepl.StartReplication(ctx, repl, streamSlot, start, pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		// No LSN in the text: a retried failure must read the same each time,
		// so that it is logged once per outage.
		return nil, explain("start replication from slot "+cfg.Slot, err, &cfg)
	}
	ok = true

	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.String()
	}
	r := &Reader{
		tables:  layouts,
		cfg:     cfg,
		log:     log,
		conn:    repl,
		dec:     newDecoder(filter, cfg.MessagePrefixes),
		start:   start,
		out:     make(chan *source.Tx),
		done:    make(chan struct{}),
		nudge:   make(chan struct{}, 1),
		lastEnd: start,
	}
	if at.Rows > 0 {
		r.resume = at
	}
	r.acked.Store(uint64(start))
	sctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.err = r.stream(sctx)
	}()
	if cfg.Heartbeat > 0 && !cfg.replay {
		r.hbDone = make(chan struct{})
		go func() {
			defer close(r.hbDone)
			heartbeat(sctx, pgxCfg, cfg.Heartbeat, log)
		}()
	}
	log.Info().Str("slot", cfg.Slot).Str("publication", cfg.Publication).Str("position", at.String()).
		Strs("tables", names).Strs("message_prefixes", cfg.MessagePrefixes).Str("server", server).
		Int("server_version", si.version).Msg("streaming replication slot")
	return r, nil
}

// connectReplication opens the replication connection (replication=database).
func connectReplication(ctx context.Context, cfg *Config, pgxCfg *pgx.ConnConfig) (*pgconn.PgConn, error) {
	rc := pgxCfg.Config.Copy()
	if rc.RuntimeParams == nil {
		rc.RuntimeParams = map[string]string{}
	}
	rc.RuntimeParams["replication"] = "database"
	// The walsender formats values with its own settings: ask for the
	// bytea form the decoder reads.
	rc.RuntimeParams["bytea_output"] = "hex"
	if rc.RuntimeParams["application_name"] == "" {
		rc.RuntimeParams["application_name"] = "outboxrelay"
	}
	conn, err := pgconn.ConnectConfig(ctx, rc)
	if err != nil {
		return nil, explain("open replication connection to "+describe(rc), err, cfg)
	}
	return conn, nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Next returns the next committed transaction (or piece of one).
func (r *Reader) Next(ctx context.Context) (*source.Tx, error) {
	select {
	case tx := <-r.out:
		return tx, nil
	case <-r.done:
		return nil, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ack records that everything up to pos is durable; the streaming goroutine
// reports it to the server as the flush position. Safe for concurrent use.
func (r *Reader) Ack(_ context.Context, pos source.Position) error {
	lsn, err := lsnOf(pos)
	if err != nil {
		return err
	}
	for {
		cur := r.acked.Load()
		if uint64(lsn) <= cur || r.acked.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	select {
	case r.nudge <- struct{}{}:
	default:
	}
	r.wakeMu.Lock()
	wake := r.wake
	r.wakeMu.Unlock()
	if wake != nil {
		wake()
	}
	return nil
}

// Close stops streaming, reports the acknowledged position one last time and
// closes the connections.
func (r *Reader) Close() error {
	var errs []error
	r.closed.Do(func() {
		r.cancel()
		<-r.done
		if r.hbDone != nil {
			<-r.hbDone
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if !r.conn.IsClosed() {
			// The last Ack may have come after the goroutine's last status.
			// A dead connection must not hang Close: bound the write.
			_ = r.conn.Conn().SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := r.sendStatus(); err != nil {
				r.log.Debug().Err(err).Msg("final status update")
			}
		}
		if err := r.conn.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close replication connection: %w", err))
		}
	})
	return errors.Join(errs...)
}

// Source opens Readers with one configuration; it is what the relay
// restarts after a failure.
type Source struct {
	cfg Config
	log zerolog.Logger
}

// NewSource returns a Source; nothing connects until Open.
func NewSource(cfg Config, log zerolog.Logger) *Source {
	return &Source{cfg: cfg, log: log.With().Str("component", "source.postgres").Logger()}
}

// Kind implements relay.Source.
func (s *Source) Kind() string { return Kind }

// Resolve returns "": the replication slot itself holds where a relay
// without a checkpoint starts (its confirmed_flush_lsn, which moves only
// when the relay acknowledges), so nothing needs storing; Open creates the
// slot when it is missing and source.postgres.create is auto.
//
// With start: snapshot and no slot yet it returns snapshot.Pending, which
// the relay stores before it sends anything: until the snapshot's last
// row is acknowledged, every restart takes the snapshot again. An
// existing slot holds the start, as with current.
func (s *Source) Resolve(ctx context.Context) (string, error) {
	cfg := s.cfg
	cfg.SetDefaults()
	if cfg.Start != StartSnapshot {
		return "", nil
	}
	conn, c, err := s.connect(ctx)
	if err != nil {
		return "", err
	}
	defer closeConn(ctx, conn)
	slot, exists, err := readSlot(ctx, conn, c)
	if err != nil {
		return "", err
	}
	if exists {
		s.log.Warn().Str("slot", c.Slot).Str("confirmed_flush_lsn", slot.confirmedFlush.String()).
			Msg("start: snapshot applies only when the relay creates its slot: the slot exists already, so the relay streams from it and takes no snapshot (drop the slot and the checkpoint to take one)")
		return "", nil
	}
	return snapshot.Pending, nil
}

// Open implements source.Source. A replay streams from a temporary copy
// of the relay's slot.
func (s *Source) Open(ctx context.Context, from string, o source.OpenOptions) (source.Reader, error) {
	cfg := s.cfg
	cfg.replay, cfg.checkTable, cfg.takeOver = o.Replay, o.CheckTable, o.TakeOver
	if snapshot.IsPending(from) {
		if o.Replay {
			return nil, source.Permanent(fmt.Errorf("replay from %s: a pending snapshot is not a position in the WAL: replay from an LSN", from))
		}
		return OpenSnapshot(ctx, cfg, s.log, from)
	}
	r, err := Open(ctx, cfg, s.log, from)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// StartNote implements source.Source.
func (s *Source) StartNote() string {
	cfg := s.cfg
	cfg.SetDefaults()
	if cfg.Start == StartSnapshot {
		return "source.postgres.start (snapshot): the rows of the outbox tables, then the slot created with that snapshot (an existing slot's confirmed_flush_lsn)"
	}
	return "the replication slot's confirmed_flush_lsn"
}

// Number implements source.Source: the LSN.
func (s *Source) Number(pos string) (float64, bool) {
	p, err := ParsePosition(pos)
	return float64(p.LSN), err == nil
}

// Tables returns the outbox tables' columns as the catalog had them at open,
// so that the relay can check the mapping before streaming.
func (r *Reader) Tables() []*schema.Table { return r.tables }
