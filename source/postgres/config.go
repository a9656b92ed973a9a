package postgres

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outboxrelay/schema"

	"github.com/outboxrelay/outboxrelay/source"
	"github.com/rs/zerolog"
)

// Create modes.
const (
	CreateAuto  = "auto"
	CreateNever = "never"
)

// Start modes.
const (
	StartCurrent  = "current"
	StartSnapshot = "snapshot"
)

// HeartbeatPrefix is the logical message prefix of the heartbeat.
const HeartbeatPrefix = "outboxrelay-heartbeat"

// Config of the PostgreSQL source.
type Config struct {
	// DSN is a libpq connection string or URL
	// ("postgres://relay:pw@db:5432/shop?sslmode=require"). Required. It is
	// never logged. The user needs the REPLICATION attribute, CONNECT on the
	// database, and (for create: auto) CREATE on the database and ownership
	// of the outbox tables to create the publication.
	DSN string `yaml:"dsn"`
	// DSNFile is a file holding the DSN instead, read at every
	// (re)connection. Set it or DSN, not both.
	DSNFile string `yaml:"dsn_file"`
	// PasswordFile is a file holding only the password, for a DSN without
	// one; read at every (re)connection.
	PasswordFile string `yaml:"password_file"`
	// Slot is the logical replication slot's name. Default "outboxrelay".
	// One relay per slot: a second one waits until the first lets go.
	Slot string `yaml:"slot"`
	// Publication names the publication the slot streams. Default
	// "outboxrelay".
	Publication string `yaml:"publication"`
	// Tables lists the outbox tables: "schema.table" or /regexp/ on
	// "schema.table", resolved against the catalog at start. Required
	// unless MessagePrefixes is set.
	Tables []string `yaml:"tables"`
	// Create says whether the relay creates a missing publication and slot
	// ("auto", default) or stops with the SQL to run ("never").
	Create string `yaml:"create"`
	// Start says what a relay with no checkpoint and no slot does:
	// "current" (default) streams from the slot it creates, so rows
	// already in the outbox tables are not published; "snapshot" creates
	// the slot with an exported snapshot, publishes the rows the outbox
	// tables hold in that snapshot, then streams from the slot's
	// consistent point (docs/configuration.md). It needs create: auto. A
	// stored checkpoint, or an existing slot, always wins over it.
	Start string `yaml:"start"`
	// StatusInterval is how often the relay reports its positions to the
	// server (at the latest; it also answers every keepalive that asks).
	// Default 10s. Keep it well below the server's wal_sender_timeout.
	StatusInterval time.Duration `yaml:"status_interval"`
	// Heartbeat, when not 0, emits a non-transactional logical message
	// (prefix "outboxrelay-heartbeat") on that interval on a normal
	// connection, so that the slot advances even when nothing at all is
	// written to the database. Default 0 (off).
	Heartbeat time.Duration `yaml:"heartbeat"`
	// MessagePrefixes lists the prefixes of transactional logical decoding
	// messages that carry outbox events (see the package documentation).
	// Default none.
	MessagePrefixes []string `yaml:"message_prefixes"`
	// ConnectTimeout bounds each connection attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// replay: a reader opened for `outboxrelay replay` (OpenOptions):
	// stream from a temporary copy of the slot, never moving the relay's.
	replay bool
	// checkTable is the relay's check of each outbox table at open
	// (OpenOptions.CheckTable), before the publication or slot is made.
	checkTable source.TableCheck
	// takeOver: the relay holds the fence (OpenOptions.TakeOver).
	takeOver bool

	password string // from PasswordFile (secrets.go)
}

// SetDefaults fills the zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Slot == "" {
		c.Slot = "outboxrelay"
	}
	if c.Publication == "" {
		c.Publication = "outboxrelay"
	}
	if c.Create == "" {
		c.Create = CreateAuto
	}
	if c.Start == "" {
		c.Start = StartCurrent
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 10 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
}

// slotName is what Postgres accepts as a replication slot name; the name is
// also written unquoted into replication commands.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate names the field at fault. It never quotes the DSN, which may
// hold a password.
func (c *Config) Validate() error {
	var errs []error
	errs = append(errs, c.validateSecrets()...)
	if c.DSN != "" {
		if _, err := pgconn.ParseConfig(c.DSN); err != nil {
			errs = append(errs, fmt.Errorf("dsn: not a valid connection string or URL (%s)", redactErr(err, c.DSN)))
		}
	}
	if !slotName.MatchString(c.Slot) {
		errs = append(errs, fmt.Errorf("slot: %q is not a valid replication slot name (lower-case letters, digits and _, at most 63)", c.Slot))
	}
	if c.Publication == "" || len(c.Publication) > 63 {
		errs = append(errs, fmt.Errorf("publication: %q must have 1 to 63 bytes", c.Publication))
	}
	if len(c.Tables) > 0 || len(c.MessagePrefixes) == 0 {
		if _, err := schema.NewFilter(c.Tables); err != nil {
			errs = append(errs, fmt.Errorf("tables: %w", err))
		}
	}
	switch c.Create {
	case CreateAuto, CreateNever:
	default:
		errs = append(errs, fmt.Errorf("create: %q is not one of auto, never", c.Create))
	}
	switch c.Start {
	case StartCurrent:
	case StartSnapshot:
		if c.Create != CreateAuto {
			errs = append(errs, fmt.Errorf("start: snapshot needs create: auto: the relay must create the replication slot itself, with the snapshot it exports (or use start: current with a slot you create)"))
		}
		if len(c.Tables) == 0 {
			errs = append(errs, fmt.Errorf("start: snapshot reads the outbox tables: list them in tables (logical messages, message_prefixes, leave nothing to read)"))
		}
	default:
		errs = append(errs, fmt.Errorf("start: %q is not one of current, snapshot", c.Start))
	}
	if c.StatusInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("status_interval: %s is too short (min 100ms)", c.StatusInterval))
	}
	if c.Heartbeat != 0 && c.Heartbeat < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("heartbeat: %s is too short (0 turns it off, else min 100ms)", c.Heartbeat))
	}
	for i, p := range c.MessagePrefixes {
		if p == "" || p == HeartbeatPrefix {
			errs = append(errs, fmt.Errorf("message_prefixes: entry %d %q: want a non-empty prefix other than %s", i, p, HeartbeatPrefix))
		}
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("connect_timeout: %s must not be negative", c.ConnectTimeout))
	}
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
