package devbroker

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outboxrelay/outboxrelay/internal/testcert"
)

// TestSecurity: with TLS and SASL users, clients with the right
// credentials produce and consume; a wrong password gets
// SASL_AUTHENTICATION_FAILED as from a real broker, for every mechanism.
func TestSecurity(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "devbroker-test-ca")
	b := startBroker(t, Options{TLS: ca.ServerTLS(t), Users: []User{
		{Mechanism: Plain, Name: "p", Password: "p-pw"},
		{Mechanism: ScramSHA256, Name: "s256", Password: "s256-pw"},
		{Mechanism: ScramSHA512, Name: "s512", Password: "s512-pw"},
		{Mechanism: ScramSHA512, Name: "s256", Password: "s256-other-pw"}, // one user, two mechanisms
	}})
	tlsOpt := kgo.DialTLSConfig(&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	tests := []struct {
		name string
		mech sasl.Mechanism
		ok   bool
	}{
		{"plain", plain.Auth{User: "p", Pass: "p-pw"}.AsMechanism(), true},
		{"plain wrong", plain.Auth{User: "p", Pass: "nope"}.AsMechanism(), false},
		{"plain unknown", plain.Auth{User: "x", Pass: "p-pw"}.AsMechanism(), false},
		{"scram256", scram.Auth{User: "s256", Pass: "s256-pw"}.AsSha256Mechanism(), true},
		{"scram256 wrong", scram.Auth{User: "s256", Pass: "nope"}.AsSha256Mechanism(), false},
		{"scram512 second credential", scram.Auth{User: "s256", Pass: "s256-other-pw"}.AsSha512Mechanism(), true},
		{"scram512", scram.Auth{User: "s512", Pass: "s512-pw"}.AsSha512Mechanism(), true},
		{"scram512 wrong", scram.Auth{User: "s512", Pass: "nope"}.AsSha512Mechanism(), false},
		{"scram512 unknown", scram.Auth{User: "nobody", Pass: "nope"}.AsSha512Mechanism(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), tlsOpt, kgo.SASL(tt.mech), kgo.RequestRetries(0))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			err = cl.Ping(testContext(t))
			switch {
			case tt.ok && err != nil:
				t.Fatalf("ping: %v", err)
			case !tt.ok && !errors.Is(err, kerr.SaslAuthenticationFailed):
				t.Fatalf("ping: %v, want SASL_AUTHENTICATION_FAILED", err)
			}
		})
	}

	t.Run("consume with ClientOpts", func(t *testing.T) {
		t.Parallel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), tlsOpt, kgo.SASL(plain.Auth{User: "p", Pass: "p-pw"}.AsMechanism()), kgo.DefaultProduceTopic("secured"), kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := testContext(t)
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("hello")}).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
		var got []Record
		err = ConsumeWith(ctx, []string{b.Addr()}, "^secured$", func(r Record) error {
			got = append(got, r)
			return ErrStop
		}, b.ClientOpts()...)
		if err != nil || len(got) != 1 || string(got[0].Value) != "hello" {
			t.Fatalf("consume: %v, %v", got, err)
		}
	})

	t.Run("plaintext client", func(t *testing.T) {
		t.Parallel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Ping(testContext(t)); err == nil {
			t.Fatal("a plaintext client reached the TLS broker")
		}
	})
}

func TestSecurityOptionErrors(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]Options{
		"no certificate": {TLS: &tls.Config{}},
		"bad mechanism":  {Users: []User{{Mechanism: "GSSAPI", Name: "u", Password: "p"}}},
		"no password":    {Users: []User{{Mechanism: Plain, Name: "u"}}},
	} {
		if b, err := Start(opts); err == nil {
			b.Close()
			t.Errorf("%s: Start succeeded", name)
		}
	}
}
