package postgres

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/outboxrelay/outboxrelay/source"
)

// Position is a point in the server's WAL:
//
//   - with Rows == 0, a boundary: for a transaction, the LSN right after
//     its commit record; for a quiet stretch, the WAL end the server
//     reported. Everything that committed before it is delivered.
//   - with Rows > 0, a point inside a committed transaction: LSN is where
//     its commit record starts (pgoutput's final_lsn, the transaction's
//     id) and its first Rows rows are delivered. Streaming from LSN sends
//     that transaction again (logical decoding skips only commits that
//     start before the start point), and the reader skips those rows.
//
// Text form: Postgres's own "X/Y" (upper-case hex halves), as in
// pg_replication_slots.confirmed_flush_lsn, then "+ROWS" inside a
// transaction: "16/B374D848", "16/B374D848+2048". Boundaries and points
// inside transactions order together: (LSN, Rows).
type Position struct {
	LSN  pglogrepl.LSN
	Rows int
}

func (p Position) String() string {
	if p.Rows > 0 {
		return p.LSN.String() + "+" + strconv.Itoa(p.Rows)
	}
	return p.LSN.String()
}

// After implements source.TxStart: p is a transaction's final_lsn.
func (p Position) After(n int) source.Position { return Position{LSN: p.LSN, Rows: n} }

// Compare orders positions by LSN, then rows delivered: -1, 0 or 1.
func (p Position) Compare(q Position) int {
	switch {
	case p.LSN < q.LSN:
		return -1
	case p.LSN > q.LSN:
		return 1
	case p.Rows < q.Rows:
		return -1
	case p.Rows > q.Rows:
		return 1
	}
	return 0
}

// ParsePosition parses "X/Y" or "X/Y+ROWS" where X and Y are 1 to 8 hex
// digits. It is stricter than pglogrepl.ParseLSN (which ignores trailing
// garbage and accepts signs) and never panics.
func ParsePosition(s string) (Position, error) {
	s = strings.TrimSpace(s)
	rows := 0
	if main, n, ok := strings.Cut(s, "+"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 || n != strconv.Itoa(v) {
			return Position{}, fmt.Errorf("position %q: %q after '+' is not a count of rows (1 or more)", s, n)
		}
		s, rows = main, v
	}
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return Position{}, fmt.Errorf("position %q: want an LSN such as 16/B374D848", s)
	}
	h, err := parseHex32(hi)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	l, err := parseHex32(lo)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	return Position{LSN: pglogrepl.LSN(uint64(h)<<32 | uint64(l)), Rows: rows}, nil
}

func parseHex32(s string) (uint32, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, fmt.Errorf("%q is not 1 to 8 hex digits", s)
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%q is not 1 to 8 hex digits", s)
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

// lsnOf returns the LSN of a position the relay hands back through Ack.
func lsnOf(p any) (pglogrepl.LSN, error) {
	switch x := p.(type) {
	case Position:
		return x.LSN, nil
	case *Position:
		return x.LSN, nil
	case fmt.Stringer:
		q, err := ParsePosition(x.String())
		return q.LSN, err
	}
	return 0, fmt.Errorf("position %v (%T) is not a postgres position", p, p)
}
