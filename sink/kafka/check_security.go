package kafka

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/preflight"
)

// securityChecks are `outboxrelay check`'s kafka.tls (the handshake with
// every bootstrap broker) and kafka.sasl (one authenticated connection),
// each when configured. ok is false when one failed: connecting further
// would only repeat that failure.
func (c *Config) securityChecks(sc *sarama.Config) (checks []preflight.Check, ok bool) {
	if c.TLS.Enabled {
		chk, pass := c.tlsCheck(sc)
		if chk.Name != "" {
			checks = append(checks, chk)
		}
		if !pass {
			return checks, false
		}
	}
	if c.SASL.Mechanism == "" {
		return checks, true
	}
	const name = "kafka.sasl"
	addr := c.Brokers[0]
	b := sarama.NewBroker(addr)
	err := b.Open(sc)
	if err == nil {
		_, err = b.Connected() // waits for the connection attempt
		_ = b.Close()
	}
	if err != nil {
		if se := c.diagnose(err, addr); se != nil {
			return append(checks, preflight.Fail(checkName(se.Setting), se.detail(), se.Fix)), false
		}
		return append(checks, preflight.Fail(name, fmt.Sprintf("broker %s: SASL %s authentication did not complete: %v", addr, c.SASL.Mechanism, err),
			"check kafka.brokers, kafka.sasl.* and that the listener's security protocol matches (SASL_PLAINTEXT without kafka.tls, SASL_SSL with it)")), false
	}
	who := c.SASL.User
	if c.SASL.Mechanism == MechanismOAuthBearer {
		who = "the token's principal"
	}
	return append(checks, preflight.Pass(name, "authenticated as %s with %s at %s", who, c.SASL.Mechanism, addr)), true
}

// tlsCheck shakes hands with each bootstrap broker. A broker that cannot be
// reached at all is left to kafka.connect (Name is then "" if none was).
func (c *Config) tlsCheck(sc *sarama.Config) (preflight.Check, bool) {
	const name = "kafka.tls"
	var detail []string
	var expiring []string
	for _, addr := range c.Brokers {
		cfg := sc.Net.TLS.Config.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: sc.Net.DialTimeout}, "tcp", addr, cfg)
		if err != nil {
			if se := c.diagnose(err, addr); se != nil {
				return preflight.Fail(name, se.detail(), se.Fix), false
			}
			continue
		}
		st := conn.ConnectionState()
		_ = conn.Close()
		d := fmt.Sprintf("%s %s", addr, tls.VersionName(st.Version))
		if len(st.PeerCertificates) > 0 {
			leaf := st.PeerCertificates[0]
			d += fmt.Sprintf(" (certificate %s, issued by %s, valid until %s)", leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.Format("2006-01-02"))
			if time.Until(leaf.NotAfter) < 14*24*time.Hour {
				expiring = append(expiring, fmt.Sprintf("%s expires %s", addr, leaf.NotAfter.Format(time.RFC3339)))
			}
		}
		detail = append(detail, d)
	}
	switch {
	case len(detail) == 0:
		return preflight.Check{}, true
	case c.TLS.InsecureSkipVerify:
		return preflight.Warn(name, "handshake with "+strings.Join(detail, "; ")+", but the certificates were NOT verified (kafka.tls.insecure_skip_verify)",
			"set kafka.tls.ca_file to the brokers' CA and remove kafka.tls.insecure_skip_verify"), true
	case len(expiring) > 0:
		return preflight.Warn(name, "handshake with "+strings.Join(detail, "; ")+"; certificate(s) about to expire: "+strings.Join(expiring, ", "),
			"renew the brokers' certificates"), true
	}
	how := "the system's roots"
	if c.TLS.CAFile != "" {
		how = c.TLS.CAFile
	}
	return preflight.Pass(name, "handshake with %s; certificates verified against %s", strings.Join(detail, "; "), how), true
}

// connectCheck is kafka.connect's failure, or the kafka.tls / kafka.sasl
// one when the cause is a security setting.
func (c *Config) connectCheck(err error, detail, fix string) preflight.Check {
	if se := c.diagnose(err, ""); se != nil {
		return preflight.Fail(checkName(se.Setting), se.detail(), se.Fix)
	}
	return preflight.Fail("kafka.connect", detail, fix)
}

// checkName is the check a setting belongs to.
func checkName(setting string) string {
	switch {
	case strings.HasPrefix(setting, "kafka.tls"):
		return "kafka.tls"
	case strings.HasPrefix(setting, "kafka.sasl"):
		return "kafka.sasl"
	}
	return "kafka.connect"
}
