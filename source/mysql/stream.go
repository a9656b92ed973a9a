package mysql

import (
	"context"
	"fmt"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// eventSource is the binlog as the reader consumes it: events in order, and
// the ability to read again from an earlier event (a prepared XA
// transaction at its XA COMMIT, a large transaction with savepoints once
// its end is known). Tests provide one over encoded events.
type eventSource interface {
	next(ctx context.Context) (*replication.BinlogEvent, error)
	seek(file string, offset uint32) error
	close()
}

// syncerSource reads the binlog over a replica connection (go-mysql
// BinlogSyncer). Seeking closes the connection and opens a new one with the
// same server_id, so that a relay never holds two.
type syncerSource struct {
	cfg      replication.BinlogSyncerConfig
	syncer   *replication.BinlogSyncer
	streamer *replication.BinlogStreamer
}

func (s *syncerSource) startFile(file string, offset uint32) error {
	s.close()
	s.syncer = replication.NewBinlogSyncer(s.cfg)
	st, err := s.syncer.StartSync(gomysql.Position{Name: file, Pos: offset})
	if err != nil {
		return fmt.Errorf("start binlog stream at %s:%d: %w", file, offset, err)
	}
	s.streamer = st
	return nil
}

func (s *syncerSource) startGTID(set gomysql.GTIDSet) error {
	s.close()
	s.syncer = replication.NewBinlogSyncer(s.cfg)
	st, err := s.syncer.StartSyncGTID(set)
	if err != nil {
		return fmt.Errorf("start binlog stream at GTID set %s: %w", set, err)
	}
	s.streamer = st
	return nil
}

func (s *syncerSource) next(ctx context.Context) (*replication.BinlogEvent, error) {
	return s.streamer.GetEvent(ctx)
}

func (s *syncerSource) seek(file string, offset uint32) error { return s.startFile(file, offset) }

func (s *syncerSource) close() {
	if s.syncer != nil {
		s.syncer.Close()
		s.syncer, s.streamer = nil, nil
	}
}
