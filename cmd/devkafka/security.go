package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

// serveSecurity holds serve's TLS and SASL flags.
type serveSecurity struct {
	cert, key *string
	users     []devbroker.User
}

func securityFlags(fs *flag.FlagSet) *serveSecurity {
	s := &serveSecurity{
		cert: fs.String("tls-cert", "", "PEM server certificate: the broker then speaks only TLS (needs --tls-key)"),
		key:  fs.String("tls-key", "", "PEM key of --tls-cert"),
	}
	fs.Func("sasl", "require SASL and accept this user, as MECHANISM:USER:PASSWORD with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (repeatable; a development tool: the password shows in the process list)", func(v string) error {
		mech, rest, ok1 := strings.Cut(v, ":")
		user, pass, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || user == "" || pass == "" {
			return errors.New("want MECHANISM:USER:PASSWORD")
		}
		s.users = append(s.users, devbroker.User{Mechanism: strings.ToUpper(mech), Name: user, Password: pass})
		return nil
	})
	return s
}

func (s *serveSecurity) apply(opts *devbroker.Options) error {
	opts.Users = s.users
	if *s.cert == "" && *s.key == "" {
		return nil
	}
	if *s.cert == "" || *s.key == "" {
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", errUsage)
	}
	cert, err := tls.LoadX509KeyPair(*s.cert, *s.key)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return nil
}
