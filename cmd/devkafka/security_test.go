package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/outboxrelay/outboxrelay/internal/testcert"
)

// TestServeTLSAndSASL: `devkafka serve --tls-cert … --sasl …` serves TLS
// and requires the SASL user.
func TestServeTLSAndSASL(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "devkafka-test-ca")
	dir := t.TempDir()
	certPEM, keyPEM := ca.Issue(t, "localhost", "localhost", "127.0.0.1")
	cert, key := testcert.WriteFile(t, dir, "cert.pem", certPEM), testcert.WriteFile(t, dir, "key.pem", keyPEM)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
			"--sasl", "SCRAM-SHA-512:relay:relay-pw"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve: %v (%v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	addr := strings.TrimSpace(strings.TrimPrefix(line, "devkafka listening on "))

	for pass, ok := range map[string]bool{"relay-pw": true, "wrong": false} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DialTLSConfig(&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}),
			kgo.SASL(scram.Auth{User: "relay", Pass: pass}.AsSha512Mechanism()), kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		err = cl.Ping(pctx)
		pcancel()
		cl.Close()
		if (err == nil) != ok {
			t.Errorf("password %q: ping error %v, want success %v", pass, err, ok)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func TestServeSecurityFlagErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"serve", "--tls-cert", "x.pem"},
		{"serve", "--sasl", "PLAIN:user"},
		{"serve", "--sasl", "KERBEROS:u:p"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := run(ctx, args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
		cancel()
	}
}
