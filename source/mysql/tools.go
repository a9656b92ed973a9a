package mysql

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// The position tools (outboxrelay checkpoint show/set, replay) ask the
// server about positions without streaming.

// detect reads the flavor and GTID mode without judging the settings.
func detect(conn *client.Conn) (serverInfo, error) {
	var si serverInfo
	v, err := queryString(conn, "SELECT VERSION()")
	if err != nil {
		return si, err
	}
	si.version = v
	si.flavor = gomysql.MySQLFlavor
	if strings.Contains(strings.ToLower(v), "mariadb") {
		si.flavor = gomysql.MariaDBFlavor
		si.gtidEnabled = true
		return si, nil
	}
	mode, err := queryString(conn, "SELECT @@GLOBAL.gtid_mode")
	si.gtidEnabled = err == nil && strings.EqualFold(mode, "ON")
	return si, nil
}

// Compare orders two positions' text forms.
func (s *Source) Compare(a, b string) (int, error) {
	pa, err := ParsePosition(a)
	if err != nil {
		return 0, err
	}
	pb, err := ParsePosition(b)
	if err != nil {
		return 0, err
	}
	return pa.Compare(pb)
}

// Status reports the server's position now and how far pos (if not "") is
// behind it.
func (s *Source) Status(ctx context.Context, pos string) (source.PositionStatus, error) {
	st := source.PositionStatus{BehindBytes: -1}
	cfg := s.cfg
	cfg.SetDefaults()
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return st, err
	}
	defer conn.Close()
	si, err := detect(conn)
	if err != nil {
		return st, err
	}
	cur, err := currentPosition(conn, si)
	if err != nil {
		return st, err
	}
	st.Current = cur.String()
	logs, err := binaryLogs(conn)
	if err != nil {
		return st, err
	}
	if len(logs) > 0 {
		st.Notes = append(st.Notes, fmt.Sprintf("the server has binlogs %s … %s", logs[0].name, logs[len(logs)-1].name))
	}
	if pos == "" {
		return st, nil
	}
	if snapshot.IsPending(pos) {
		st.Notes = append(st.Notes, snapshot.PendingNote)
		return st, nil
	}
	p, err := ParsePosition(pos)
	if err != nil || p.File == "" {
		return st, err
	}
	var behind int64
	found := false
	for _, f := range logs {
		switch {
		case f.name == p.File && f.name == cur.File:
			behind += int64(cur.Offset) - int64(p.Offset)
			found = true
		case f.name == p.File:
			behind += int64(f.size) - int64(p.Offset)
			found = true
		case found && f.name == cur.File:
			behind += int64(cur.Offset)
		case found:
			behind += int64(f.size)
		}
		if f.name == cur.File {
			break
		}
	}
	if !found {
		st.Notes = append(st.Notes, fmt.Sprintf("binlog file %s of the position is no longer on the server: the relay cannot resume from it", p.File))
		return st, nil
	}
	st.BehindBytes = behind
	return st, nil
}

