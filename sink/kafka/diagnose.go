package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/sink"
)

// SecurityError is a failure to connect that retrying cannot fix: a
// certificate that is not trusted, a broker that does not speak the
// configured protocol, credentials the broker refuses, a secret file that
// cannot be read. Setting names the configuration key to change. The text
// never holds a secret.
type SecurityError struct {
	Setting string // e.g. "kafka.tls.ca_file"
	Broker  string // host:port, when known
	Problem string // what happened, in words
	Fix     string // what to change
	Err     error
}

func (e *SecurityError) Error() string {
	if e.Fix == "" {
		return e.detail()
	}
	return e.detail() + "; fix: " + e.Fix
}

// detail is the text without the fix.
func (e *SecurityError) detail() string {
	s := "kafka"
	if e.Broker != "" {
		s += " broker " + e.Broker
	}
	if e.Problem != "" {
		s += ": " + e.Problem
	} else {
		s += ": " + e.Setting
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *SecurityError) Unwrap() error { return e.Err }

// probeTimeout bounds each diagnostic connection.
const probeTimeout = 3 * time.Second

// explain marks as permanent the connection failures that retrying cannot
// fix, explained; others (a broker down, a network outage) stay transient.
func (c *Config) explain(err error) error {
	if se := c.diagnose(err, ""); se != nil {
		return sink.Permanent(se)
	}
	return err
}

// diagnose recognises err as a TLS or authentication problem, or, for a
// connection the broker just dropped, finds out by probing whether the
// broker speaks another protocol than the one configured. broker is the
// address err is about, "" when unknown (the bootstrap brokers are then
// probed). It returns nil for anything else.
func (c *Config) diagnose(err error, broker string) *SecurityError {
	var se *SecurityError
	if errors.As(err, &se) {
		return se
	}
	var (
		hostErr   x509.HostnameError
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		verr      *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		alert     tls.AlertError
	)
	s := &c.SASL
	switch {
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed):
		return &SecurityError{Setting: "kafka.sasl.password", Broker: broker, Err: err,
			Problem: fmt.Sprintf("SASL %s authentication as %q failed", s.Mechanism, s.User),
			Fix:     "check kafka.sasl.user and kafka.sasl.password (or kafka.sasl.password_file, kafka.sasl.token_file), and that the user exists on the brokers for this mechanism (SCRAM: kafka-configs.sh --alter --entity-type users --entity-name USER --add-config 'SCRAM-SHA-512=[password=…]')"}
	case errors.Is(err, sarama.ErrUnsupportedSASLMechanism):
		return &SecurityError{Setting: "kafka.sasl.mechanism", Broker: broker, Err: err,
			Problem: fmt.Sprintf("the broker does not enable SASL mechanism %s", s.Mechanism),
			Fix:     "set kafka.sasl.mechanism to one listed in the listener's sasl.enabled.mechanisms"}
	case errors.As(err, &hostErr):
		return &SecurityError{Setting: "kafka.tls.server_name", Broker: broker, Err: err,
			Problem: "the broker's TLS certificate is not valid for the name the relay connects to",
			Fix:     "connect through a name the certificate carries (kafka.brokers), or set kafka.tls.server_name to it"}
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &verr):
		return &SecurityError{Setting: "kafka.tls.ca_file", Broker: broker, Err: err,
			Problem: "the broker's TLS certificate is not trusted",
			Fix:     "set kafka.tls.ca_file to the PEM file of the CA that signed the brokers' certificates (without it the system's roots are used)"}
	case errors.As(err, &header):
		return &SecurityError{Setting: "kafka.tls.enabled", Broker: broker, Err: err,
			Problem: "the broker does not speak TLS on this port",
			Fix:     "set kafka.tls.enabled: false, or point kafka.brokers at the port of the brokers' SSL / SASL_SSL listener"}
	case errors.As(err, &alert):
		return &SecurityError{Setting: "kafka.tls.cert_file", Broker: broker, Err: err,
			Problem: "the broker refused the TLS connection",
			Fix:     "if its listener authenticates clients by certificate (ssl.client.auth=required), set kafka.tls.cert_file and kafka.tls.key_file to a certificate it trusts"}
	case !dropped(err):
		return nil
	}
	// The broker closed the connection (or never answered) without a
	// word: the usual sign of a protocol mismatch. Ask once.
	addrs := c.Brokers
	if broker != "" {
		addrs = []string{broker}
	}
	for _, a := range addrs {
		if !c.TLS.Enabled && speaksTLS(a) {
			return &SecurityError{Setting: "kafka.tls.enabled", Broker: a, Err: err,
				Problem: "the broker expects TLS on this port, and the relay spoke plaintext",
				Fix:     "set kafka.tls.enabled: true (with kafka.tls.ca_file when the brokers' CA is not among the system's roots)"}
		}
		if c.TLS.Enabled && speaksPlaintext(a) {
			return &SecurityError{Setting: "kafka.tls.enabled", Broker: a, Err: err,
				Problem: "the broker speaks plaintext on this port, and the relay spoke TLS",
				Fix:     "set kafka.tls.enabled: false, or point kafka.brokers at the port of the brokers' SSL / SASL_SSL listener"}
		}
	}
	return nil
}

// dropped reports a connection closed, or silent until a timeout, in the
// middle of an exchange. A refused connection (broker down) is not.
func dropped(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || (errors.As(err, &ne) && ne.Timeout())
}

// speaksTLS reports whether addr completes a TLS handshake. The
// certificate is not checked: this only tells which protocol the port
// speaks, and nothing is sent over the connection.
func speaksTLS(addr string) bool {
	d := &net.Dialer{Timeout: probeTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a protocol probe, see above
	if err != nil {
		var alert tls.AlertError
		return errors.As(err, &alert) // it answered in TLS, refusing us
	}
	_ = conn.Close()
	return true
}

// speaksPlaintext reports whether addr answers a plaintext ApiVersions
// request.
func speaksPlaintext(addr string) bool {
	sc := sarama.NewConfig()
	sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = probeTimeout, probeTimeout, probeTimeout
	b := sarama.NewBroker(addr)
	if err := b.Open(sc); err != nil {
		return false
	}
	defer func() { _ = b.Close() }()
	_, err := b.ApiVersions(&sarama.ApiVersionsRequest{})
	return err == nil
}
