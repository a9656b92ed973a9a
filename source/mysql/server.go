package mysql

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/source"
)

// serverInfo is what the relay needs to know about the server before it
// streams.
type serverInfo struct {
	flavor      string
	version     string
	gtidEnabled bool
	// rowMetadata is binlog_row_metadata ("" when the server has no such
	// variable, i.e. never sends column names).
	rowMetadata string
}

// connect opens a plain (non-replication) connection for metadata queries,
// with the configured TLS and password (see Config.dial).
func connect(ctx context.Context, cfg *Config) (*client.Conn, error) {
	return cfg.dial(ctx,
		// go-mysql asks for collation 255, which MariaDB does not know and
		// answers with a silent fallback that garbles UTF-8.
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
}

func queryString(conn *client.Conn, q string) (string, error) {
	r, err := conn.Execute(q)
	if err != nil {
		return "", fmt.Errorf("%s: %w", q, err)
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return "", nil
	}
	v, err := r.GetString(0, 0)
	// go-mysql's strings point into a pooled buffer that Close recycles.
	return strings.Clone(v), err
}

// inspect reads the server settings and refuses those the relay cannot work
// with, naming the setting to change.
func inspect(conn *client.Conn, cfg *Config) (serverInfo, error) {
	var si serverInfo
	var err error
	if si.version, err = queryString(conn, "SELECT VERSION()"); err != nil {
		return si, err
	}
	si.flavor = gomysql.MySQLFlavor
	if strings.Contains(strings.ToLower(si.version), "mariadb") {
		si.flavor = gomysql.MariaDBFlavor
	}
	if cfg.Flavor != "" && cfg.Flavor != si.flavor {
		return si, source.Permanent(fmt.Errorf("source.mysql.flavor is %q but the server at %s is %s (%s)", cfg.Flavor, cfg.Addr, si.flavor, si.version))
	}
	vars := map[string]string{}
	r, err := conn.Execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata','gtid_mode')")
	if err != nil {
		return si, fmt.Errorf("read server variables: %w", err)
	}
	for i := 0; i < r.RowNumber(); i++ {
		k, _ := r.GetString(i, 0)
		v, _ := r.GetString(i, 1)
		// Clone: go-mysql strings point into a buffer that Close recycles.
		vars[strings.Clone(strings.ToLower(k))] = strings.Clone(strings.ToUpper(v))
	}
	r.Close()
	var problems []string
	if vars["log_bin"] != "ON" && vars["log_bin"] != "1" {
		problems = append(problems, "binary logging is off: start the server with --log-bin")
	}
	if vars["binlog_format"] != "ROW" {
		problems = append(problems, fmt.Sprintf("binlog_format is %q: set binlog_format=ROW", vars["binlog_format"]))
	}
	if vars["binlog_row_image"] != "FULL" {
		problems = append(problems, fmt.Sprintf("binlog_row_image is %q: set binlog_row_image=FULL (with MINIMAL/NOBLOB an INSERT may omit columns)", vars["binlog_row_image"]))
	}
	// Without FULL row metadata the relay falls back to information_schema
	// (see Reader.fallback); the check command reports it.
	si.rowMetadata = vars["binlog_row_metadata"]
	if len(problems) > 0 {
		return si, source.Permanent(fmt.Errorf("server %s cannot feed the relay: %s", cfg.Addr, strings.Join(problems, "; ")))
	}
	// MariaDB always writes GTIDs; MySQL only with gtid_mode=ON.
	si.gtidEnabled = si.flavor == gomysql.MariaDBFlavor || vars["gtid_mode"] == "ON"
	return si, nil
}

// binlogFile is one entry of SHOW BINARY LOGS.
type binlogFile struct {
	name string
	size uint64
}

func binaryLogs(conn *client.Conn) ([]binlogFile, error) {
	r, err := conn.Execute("SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("SHOW BINARY LOGS (needs REPLICATION CLIENT on MySQL, BINLOG MONITOR on MariaDB): %w", err)
	}
	defer r.Close()
	out := make([]binlogFile, 0, r.RowNumber())
	for i := 0; i < r.RowNumber(); i++ {
		name, _ := r.GetString(i, 0)
		size, _ := r.GetUint(i, 1)
		out = append(out, binlogFile{name: strings.Clone(name), size: size})
	}
	return out, nil
}

// currentPosition returns the server's binlog position now, with the GTID
// set at exactly that point when GTIDs are on: MariaDB computes it for the
// offset (BINLOG_GTID_POS); MySQL reports both in one status row. (Reading
// gtid_executed separately would let a transaction committed in between be
// in the set but after the offset: resuming by GTID would skip it.)
func currentPosition(conn *client.Conn, si serverInfo) (Position, error) {
	var p Position
	q := "SHOW MASTER STATUS"
	var r *gomysql.Result
	var err error
	if si.flavor == gomysql.MySQLFlavor {
		// MySQL 8.4 removed SHOW MASTER STATUS (8.2 added the new name).
		q = "SHOW BINARY LOG STATUS"
		if r, err = conn.Execute(q); err != nil {
			var me *gomysql.MyError
			if errors.As(err, &me) && me.Code == 1064 { // syntax: before 8.2
				q = "SHOW MASTER STATUS"
				r, err = conn.Execute(q)
			}
		}
	} else {
		r, err = conn.Execute(q)
	}
	if err != nil {
		return p, fmt.Errorf("%s (needs REPLICATION CLIENT on MySQL, BINLOG MONITOR on MariaDB): %w", q, err)
	}
	if r.RowNumber() == 0 {
		r.Close()
		return p, source.Permanent(fmt.Errorf("%s is empty: binary logging is off", q))
	}
	file, _ := r.GetString(0, 0)
	p.File = strings.Clone(file)
	off, _ := r.GetUint(0, 1)
	var executed string
	if si.flavor == gomysql.MySQLFlavor && si.gtidEnabled {
		g, _ := r.GetStringByName(0, "Executed_Gtid_Set")
		executed = strings.ReplaceAll(strings.Clone(g), "\n", "")
	}
	r.Close()
	p.Offset = uint32(off)
	if !si.gtidEnabled {
		return p, nil
	}
	if si.flavor == gomysql.MariaDBFlavor {
		g, err := binlogGTIDPos(conn, p)
		if err != nil {
			return p, err
		}
		return p.WithGTID(g), nil
	}
	return p.WithGTID(executed), nil
}

// checkGTIDsKept verifies that the server still has every transaction after
// p's GTID set, so that resuming by it skips nothing. When they are gone and
// p's binlog file is gone too, the error names the file and what the
// server still has.
func checkGTIDsKept(conn *client.Conn, si serverInfo, p Position) error {
	set, err := gomysql.ParseGTIDSet(si.flavor, p.GTID())
	if err != nil {
		return source.Permanent(fmt.Errorf("position %s: not a %s GTID set: %w", p, si.flavor, err))
	}
	kept := true
	if si.flavor == gomysql.MariaDBFlavor {
		// The oldest binlog starts at some GTID state: a position before
		// it (in any domain) needs transactions that were purged.
		logs, err := binaryLogs(conn)
		if err != nil {
			return err
		}
		if len(logs) == 0 {
			return source.Permanent(errors.New("the server has no binary logs"))
		}
		oldest, err := binlogGTIDPos(conn, Position{File: logs[0].name, Offset: 4})
		if err != nil {
			return err
		}
		if o, err := gomysql.ParseMariadbGTIDSet(oldest); err == nil {
			kept = set.Contain(o)
		}
	} else {
		ok, err := queryString(conn, fmt.Sprintf("SELECT GTID_SUBSET(@@GLOBAL.gtid_purged, %s)", sqlString(p.GTID())))
		if err != nil {
			return err
		}
		kept = ok == "1"
	}
	if kept {
		return nil
	}
	if p.File != "" {
		if err := checkServable(conn, p); err != nil {
			return err
		}
	}
	return source.PositionLost(p.String(), "position %s: transactions after its GTID set have been purged from the server's binlogs: the relay cannot resume without losing them. Either restore them (replay from a backup, or `outboxrelay republish` from the outbox tables) or accept the gap and move the checkpoint with `outboxrelay checkpoint set`; the relay will not skip ahead on its own", p)
}

// checkServable verifies that the server still has the binlog at p, so the
// relay never silently skips to another position. A file the server never
// had (a later number, or another binlog's name) is told apart from one it
// purged.
func checkServable(conn *client.Conn, p Position) error { return servable(conn, p, false) }

// servable is checkServable; setting: the caller is choosing a new
// position (checkpoint set), so the advice is to choose another.
func servable(conn *client.Conn, p Position, setting bool) error {
	logs, err := binaryLogs(conn)
	if err != nil {
		return err
	}
	for _, f := range logs {
		if f.name == p.File {
			if uint64(p.Offset) > f.size {
				return source.PositionLost(p.String(), "position %s is beyond the end of %s (%d bytes): it does not belong to this server; set a position from SHOW BINLOG EVENTS", p, f.name, f.size)
			}
			return nil
		}
	}
	if len(logs) == 0 {
		return source.PositionLost(p.String(), "position %s: the server has no binary logs", p)
	}
	oldest, newest := logs[0].name, logs[len(logs)-1].name
	base, seq, _ := splitFile(p.File)
	nbase, nseq, _ := splitFile(newest)
	switch {
	case base != nbase:
		return source.PositionLost(p.String(), "position %s: binlog file %s is not one of this server's (they are named %s.NNNNNN: it has %s … %s): a position from another server, or a typo", p, p.File, nbase, oldest, newest)
	case seq > nseq:
		return source.PositionLost(p.String(), "position %s: binlog file %s does not exist on this server yet (its newest is %s): a position from another server, or a typo", p, p.File, newest)
	}
	if setting {
		return source.PositionLost(p.String(), "position %s: binlog file %s was purged from the server (it has %s … %s): choose a position it still has, from %s:4 on", p, p.File, oldest, newest, oldest)
	}
	return source.PositionLost(p.String(), "position %s: binlog file %s is no longer on the server (it has %s … %s): events after the checkpoint were purged before the relay read them. Either restore them (replay from a backup, or `outboxrelay republish` from the outbox tables) or accept the gap and move the checkpoint with `outboxrelay checkpoint set`; the relay will not skip ahead on its own", p, p.File, oldest, newest)
}

// checkGTIDsHad verifies that the server has executed every transaction of
// p's GTID set: a set beyond it names transactions the server never had
// (another server's position, or a typo), and resuming by it would skip
// the server's next transactions.
func checkGTIDsHad(conn *client.Conn, si serverInfo, p Position) error {
	set, err := gomysql.ParseGTIDSet(si.flavor, p.GTID())
	if err != nil {
		return fmt.Errorf("position %s: not a %s GTID set: %w", p, si.flavor, err)
	}
	if si.flavor == gomysql.MariaDBFlavor {
		cur, err := queryString(conn, "SELECT @@GLOBAL.gtid_binlog_pos")
		if err != nil {
			return err
		}
		now, err := gomysql.ParseMariadbGTIDSet(cur)
		if err != nil {
			return err
		}
		if !now.Contain(set) {
			return fmt.Errorf("position %s: its GTID set goes beyond what the server has written (gtid_binlog_pos %s): the server never had those transactions; a position from another server, or a typo", p, cur)
		}
		return nil
	}
	ok, err := queryString(conn, fmt.Sprintf("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", sqlString(p.GTID())))
	if err != nil {
		return err
	}
	if ok != "1" {
		return fmt.Errorf("position %s: its GTID set is not a subset of the server's gtid_executed: the server never had those transactions; a position from another server, or a typo", p)
	}
	return nil
}

// FreeServerID picks a replica server_id for a tool (replay, position
// checks) that no replica connected to the server uses and that differs
// from cfg's: two readers with one id disconnect each other. It draws from
// the upper half of the id space, which replicas rarely use.
func FreeServerID(ctx context.Context, cfg Config) (uint32, error) {
	cfg.SetDefaults()
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	used := map[uint32]bool{cfg.ServerID: true}
	if v, err := queryString(conn, "SELECT @@GLOBAL.server_id"); err == nil {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			used[uint32(n)] = true
		}
	}
	// Listing replicas needs a privilege the relay's user may lack; then
	// the random draw alone keeps a collision unlikely (1 in 2^31).
	for _, q := range []string{"SHOW REPLICAS", "SHOW SLAVE HOSTS"} {
		r, err := conn.Execute(q)
		if err != nil {
			continue
		}
		for i := 0; i < r.RowNumber(); i++ {
			if n, err := r.GetUint(i, 0); err == nil {
				used[uint32(n)] = true
			}
		}
		r.Close()
		break
	}
	for {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		id := binary.LittleEndian.Uint32(b[:]) | 1<<31
		if id != 1<<32-1 && !used[id] {
			return id, nil
		}
	}
}