// Check verifies that the relay could resume right after pos: the binlog
// file is still there, the offset starts an event outside any transaction,
// and the GTIDs are not purged. It returns the position to store, with the
// GTID set filled in when the server has GTIDs (MariaDB computes it;
// MySQL's is read from the file: its Previous_gtids event and the GTIDs up
// to the offset).
func (s *Source) Check(ctx context.Context, pos string, o source.OpenOptions) (string, error) {
	if snapshot.IsPending(pos) {
		return "", snapshot.NotSettable(pos)
	}
	p, err := ParsePosition(pos)
	if err != nil {
		return "", err
	}
	cfg := s.cfg
	cfg.SetDefaults()
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	si, err := detect(conn)
	if err != nil {
		return "", err
	}
	if p.GTID() != "" && !si.gtidEnabled {
		return "", fmt.Errorf("position %s has a GTID set, but the server has GTIDs off", pos)
	}
	if p.File != "" {
		if err := servable(conn, p, true); err != nil {
			return "", err
		}
		if err := checkBoundary(conn, p); err != nil {
			return "", err
		}
		if p.GTID() == "" && si.gtidEnabled {
			set, err := s.gtidAt(ctx, conn, si, p)
			if err != nil {
				return "", fmt.Errorf("position %s: the server has GTIDs but the GTID set at this offset cannot be derived (%v): give the position with its set, FILE:OFFSET@GTIDSET", pos, err)
			}
			p = p.WithGTID(set)
		}
	}
	if o.Replay && p.File == "" {
		return "", fmt.Errorf("position %s: a replay needs FILE:OFFSET (a GTID set alone does not order the range it reads; take the position from a record's outboxrelay-position header, or SHOW BINLOG EVENTS)", pos)
	}
	if p.GTID() != "" {
		if err := checkGTIDsHad(conn, si, p); err != nil {
			return "", err
		}
		if err := checkGTIDsKept(conn, si, p); err != nil {
			return "", err
		}
	}
	return p.String(), nil
}

// gtidAt derives the executed GTID set at a binlog position.
func (s *Source) gtidAt(ctx context.Context, conn *client.Conn, si serverInfo, p Position) (string, error) {
	if si.flavor == gomysql.MariaDBFlavor {
		return binlogGTIDPos(conn, p)
	}
	id, err := FreeServerID(ctx, s.cfg)
	if err != nil {
		return "", err
	}
	cfg := s.cfg
	cfg.SetDefaults()
	cfg.ServerID = id
	cfg.Heartbeat = 500 * time.Millisecond
	cfg.deriveGTIDByReading = true
	r, err := Open(ctx, cfg, s.log, Position{File: p.File, Offset: p.Offset}.String())
	if err != nil {
		return "", err
	}
	defer r.Close()
	for r.seekTo != 0 {
		ev, err := r.events.next(ctx)
		if err != nil {
			return "", err
		}
		if err := r.step(ev); err != nil {
			return "", err
		}
	}
	return r.gtids.snapshot().String(), nil
}

// txStart lists the binlog events a transaction may start at (or that stand
// between transactions).
var txStart = map[string]bool{
	"gtid": true, "anonymous_gtid": true, "format_desc": true, "rotate": true,
	"gtid_list": true, "binlog_checkpoint": true, "previous_gtids": true, "stop": true,
}

// checkBoundary verifies that p starts an event at a transaction boundary:
// resuming inside a transaction would meet rows without their table map.
func checkBoundary(conn *client.Conn, p Position) error {
	for _, f := range mustLogs(conn) {
		if f.name == p.File && uint64(p.Offset) == f.size {
			return nil // the end of a file is a boundary
		}
	}
	r, err := conn.Execute(fmt.Sprintf("SHOW BINLOG EVENTS IN %s FROM %d LIMIT 1", sqlString(p.File), p.Offset))
	if err != nil {
		return fmt.Errorf("position %s: offset %d does not start an event in %s (%v); pick a position from SHOW BINLOG EVENTS, after an Xid or COMMIT event", p, p.Offset, p.File, err)
	}
	defer r.Close()
	if r.RowNumber() == 0 {
		return nil
	}
	typ, _ := r.GetStringByName(0, "Event_type")
	info, _ := r.GetStringByName(0, "Info")
	t := strings.ToLower(typ)
	if txStart[t] {
		return nil
	}
	if t == "query" && !strings.HasPrefix(strings.ToUpper(strings.TrimSpace(info)), "COMMIT") {
		return nil // BEGIN, or a statement (DDL) that is a transaction alone
	}
	return fmt.Errorf("position %s is inside a transaction (the event there is %s): resume after an Xid or COMMIT event (see SHOW BINLOG EVENTS IN '%s')", p, strings.Clone(typ), p.File)
}

func mustLogs(conn *client.Conn) []binlogFile {
	logs, _ := binaryLogs(conn)
	return logs
}
