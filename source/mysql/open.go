package mysql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// eventsAhead is how many binlog events the syncer may read and decode
// ahead of Next.
const eventsAhead = 512

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

// Open implements source.Source. A replay reads with a replica id of its
// own (o.ReplicaID, or a free one), so as not to disconnect the relay.
func (s *Source) Open(ctx context.Context, from string, o source.OpenOptions) (source.Reader, error) {
	cfg := s.cfg
	cfg.checkTable = o.CheckTable
	if snapshot.IsPending(from) {
		if o.Replay {
			return nil, source.Permanent(fmt.Errorf("replay from %s: a pending snapshot is not a binlog position: replay from FILE:OFFSET", from))
		}
		return OpenSnapshot(ctx, cfg, s.log, from)
	}
	if o.Replay {
		cfg.replay = true
		cfg.ServerID = o.ReplicaID
		if cfg.ServerID == 0 {
			id, err := FreeServerID(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("pick a replica server_id for the replay: %w", err)
			}
			cfg.ServerID = id
			s.log.Info().Uint32("server_id", id).Msg("replay reads the binlog as replica server_id")
		}
	}
	return Open(ctx, cfg, s.log, from)
}

// StartNote implements source.Source.
func (s *Source) StartNote() string {
	cfg := s.cfg
	cfg.SetDefaults()
	return "source.mysql.start (" + cfg.Start + ")"
}

// Number implements source.Source: binlog file number × 2^32 + offset.
func (s *Source) Number(pos string) (float64, bool) {
	p, err := ParsePosition(pos)
	if err != nil || p.File == "" {
		return 0, false
	}
	_, seq, err := splitFile(p.File)
	if err != nil || seq >= 1<<20 {
		return 0, false
	}
	return float64(seq<<32 | uint64(p.Offset)), true
}

// Resolve turns source.mysql.start (current, earliest or a position) into
// the position a relay without a checkpoint starts from, with its GTID set
// where the server can tell it. The relay stores it before it sends
// anything, so that every later session resumes from there rather than
// resolving "current" again.
func (s *Source) Resolve(ctx context.Context) (string, error) {
	cfg := s.cfg
	cfg.SetDefaults()
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	si, err := inspect(conn, &cfg)
	if err != nil {
		return "", err
	}
	if cfg.Start == "snapshot" {
		// Stored before anything is sent: until the snapshot's last row
		// is acknowledged, every restart takes it again (Open).
		if si.flavor == gomysql.MySQLFlavor && cfg.SnapshotLock == "" {
			return "", source.Permanent(ErrSnapshotMySQL)
		}
		warnPreparedXA(conn, s.log)
		return snapshot.Pending, nil
	}
	p, err := resolve(conn, si, &cfg)
	if err != nil {
		return "", err
	}
	warnPreparedXA(conn, s.log)
	return p.String(), nil
}

func resolve(conn *client.Conn, si serverInfo, cfg *Config) (Position, error) {
	switch cfg.Start {
	case "snapshot":
		return Position{}, errors.New("start: snapshot has no binlog position until the snapshot is taken")
	case "current":
		return currentPosition(conn, si)
	case "earliest":
		logs, err := binaryLogs(conn)
		if err != nil {
			return Position{}, err
		}
		if len(logs) == 0 {
			return Position{}, source.Permanent(errors.New("the server has no binary logs"))
		}
		p := Position{File: logs[0].name, Offset: 4}
		if si.flavor == gomysql.MariaDBFlavor {
			g, err := binlogGTIDPos(conn, p)
			if err != nil {
				return Position{}, err
			}
			p = p.WithGTID(g)
		}
		// MySQL: the reader takes the set from the file's Previous_gtids.
		return p, nil
	}
	p, err := ParsePosition(cfg.Start)
	if err != nil {
		return Position{}, source.Permanent(fmt.Errorf("source.mysql.start: %w", err))
	}
	return p, nil
}

// warnPreparedXA says, at a first start, which XA transactions are prepared
// on the server: their XA PREPARE lies before the start position, so their
// rows will not be published when they commit.
func warnPreparedXA(conn *client.Conn, log zerolog.Logger) {
	r, err := conn.Execute("XA RECOVER")
	if err != nil {
		log.Debug().Err(err).Msg("XA RECOVER (to warn of XA transactions prepared before the start position)")
		return
	}
	defer r.Close()
	if n := r.RowNumber(); n > 0 {
		log.Warn().Int("prepared_xa", n).
			Msg("XA transactions are prepared on the server before the relay's first start position: their rows are not published when they commit (docs/operations.md: XA transactions). Commit or roll them back before the first start, or start from an earlier position")
	}
}

