package postgres

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outboxrelay/source"
)

// SQLSTATE codes the source explains.
const (
	codeObjectInUse          = "55006" // replication slot is active for PID n
	codeInsufficientPriv     = "42501"
	codeConfigLimitExceeded  = "53400" // all replication slots are in use
	codeTooManyConnections   = "53300" // max_wal_senders / max_connections
	codeUndefinedObject      = "42704" // replication slot does not exist
	codeObjectNotInPrereqSt  = "55000" // e.g. logical decoding requires wal_level >= logical
	codeInvalidAuthorization = "28000" // no pg_hba.conf entry for replication connection
	codeInvalidCatalog       = "3D000" // database does not exist
)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns dsn with its password masked, for logs and errors.
func Redact(dsn string) string {
	if strings.Contains(dsn, "://") {
		if u, err := url.Parse(dsn); err == nil {
			return u.Redacted()
		}
		return "(unparsable URL)"
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// dsnPassword extracts the password from dsn (URL or key=value form), so
// that any error text quoting it can be masked.
func dsnPassword(dsn string) string {
	if strings.Contains(dsn, "://") {
		if u, err := url.Parse(dsn); err == nil {
			if pw, ok := u.User.Password(); ok {
				return pw
			}
		}
		return ""
	}
	m := kvPassword.FindStringSubmatch(dsn)
	if m == nil {
		return ""
	}
	return strings.Trim(m[2], "'")
}

// redactErr renders err with the DSN and its password masked.
func redactErr(err error, dsn string) string {
	s := err.Error()
	if dsn != "" {
		s = strings.ReplaceAll(s, dsn, Redact(dsn))
	}
	if pw := dsnPassword(dsn); len(pw) >= 3 {
		s = strings.ReplaceAll(s, pw, "xxxxx")
	}
	return s
}

// redacted is an error whose text has the DSN's password masked but which
// still unwraps to the original (for errors.As on *pgconn.PgError).
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// hidePassword wraps err so that its text never shows the DSN's password.
func hidePassword(err error, dsn string) error {
	if err == nil {
		return nil
	}
	// It still unwraps to err, so a permanent error stays permanent.
	return &redacted{msg: redactErr(err, dsn), err: err}
}

// describe names the server and user of a parsed config, never the password.
func describe(c *pgconn.Config) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// explain turns a server error of operation op into one that says what to
// do, marking as permanent what retrying cannot fix.
func explain(op string, err error, c *Config) error {
	var pgErr *pgconn.PgError
	isPg := errors.As(err, &pgErr)
	if e := explainSecurity(op, err, pgErr); e != nil { // secrets.go
		return e
	}
	if !isPg {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch pgErr.Code {
	case codeObjectInUse:
		// Retryable: the other relay may stop, and then this one takes over.
		return fmt.Errorf("%s: another relay (or client) holds replication slot %q; waiting for it to let go: %w", op, c.Slot, err)
	case codeInsufficientPriv:
		return source.Permanent(fmt.Errorf("%s: permission denied (%s): the relay's user needs the REPLICATION attribute (ALTER ROLE … WITH REPLICATION) to stream a slot, CREATE on the database and ownership of the outbox tables to create the publication; or create the publication and slot as an administrator and set source.postgres.create: never: %w", op, pgErr.Message, err))
	case codeConfigLimitExceeded:
		return source.Permanent(fmt.Errorf("%s: %s: every replication slot is taken; drop an unused slot (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots (needs a server restart): %w", op, pgErr.Message, err))
	case codeTooManyConnections:
		// Retryable: another WAL sender may disconnect.
		return fmt.Errorf("%s: %s: all WAL senders or connections are busy; raise max_wal_senders or max_connections if this persists: %w", op, pgErr.Message, err)
	case codeObjectNotInPrereqSt:
		if strings.Contains(pgErr.Message, "wal_level") {
			return source.Permanent(fmt.Errorf("%s: %s: set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the server: %w", op, pgErr.Message, err))
		}
	case codeInvalidCatalog:
		return source.Permanent(fmt.Errorf("%s: %s: correct the database name in source.postgres.dsn, or create the database: %w", op, pgErr.Message, err))
	case codeInvalidAuthorization:
		return source.Permanent(fmt.Errorf("%s: %s: pg_hba.conf must allow a replication connection for this user (a line with database \"replication\" does not cover logical replication: the database name must match): %w", op, pgErr.Message, err))
	}
	return fmt.Errorf("%s: %w", op, err)
}
