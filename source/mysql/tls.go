package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/preflight"

	"github.com/outboxrelay/outboxrelay/source"
)

// TLS modes, as the mysql client's --ssl-mode.
const (
	TLSDisabled       = "disabled"
	TLSPreferred      = "preferred"
	TLSRequired       = "required"
	TLSVerifyCA       = "verify-ca"
	TLSVerifyIdentity = "verify-identity"
)

// erSecureTransportRequired is MySQL's refusal of a plaintext connection
// under require_secure_transport (MariaDB answers 1045 instead).
const erSecureTransportRequired = 3159

// TLSConfig is TLS to the server, for the metadata connection and the
// binlog connection alike.
type TLSConfig struct {
	// Mode is disabled; preferred (TLS when the server offers it, its
	// certificate not verified); required (TLS, not verified); verify-ca
	// (TLS, certificate signed by CAFile or the system's roots); or
	// verify-identity (verify-ca, and the certificate names the host of
	// addr, or ServerName). Default preferred, or verify-identity when
	// CAFile is set.
	Mode string `yaml:"mode"`
	// CAFile is a PEM file with the CA certificates that sign the server's
	// certificate. Default: the system's roots (verify modes only).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// accounts created with REQUIRE X509 / SUBJECT / ISSUER. Default none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the certificate must carry under
	// verify-identity. Default: the host of addr.
	ServerName string `yaml:"server_name"`
}

func (t *TLSConfig) setDefaults() {
	if t.Mode == "" {
		t.Mode = TLSPreferred
		if t.CAFile != "" {
			t.Mode = TLSVerifyIdentity
		}
	}
}

// validateSecurity checks the TLS settings and the password's two sources.
func (c *Config) validateSecurity() []error {
	var errs []error
	t := &c.TLS
	switch t.Mode {
	case TLSDisabled, TLSPreferred, TLSRequired, TLSVerifyCA, TLSVerifyIdentity:
	default:
		errs = append(errs, fmt.Errorf("tls.mode: %q is not one of disabled, preferred, required, verify-ca, verify-identity", t.Mode))
	}
	if t.Mode == TLSDisabled && (t.CAFile != "" || t.CertFile != "") {
		errs = append(errs, errors.New("tls.mode is disabled but tls.ca_file or tls.cert_file is set: remove them or choose another tls.mode"))
	}
	if t.CAFile != "" && (t.Mode == TLSPreferred || t.Mode == TLSRequired) {
		errs = append(errs, fmt.Errorf("tls.ca_file is set but tls.mode %s does not verify the certificate: set tls.mode to verify-ca or verify-identity", t.Mode))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file and tls.key_file: set both (a client certificate and its key) or neither"))
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, errors.New("password and password_file are both set: set only one"))
	}
	return errs
}

// tlsClientConfig is the tls.Config of the mode, nil when disabled.
func (c *Config) tlsClientConfig() (*tls.Config, error) {
	t := &c.TLS
	if t.Mode == TLSDisabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, source.Permanent(&tlsFailure{fmt.Errorf("source.mysql.tls.ca_file: %w", err)})
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, source.Permanent(&tlsFailure{fmt.Errorf("source.mysql.tls.ca_file: %s holds no PEM certificate", t.CAFile)})
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, source.Permanent(&tlsFailure{fmt.Errorf("source.mysql.tls.cert_file and key_file: %w", err)})
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	switch t.Mode {
	case TLSPreferred, TLSRequired:
		tc.InsecureSkipVerify = true //nolint:gosec // these modes encrypt without verifying, as the mysql client's do
	case TLSVerifyCA:
		// The chain must verify; the name is not checked.
		tc.InsecureSkipVerify = true //nolint:gosec // verified below
		roots := tc.RootCAs
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	case TLSVerifyIdentity:
		tc.ServerName = t.ServerName
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(c.Addr)
		}
	}
	return tc, nil
}

