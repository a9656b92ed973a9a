package kafka

import (
	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
)

// ClientConfig is the sarama configuration the sink's producer uses —
// version, client id, idempotence with acks=all, TLS and SASL — for other
// clients of the same cluster (the Kafka checkpoint store's admin,
// reader and producers), so that they connect exactly as the sink does.
// Each call returns a new value the caller may change; secret files
// (kafka.sasl.password_file) are read now. Errors are explained as
// Explain does.
func (c *Config) ClientConfig() (*sarama.Config, error) {
	sc, err := c.saramaConfig()
	if err != nil {
		return nil, c.explain(err)
	}
	return sc, nil
}

// Explain marks as permanent (sink.Permanent, naming the setting and the
// fix) the connection failures that retrying cannot fix — an untrusted
// certificate, a refused password, a protocol mismatch — and returns
// other errors unchanged. It may probe the brokers to tell which.
func (c *Config) Explain(err error) error { return c.explain(err) }

// WarnSecurity logs what weakens the connection's security (certificates
// not verified, a PLAIN password in clear text), as the sink does when it
// connects.
func (c *Config) WarnSecurity(log zerolog.Logger) { c.warnSecurity(log) }