// Open connects, checks the server, and starts streaming right after from
// (a checkpoint's position text), or where cfg.Start says when from is "".
func Open(ctx context.Context, cfg Config, log zerolog.Logger, from string) (*Reader, error) {
	cfg.SetDefaults()
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

	var start Position
	if from == "" {
		if start, err = resolve(conn, si, &cfg); err != nil {
			return nil, err
		}
	} else if start, err = ParsePosition(from); err != nil {
		return nil, source.Permanent(fmt.Errorf("stored checkpoint: %w", err))
	}
	if start.File == "" && !si.gtidEnabled {
		return nil, source.Permanent(fmt.Errorf("position %s is a GTID set, but the server has GTIDs off: give a FILE:OFFSET position", start))
	}
	// With a GTID set the relay resumes by it: that survives a fail-over
	// to another server, whose binlog files differ (and may share names).
	byGTID := start.GTID() != "" && si.gtidEnabled
	if byGTID {
		if err := checkGTIDsKept(conn, si, start); err != nil {
			return nil, err
		}
	} else if start.File != "" {
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
		xa:        start.XA,
		skip:      start.Rows,
	}
	// The outbox tables: they must exist, be visible to the relay's user,
	// be transactional, and suit the mapping — found now, not at the first
	// row (or never, for a misspelled name).
	rep, err := readOutboxTables(conn, filter)
	if err != nil {
		return nil, err
	}
	if err := rep.problem(cfg.checkTable); err != nil {
		return nil, source.Permanent(err)
	}
	if rep.unmatched {
		log.Warn().Strs("tables", cfg.Tables).Msg("no table matches source.mysql.tables yet: rows of tables created later are relayed when they match")
	}
	// Before streaming: the decode hook reads r.fallback.
	r.startTables = rep.tables
	if si.rowMetadata != "FULL" {
		r.fallback = schema.NewCache()
		for _, t := range r.startTables {
			r.fallback.Layout(t.Schema, t.Name, t.Columns)
		}
		log.Warn().Str("binlog_row_metadata", si.rowMetadata).Int("tables", r.fallback.Len()).
			Msg("the binlog carries no column names: using information_schema (correct only while no DDL on an outbox table lies between the relay's position and now; set binlog_row_metadata=FULL)")
	}

	// GTIDs are tracked from every start: a position without its set gets
	// it from the server (MariaDB) or from the file itself (MySQL: its
	// Previous_gtids event and the GTIDs up to the offset).
	seek := false
	if si.gtidEnabled {
		set := start.GTID()
		if set == "" {
			if si.flavor == gomysql.MariaDBFlavor && !cfg.deriveGTIDByReading {
				if set, err = binlogGTIDPos(conn, start); err != nil {
					return nil, err
				}
			} else {
				seek = true
			}
		}
		if !seek {
			if r.gtids, err = newGTIDState(si.flavor, set); err != nil {
				return nil, source.Permanent(fmt.Errorf("position %s: %w", start, err))
			}
		}
	}

	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	src := &syncerSource{cfg: replication.BinlogSyncerConfig{
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
	}}
	r.events = src
	switch {
	case seek:
		r.seekFile, r.seekTo = start.File, max(start.Offset, 4)
		err = src.startFile(start.File, 4)
	case byGTID:
		// The first group the server sends is the first one not in the
		// set: for a position inside a transaction, that transaction.
		var set gomysql.GTIDSet
		if set, err = gomysql.ParseGTIDSet(si.flavor, start.GTID()); err != nil {
			return nil, source.Permanent(fmt.Errorf("position %s: bad %s GTID set: %w", start, si.flavor, err))
		}
		err = src.startGTID(set)
	default:
		err = src.startFile(start.File, start.Offset)
	}
	if err != nil {
		src.close()
		return nil, err
	}
	log.Info().Str("position", start.String()).Str("server", si.version).Bool("gtid", si.gtidEnabled).Msg("streaming binlog")
	return r, nil
}

// binlogGTIDPos asks MariaDB for the GTID set at a binlog position.
func binlogGTIDPos(conn *client.Conn, p Position) (string, error) {
	q := fmt.Sprintf("SELECT BINLOG_GTID_POS(%s, %d)", sqlString(p.File), p.Offset)
	r, err := conn.Execute(q)
	if err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return "", fmt.Errorf("%s: no result", q)
	}
	if null, _ := r.IsNull(0, 0); null {
		return "", source.Permanent(fmt.Errorf("position %s: the server cannot tell its GTID set (BINLOG_GTID_POS is NULL: the offset is not at an event boundary of that file); pick a position from SHOW BINLOG EVENTS", p))
	}
	v, err := r.GetString(0, 0)
	return strings.Clone(v), err
}

// sqlString quotes s as a MySQL string literal.
func sqlString(s string) string {
	return "'" + strings.NewReplacer(`\\`, `\\\\`, "'", "''").Replace(s) + "'"
}
