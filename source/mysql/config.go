// Package mysql is the MySQL/MariaDB source: it tails the binlog with
// go-mysql's BinlogSyncer (a replica connection, not polling), decodes only
// the INSERTs of outbox tables, and hands out committed transactions with the
// binlog position (and GTID set) at which each ends.
//
// It owns binlog connections and positions; it must not know about mapping,
// Kafka or checkpoint storage.
package mysql

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/outboxrelay/outboxrelay/schema"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/source"
)

// Config of the MySQL/MariaDB source.
type Config struct {
	// Flavor is "mysql" or "mariadb". Default: detected from the server.
	Flavor string `yaml:"flavor"`
	// Addr is host:port. Default "127.0.0.1:3306".
	Addr string `yaml:"addr"`
	// User needs REPLICATION SLAVE and REPLICATION CLIENT (MySQL) /
	// BINLOG MONITOR (MariaDB), and SELECT on the outbox tables' metadata.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// PasswordFile is a file holding the password, read at every
	// (re)connection (tls.go). Set it or Password, not both.
	PasswordFile string `yaml:"password_file"`
	// TLS to the server (tls.go). Default mode preferred.
	TLS TLSConfig `yaml:"tls"`
	// ServerID is this relay's replica id; required and unique among the
	// server's replicas: two readers with one id disconnect each other.
	ServerID uint32 `yaml:"server_id"`
	// Tables lists the outbox tables: "schema.table" or /regexp/ on
	// "schema.table". Required.
	Tables []string `yaml:"tables"`
	// Start says where to begin when no checkpoint exists: "current" (the
	// server's position now; default), "earliest" (the oldest binlog still
	// on the server), "snapshot" (publish the rows the outbox tables hold
	// now, then stream from the binlog position of that snapshot; MariaDB
	// only, docs/configuration.md) or a position such as
	// "mysql-bin.000003:1234".
	Start string `yaml:"start"`
	// SnapshotLock is how start: snapshot finds the binlog position of
	// its snapshot on MySQL, which (unlike MariaDB) cannot tell it: ""
	// (default) refuses start: snapshot on MySQL; "flush-tables" holds
	// FLUSH TABLES WITH READ LOCK (needs RELOAD) for the moment it takes
	// to start the snapshot's transaction and read the binlog position,
	// stalling every writer meanwhile (bounded by lock_wait_timeout 10s).
	// MariaDB needs no lock and ignores it.
	SnapshotLock string `yaml:"snapshot_lock"`
	// Heartbeat is how often the server sends a heartbeat on an idle
	// binlog; a connection silent for 3× this long counts as broken.
	// Default 5s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ConnectTimeout bounds each connection attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// replay: a reader opened for `outboxrelay replay` (OpenOptions):
	// with binlog_row_metadata MINIMAL it refuses to cross a DDL on an
	// outbox table.
	replay bool
	// checkTable is the relay's check of each outbox table at open
	// (OpenOptions.CheckTable).
	checkTable source.TableCheck

	// deriveGTIDByReading makes a MariaDB reader derive a start
	// position's GTID set from the binlog file (its GTID list event and
	// the GTIDs up to the offset) as a MySQL reader does, instead of
	// asking BINLOG_GTID_POS: tests run MySQL's path on MariaDB with it.
	deriveGTIDByReading bool
	// tlsUsed is the TLS of the last connection made with this config (nil:
	// plaintext), set by dial for the binlog connection to match.
	tlsUsed *tls.Config
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:3306"
	}
	if c.Start == "" {
		c.Start = "current"
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	c.TLS.setDefaults()
}

// Validate names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	switch c.Flavor {
	case "", "mysql", "mariadb":
	default:
		errs = append(errs, fmt.Errorf("flavor: %q is not one of mysql, mariadb", c.Flavor))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr: %q is not host:port", c.Addr))
	}
	if c.User == "" {
		errs = append(errs, errors.New("user: required"))
	}
	if c.ServerID == 0 {
		errs = append(errs, errors.New("server_id: required: choose a number unique among the server's replicas (two binlog readers with one id disconnect each other)"))
	}
	if _, err := schema.NewFilter(c.Tables); err != nil {
		errs = append(errs, fmt.Errorf("tables: %w", err))
	}
	switch c.Start {
	case "current", "earliest", "snapshot":
	default:
		if _, err := ParsePosition(c.Start); err != nil {
			errs = append(errs, fmt.Errorf("start: want current, earliest, snapshot or a position: %w", err))
		}
	}
	switch c.SnapshotLock {
	case "", SnapshotLockFlushTables:
	default:
		errs = append(errs, fmt.Errorf("snapshot_lock: %q is not one of flush-tables or empty", c.SnapshotLock))
	}
	if c.Start == "snapshot" && c.Flavor == "mysql" && c.SnapshotLock == "" {
		errs = append(errs, fmt.Errorf("start: %w", ErrSnapshotMySQL))
	}
	if c.Heartbeat < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("heartbeat: %s is too short (min 100ms)", c.Heartbeat))
	}
	errs = append(errs, c.validateSecurity()...)
	return errors.Join(errs...)
}

// OutboxTables lists the configured outbox tables (source.Config).
func (c *Config) OutboxTables() []string { return c.Tables }

// NewSource returns the source for c (source.Config).
func (c *Config) NewSource(log zerolog.Logger) source.Source { return NewSource(*c, log) }

var (
	_ source.Config = (*Config)(nil)
	_ source.Source = (*Source)(nil)
)