// dial opens a client connection with the configured TLS and password
// (read from PasswordFile now, so a rotated one is used from the next
// reconnection on). It leaves in c.Password the password used and in
// c.tlsUsed the TLS configuration the connection ended up with (nil:
// plaintext), for the binlog connection to do the same.
func (c *Config) dial(ctx context.Context, opts ...client.Option) (*client.Conn, error) {
	c.TLS.setDefaults()
	if c.PasswordFile != "" {
		pw, err := readSecret(c.PasswordFile)
		if err != nil {
			return nil, source.Permanent(fmt.Errorf("source.mysql.password_file: %w", err))
		}
		c.Password = pw
	}
	tc, err := c.tlsClientConfig()
	if err != nil {
		return nil, err
	}
	var gc *greetingConn
	d := &net.Dialer{Timeout: c.ConnectTimeout}
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		gc = &greetingConn{Conn: conn, preferred: c.TLS.Mode == TLSPreferred}
		return gc, nil
	}
	useTLS := func(cl *client.Conn) error {
		cl.SetTLSConfig(tc)
		gc.client = cl
		return nil
	}
	conn, err := client.ConnectWithDialer(ctx, "", c.Addr, c.User, c.Password, "", dialer, append([]client.Option{useTLS}, opts...)...)
	c.tlsUsed = tc
	if gc != nil && gc.plain {
		c.tlsUsed = nil
	}
	if err != nil {
		return nil, c.explainConnect(err, gc)
	}
	return conn, nil
}

// greetingConn reads the server's capabilities in its greeting as it
// passes. Under tls.mode preferred, when the server does not offer TLS, it
// takes TLS off the connection before go-mysql decides (go-mysql would
// otherwise refuse a server without TLS): the greeting is read before
// the client's first word, so nothing was sent yet. One connection, and
// never a failed attempt that the server would count against the host.
type greetingConn struct {
	net.Conn
	preferred bool
	client    *client.Conn
	seen      []byte
	done      bool
	offersTLS bool
	plain     bool // TLS was taken off
}

func (g *greetingConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if !g.done && n > 0 {
		g.seen = append(g.seen, p[:n]...)
		if caps, ok := greetingCaps(g.seen); ok {
			g.done, g.seen = true, nil
			g.offersTLS = uint32(caps)&gomysql.CLIENT_SSL != 0
			if !g.offersTLS && g.preferred && g.client != nil {
				g.client.SetTLSConfig(nil)
				g.plain = true
			}
		}
	}
	return n, err
}

// greetingCaps parses the lower capability flags of a protocol 10
// handshake packet: 4 bytes of header, the protocol version, the server
// version (NUL-terminated), a 4-byte connection id, 8 bytes of auth data
// and a filler byte. ok is false until enough has arrived, and for
// anything else (an error packet).
func greetingCaps(b []byte) (uint16, bool) {
	if len(b) < 5 || b[4] != 10 {
		return 0, false
	}
	end := -1
	for i := 5; i < len(b); i++ {
		if b[i] == 0 {
			end = i
			break
		}
	}
	at := end + 1 + 4 + 8 + 1
	if end < 0 || len(b) < at+2 {
		return 0, false
	}
	return uint16(b[at]) | uint16(b[at+1])<<8, true
}

