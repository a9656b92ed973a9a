package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
	"github.com/xdg-go/scram"
)

// SASL mechanisms the sink speaks (sarama's own implementations; SCRAM
// through github.com/xdg-go/scram).
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
)

// TLSConfig is TLS to the brokers (their SSL or SASL_SSL listeners).
type TLSConfig struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file with the CA certificates that sign the brokers'
	// certificates. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// brokers that authenticate clients by certificate
	// (ssl.client.auth=required). Default none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the brokers' certificates must carry. Default:
	// the host of each broker's address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate: anyone on the network
	// path can then read and change records and credentials. For tests
	// only; the relay logs a warning at every connection. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig is SASL authentication to the brokers.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
	// Default "" (no SASL).
	Mechanism string `yaml:"mechanism"`
	// User is the principal's name (PLAIN and SCRAM).
	User string `yaml:"user"`
	// Password (PLAIN and SCRAM), or PasswordFile: a file holding it,
	// re-read at every (re)connection of the relay. Set one, never both.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// Token (OAUTHBEARER), or TokenFile: a file holding it, re-read every
	// time a broker connection authenticates, so that a token rotated by
	// a sidecar is picked up. Set one, never both.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// validate checks the TLS and SASL settings, naming the keys at fault.
func (c *Config) validateSecurity() []error {
	var errs []error
	t := &c.TLS
	if !t.Enabled {
		set := []struct {
			key string
			on  bool
		}{{"ca_file", t.CAFile != ""}, {"cert_file", t.CertFile != ""}, {"key_file", t.KeyFile != ""},
			{"server_name", t.ServerName != ""}, {"insecure_skip_verify", t.InsecureSkipVerify}}
		for _, s := range set {
			if s.on {
				errs = append(errs, fmt.Errorf("tls.%s is set but tls.enabled is false: set tls.enabled: true (or remove tls.%s)", s.key, s.key))
			}
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file and tls.key_file: set both (a client certificate and its key) or neither"))
	}
	if t.InsecureSkipVerify && t.CAFile != "" {
		errs = append(errs, errors.New("tls.insecure_skip_verify and tls.ca_file: skipping verification ignores the CA; set only one"))
	}
	s := &c.SASL
	both := func(a, b string) {
		errs = append(errs, fmt.Errorf("sasl.%s and sasl.%s are both set: set only one", a, b))
	}
	if s.Password != "" && s.PasswordFile != "" {
		both("password", "password_file")
	}
	if s.Token != "" && s.TokenFile != "" {
		both("token", "token_file")
	}
	switch s.Mechanism {
	case "":
		if s.User != "" || s.Password != "" || s.PasswordFile != "" || s.Token != "" || s.TokenFile != "" {
			errs = append(errs, errors.New("sasl.mechanism: required when credentials are set (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"))
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if s.User == "" {
			errs = append(errs, fmt.Errorf("sasl.user: required with sasl.mechanism %s", s.Mechanism))
		}
		if s.Password == "" && s.PasswordFile == "" {
			errs = append(errs, fmt.Errorf("sasl.password or sasl.password_file: required with sasl.mechanism %s", s.Mechanism))
		}
	case MechanismOAuthBearer:
		if s.Token == "" && s.TokenFile == "" {
			errs = append(errs, errors.New("sasl.token or sasl.token_file: required with sasl.mechanism OAUTHBEARER"))
		}
	default:
		errs = append(errs, fmt.Errorf("sasl.mechanism: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER", s.Mechanism))
	}
	return errs
}

// applySecurity sets sarama's TLS and SASL from c, reading the secret
// files now: each session of the relay builds a new producer, so a
// rotated password is used from the next reconnection on.
func (c *Config) applySecurity(sc *sarama.Config) error {
	if c.TLS.Enabled {
		tc, err := c.TLS.config()
		if err != nil {
			return err
		}
		sc.Net.TLS.Enable, sc.Net.TLS.Config = true, tc
	}
	s := &c.SASL
	if s.Mechanism == "" {
		return nil
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Mechanism = sarama.SASLMechanism(s.Mechanism)
	sc.Net.SASL.Handshake = true
	// SaslAuthenticate (Kafka ≥ 1.0) carries an error code, so a wrong
	// password is told apart from a dropped connection.
	if !sc.Version.IsAtLeast(sarama.V1_0_0_0) {
		sc.Net.SASL.Version = sarama.SASLHandshakeV0
	}
	switch s.Mechanism {
	case MechanismOAuthBearer:
		sc.Net.SASL.TokenProvider = tokenProvider{token: s.Token, file: s.TokenFile}
		return nil
	case MechanismSCRAMSHA256:
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case MechanismSCRAMSHA512:
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	}
	sc.Net.SASL.User = s.User
	sc.Net.SASL.Password = s.Password
	if s.PasswordFile != "" {
		pw, err := readSecret("kafka.sasl.password_file", s.PasswordFile)
		if err != nil {
			return err
		}
		sc.Net.SASL.Password = pw
	}
	return nil
}

// config builds the client's tls.Config.
func (t *TLSConfig) config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, &SecurityError{Setting: "kafka.tls.ca_file", Err: err}
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &SecurityError{Setting: "kafka.tls.ca_file", Err: fmt.Errorf("%s holds no PEM certificate", t.CAFile)}
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &SecurityError{Setting: "kafka.tls.cert_file and kafka.tls.key_file", Err: err}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// warnSecurity says loudly what weakens the connection's security.
func (c *Config) warnSecurity(log zerolog.Logger) {
	if c.TLS.InsecureSkipVerify {
		log.Warn().Msg("INSECURE: kafka.tls.insecure_skip_verify is true: the brokers' certificates are not verified, so anyone on the network path can read and change records and credentials; set kafka.tls.ca_file instead")
	}
	if c.SASL.Mechanism == MechanismPlain && !c.TLS.Enabled {
		log.Warn().Msg("kafka.sasl.mechanism PLAIN without kafka.tls.enabled sends the password in clear text")
	}
}

// readSecret reads a secret file; a trailing newline (as editors and
// `echo` leave) is not part of the secret. Errors name the key, never the
// content.
func readSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &SecurityError{Setting: key, Err: err}
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// tokenProvider hands sarama the OAUTHBEARER token, reading TokenFile at
// every authentication.
type tokenProvider struct{ token, file string }

func (p tokenProvider) Token() (*sarama.AccessToken, error) {
	if p.file == "" {
		return &sarama.AccessToken{Token: p.token}, nil
	}
	tok, err := readSecret("kafka.sasl.token_file", p.file)
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, &SecurityError{Setting: "kafka.sasl.token_file", Err: fmt.Errorf("%s is empty", p.file)}
	}
	return &sarama.AccessToken{Token: tok}, nil
}

// scramClient is sarama's SCRAMClient on xdg-go/scram.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *scramClient) Begin(user, password, authzID string) error {
	c, err := s.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	s.conv = c.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) { return s.conv.Step(challenge) }

func (s *scramClient) Done() bool { return s.conv.Done() }
