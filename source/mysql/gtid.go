package mysql

import (
	"fmt"
	"sync"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/google/uuid"
)

// gtidAdd is one transaction's GTID, as the binlog names it.
type gtidAdd struct {
	// MySQL: server uuid, tag ("" untagged) and sequence number.
	sid uuid.UUID
	tag gomysql.Tag
	gno int64
	// MariaDB.
	maria gomysql.MariadbGTID
}

// rebaseEvery bounds the additions a snapshot replays when materialized,
// and so the memory snapshots share.
const rebaseEvery = 4096

// gtidState is the executed GTID set as the reader advances. Every
// transaction end needs the set at that point, but only the few that become
// checkpoints need its text: so snapshots are cheap (a base text and a
// prefix of the additions since) and their text is built on demand.
type gtidState struct {
	flavor string
	base   string    // the set's text at the last rebase
	adds   []gtidAdd // since base; append-only, never rewritten in place
}

func newGTIDState(flavor, set string) (*gtidState, error) {
	if _, err := gomysql.ParseGTIDSet(flavor, set); err != nil {
		return nil, fmt.Errorf("bad %s GTID set %q: %w", flavor, set, err)
	}
	return &gtidState{flavor: flavor, base: set}, nil
}

// add records one committed transaction's GTID.
func (s *gtidState) add(a gtidAdd) error {
	s.adds = append(s.adds, a)
	if len(s.adds) < rebaseEvery {
		return nil
	}
	text, err := materialize(s.flavor, s.base, s.adds)
	if err != nil {
		return err
	}
	// Snapshots keep the old slice; start a new one.
	s.base, s.adds = text, nil
	return nil
}

func (s *gtidState) snapshot() *gtidSnap {
	return &gtidSnap{flavor: s.flavor, base: s.base, adds: s.adds[:len(s.adds):len(s.adds)]}
}

// gtidSnap is an immutable GTID set, materialized once when asked for.
type gtidSnap struct {
	flavor string
	base   string
	adds   []gtidAdd
	once   sync.Once
	text   string
}

func (g *gtidSnap) String() string {
	g.once.Do(func() {
		if len(g.adds) == 0 {
			g.text = g.base
			return
		}
		// The base parsed when it was made and every addition is well
		// formed, so this cannot fail; fall back to the base if it did.
		t, err := materialize(g.flavor, g.base, g.adds)
		if err != nil {
			t = g.base
		}
		g.text, g.adds = t, nil
	})
	return g.text
}

func materialize(flavor, base string, adds []gtidAdd) (string, error) {
	set, err := gomysql.ParseGTIDSet(flavor, base)
	if err != nil {
		return "", err
	}
	for i := range adds {
		a := &adds[i]
		switch s := set.(type) {
		case *gomysql.MysqlGTIDSet:
			s.AddGTIDWithTag(a.sid, a.tag, a.gno)
		case *gomysql.MariadbGTIDSet:
			g := a.maria
			if err := s.AddSet(&g); err != nil {
				return "", err
			}
		}
	}
	return set.String(), nil
}