// explainConnect marks as permanent the connection failures that retrying
// cannot fix, and says which setting to change.
func (c *Config) explainConnect(err error, gc *greetingConn) error {
	base := fmt.Errorf("connect to %s as %s: %w", c.Addr, c.User, err)
	var (
		hostErr   x509.HostnameError
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		verr      *tls.CertificateVerificationError
		me        *gomysql.MyError
	)
	encrypted := c.tlsUsed != nil
	switch {
	case errors.As(err, &hostErr):
		return source.Permanent(&tlsFailure{fmt.Errorf("%w: the server's certificate does not name the host the relay connects to: set source.mysql.addr to a name it carries, or source.mysql.tls.server_name (or tls.mode: verify-ca to check only the CA)", base)})
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &verr):
		return source.Permanent(&tlsFailure{fmt.Errorf("%w: the server's certificate is not trusted: set source.mysql.tls.ca_file to the PEM file of the CA that signed it", base)})
	case gc != nil && gc.done && !gc.offersTLS && encrypted:
		return source.Permanent(&tlsFailure{fmt.Errorf("%w: source.mysql.tls.mode is %s but the server does not offer TLS: enable TLS on the server (ssl_cert, ssl_key) or set source.mysql.tls.mode: preferred", base, c.TLS.Mode)})
	case errors.As(err, &me) && me.Code == erSecureTransportRequired:
		return source.Permanent(&tlsFailure{fmt.Errorf("%w: the server requires TLS: set source.mysql.tls.mode to verify-identity (with tls.ca_file) or required", base)})
	case errors.As(err, &me) && (me.Code == gomysql.ER_ACCESS_DENIED_ERROR || me.Code == gomysql.ER_ACCESS_DENIED_NO_PASSWORD_ERROR):
		fix := "check source.mysql.user and source.mysql.password (or source.mysql.password_file)"
		switch {
		case !encrypted && gc != nil && gc.offersTLS:
			// MariaDB answers a plaintext login under
			// require_secure_transport with this same error.
			fix += fmt.Sprintf("; the connection was not encrypted (source.mysql.tls.mode: %s) and the server offers TLS: if it requires it (require_secure_transport=ON, or the account was created with REQUIRE SSL), set source.mysql.tls.mode to verify-identity (or required)", c.TLS.Mode)
		case encrypted && c.TLS.CertFile == "":
			fix += "; if the account was created with REQUIRE X509 (or SUBJECT/ISSUER), set source.mysql.tls.cert_file and key_file"
		}
		return source.Permanent(fmt.Errorf("%w: %s", base, fix))
	}
	return base
}

// tlsFailure marks the connection failures that a source.mysql.tls
// setting causes.
type tlsFailure struct{ err error }

func (e *tlsFailure) Error() string { return e.err.Error() }
func (e *tlsFailure) Unwrap() error { return e.err }

// readSecret reads a secret file, without its trailing newline.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), err
}

// tlsCheck is `outboxrelay check`'s mysql.tls: whether the connection is
// encrypted and the server's certificate verified.
func tlsCheck(conn *client.Conn, cfg *Config) preflight.Check {
	const name = "mysql.tls"
	tc, ok := conn.Conn.Conn.(*tls.Conn)
	if !ok {
		return preflight.Warn(name, fmt.Sprintf("not encrypted (source.mysql.tls.mode: %s): the password and the binlog travel in clear", cfg.TLS.Mode),
			"enable TLS on the server (ssl_cert, ssl_key) and set source.mysql.tls.mode: verify-identity with source.mysql.tls.ca_file")
	}
	st := tc.ConnectionState()
	d := fmt.Sprintf("%s (source.mysql.tls.mode: %s)", tls.VersionName(st.Version), cfg.TLS.Mode)
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		d += fmt.Sprintf(", certificate %s issued by %s, valid until %s", leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format("2006-01-02"))
	}
	if cfg.TLS.Mode == TLSPreferred || cfg.TLS.Mode == TLSRequired {
		return preflight.Warn(name, d+": encrypted, but the certificate is not verified",
			"set source.mysql.tls.mode: verify-identity and source.mysql.tls.ca_file to the CA that signed the server's certificate")
	}
	return preflight.Pass(name, "%s, verified", d)
}

// connectFailure is the check for a failed connection: mysql.tls when a
// certificate is at fault, else mysql.connect.
func connectFailure(err error, cfg *Config) preflight.Check {
	var tf *tlsFailure
	if errors.As(err, &tf) {
		return preflight.Fail("mysql.tls", err.Error(), "change the source.mysql.tls setting named above")
	}
	return preflight.Fail("mysql.connect", err.Error(),
		fmt.Sprintf("check source.mysql.addr (%s), source.mysql.user and the password (OUTBOXRELAY_SOURCE_MYSQL_PASSWORD or source.mysql.password_file); the user must be allowed to log in from this host", cfg.Addr))
}
