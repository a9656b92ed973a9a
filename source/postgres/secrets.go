package postgres

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboxrelay/outboxrelay/preflight"

	"github.com/outboxrelay/outboxrelay/source"
)

// Secrets and TLS. TLS is the DSN's business (sslmode, sslrootcert,
// sslcert, sslkey, as libpq's), and pgx applies it to the normal and the
// replication connection alike (connectReplication copies the parsed
// config). What the relay adds: the DSN or only its password may come
// from a file (a Docker or Kubernetes secret), read at every
// (re)connection, and TLS and password failures stop the relay with the
// fix instead of being retried forever.

// codeInvalidPassword is "password authentication failed".
const codeInvalidPassword = "28P01"

// validateSecrets checks the DSN's sources, never quoting the DSN.
func (c *Config) validateSecrets() []error {
	var errs []error
	switch {
	case c.DSN != "" && c.DSNFile != "":
		errs = append(errs, errors.New("dsn and dsn_file are both set: set only one"))
	case c.DSN == "" && c.DSNFile == "":
		errs = append(errs, errors.New("dsn: required (or dsn_file)"))
	}
	if c.PasswordFile != "" && dsnPassword(c.DSN) != "" {
		errs = append(errs, errors.New("password_file is set and dsn carries a password too: set only one"))
	}
	return errs
}

// withSecrets returns c with the DSN read from DSNFile and the password
// from PasswordFile (applied by parse). Errors name the key, never the
// content.
func (c Config) withSecrets() (Config, error) {
	if c.DSNFile != "" {
		dsn, err := readSecret(c.DSNFile)
		if err != nil {
			return c, source.Permanent(fmt.Errorf("source.postgres.dsn_file: %w", err))
		}
		if c.DSN = dsn; dsn == "" {
			return c, source.Permanent(fmt.Errorf("source.postgres.dsn_file: %s is empty", c.DSNFile))
		}
	}
	if c.PasswordFile != "" {
		pw, err := readSecret(c.PasswordFile)
		if err != nil {
			return c, source.Permanent(fmt.Errorf("source.postgres.password_file: %w", err))
		}
		if dsnPassword(c.DSN) != "" {
			return c, source.Permanent(errors.New("source.postgres.password_file is set and the DSN (from source.postgres.dsn_file) carries a password too: set only one"))
		}
		c.password = pw
	}
	return c, nil
}

// parse parses the DSN, with the password from PasswordFile if set.
func (c *Config) parse() (*pgx.ConnConfig, error) {
	pc, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return nil, source.Permanent(fmt.Errorf("source.postgres.dsn: %s", redactErr(err, c.DSN)))
	}
	if c.password != "" {
		pc.Password = c.password // every fallback host uses it too
	}
	return pc, nil
}

// explainSecurity recognises TLS and authentication failures, which
// retrying cannot fix; nil for anything else.
func explainSecurity(op string, err error, pgErr *pgconn.PgError) error {
	var (
		hostErr   x509.HostnameError
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		verr      *tls.CertificateVerificationError
	)
	switch {
	case pgErr != nil && pgErr.Code == codeInvalidPassword:
		return source.Permanent(fmt.Errorf("%s: %s: check the user and password in source.postgres.dsn (or source.postgres.password_file / dsn_file): %w", op, pgErr.Message, err))
	case pgErr != nil && pgErr.Code == codeInvalidAuthorization && strings.Contains(pgErr.Message, "no encryption"):
		return source.Permanent(fmt.Errorf("%s: %s: the server accepts this connection only over TLS (a hostssl line in pg_hba.conf): set sslmode=verify-full (with sslrootcert=the CA file) or sslmode=require in source.postgres.dsn: %w", op, pgErr.Message, err))
	case errors.As(err, &hostErr):
		return source.Permanent(fmt.Errorf("%s: the server's certificate does not name the host in source.postgres.dsn: connect by a name it carries, or use sslmode=verify-ca: %w", op, err))
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &verr):
		return source.Permanent(fmt.Errorf("%s: the server's certificate is not trusted: set sslrootcert in source.postgres.dsn to the PEM file of the CA that signed it: %w", op, err))
	}
	return nil
}

// readSecret reads a secret file, without its trailing newline.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), err
}

// pgTLS is `outboxrelay check`'s postgres.tls: whether the connection is
// encrypted and the server's certificate verified (the DSN's sslmode).
func pgTLS(conn *pgx.Conn) preflight.Check {
	const name = "postgres.tls"
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		return preflight.Warn(name, "not encrypted: the password and the WAL stream travel in clear",
			"enable ssl on the server and set sslmode=verify-full and sslrootcert=CA-FILE in source.postgres.dsn")
	}
	st := tc.ConnectionState()
	d := tls.VersionName(st.Version)
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		d += fmt.Sprintf(", certificate %s issued by %s, valid until %s", leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format("2006-01-02"))
	}
	switch c := conn.Config().TLSConfig; {
	case c != nil && c.ServerName != "" && !c.InsecureSkipVerify:
		return preflight.Pass(name, "%s, verified with its host name (sslmode=verify-full)", d)
	case c != nil && c.VerifyPeerCertificate != nil:
		return preflight.Warn(name, d+", CA verified but not the host name (sslmode=verify-ca)", "set sslmode=verify-full in source.postgres.dsn")
	}
	return preflight.Warn(name, d+": encrypted, but the certificate is not verified (sslmode require or prefer)",
		"set sslmode=verify-full and sslrootcert=CA-FILE in source.postgres.dsn")
}
