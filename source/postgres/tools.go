package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// The position tools (outboxrelay checkpoint show/set) ask the server about
// positions without streaming.

func (s *Source) connect(ctx context.Context) (*pgx.Conn, *Config, error) {
	cfg, err := s.cfg.withSecrets()
	if err != nil {
		return nil, nil, err
	}
	cfg.SetDefaults()
	pgxCfg, err := cfg.parse()
	if err != nil {
		return nil, nil, err
	}
	pgxCfg.ConnectTimeout = cfg.ConnectTimeout
	conn, err := pgx.ConnectConfig(ctx, pgxCfg)
	if err != nil {
		return nil, nil, hidePassword(explain("connect to "+describe(&pgxCfg.Config), err, &cfg), cfg.DSN)
	}
	return conn, &cfg, nil
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}

// Compare orders two LSNs' text forms.
func (s *Source) Compare(a, b string) (int, error) {
	pa, err := ParsePosition(a)
	if err != nil {
		return 0, err
	}
	pb, err := ParsePosition(b)
	if err != nil {
		return 0, err
	}
	return pa.Compare(pb), nil
}

// Status reports the server's WAL position now, the slot's state, and how
// far pos (if not "") is behind.
func (s *Source) Status(ctx context.Context, pos string) (source.PositionStatus, error) {
	st := source.PositionStatus{BehindBytes: -1}
	conn, cfg, err := s.connect(ctx)
	if err != nil {
		return st, err
	}
	defer closeConn(ctx, conn)
	var cur string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&cur); err != nil {
		return st, fmt.Errorf("read the current WAL position: %w", err)
	}
	st.Current = cur
	slot, ok, err := readSlot(ctx, conn, cfg)
	if err != nil {
		return st, err
	}
	if !ok {
		st.Notes = append(st.Notes, fmt.Sprintf("replication slot %s does not exist", cfg.Slot))
	} else {
		var retained int64
		_ = conn.QueryRow(ctx, "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&retained)
		st.Notes = append(st.Notes, fmt.Sprintf("slot %s: confirmed_flush_lsn %s, wal_status %s, WAL retained for it %d bytes", cfg.Slot, slot.confirmedFlush, slot.walStatus, retained))
	}
	if snapshot.IsPending(pos) {
		st.Notes = append(st.Notes, snapshot.PendingNote)
		return st, nil
	}
	if pos != "" {
		p, err := ParsePosition(pos)
		if err != nil {
			return st, err
		}
		c, err := pglogrepl.ParseLSN(cur)
		if err == nil && c >= p.LSN {
			st.BehindBytes = int64(c - p.LSN)
		}
	}
	return st, nil
}

// Check verifies that the relay could resume right after pos: the slot
// exists and can stream, has not confirmed beyond pos, and pos is not
// beyond the server's WAL. It returns the position to store.
func (s *Source) Check(ctx context.Context, pos string, o source.OpenOptions) (string, error) {
	if snapshot.IsPending(pos) {
		return "", snapshot.NotSettable(pos)
	}
	p, err := ParsePosition(pos)
	if err != nil {
		return "", err
	}
	if o.Replay {
		// The replay's copy of the slot is checked when it is made: only
		// then is its confirmed_flush_lsn known.
		return p.String(), nil
	}
	conn, cfg, err := s.connect(ctx)
	if err != nil {
		return "", err
	}
	defer closeConn(ctx, conn)
	si, err := inspect(ctx, conn, cfg)
	if err != nil {
		return "", err
	}
	slot, ok, err := readSlot(ctx, conn, cfg)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("replication slot %s does not exist: a position can only be set for an existing slot (start the relay once, or create the slot)", cfg.Slot)
	}
	if err := checkSlot(slot, cfg, si.database); err != nil {
		return "", err
	}
	if _, err := startPosition(p.String(), slot, cfg, si); err != nil {
		return "", err
	}
	return p.String(), nil
}
