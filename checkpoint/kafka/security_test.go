package kafka

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outboxrelay/outboxrelay/checkpoint"
	"github.com/outboxrelay/outboxrelay/internal/devbroker"
	"github.com/outboxrelay/outboxrelay/internal/retry"
	"github.com/outboxrelay/outboxrelay/internal/testcert"
	sinkkafka "github.com/outboxrelay/outboxrelay/sink/kafka"
)

// TestThroughTLSAndSASL: the store connects with the sink's security
// settings — TLS verified against a CA, SCRAM with a password file — and
// a wrong password is a permanent error naming the setting, without the
// password.
func TestThroughTLSAndSASL(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "store-test-ca")
	dir := t.TempDir()
	b, err := devbroker.Start(devbroker.Options{TLS: ca.ServerTLS(t), Users: []devbroker.User{
		{Mechanism: devbroker.ScramSHA512, Name: "relay", Password: "s3cret-pw"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	kc := sinkkafka.Config{Brokers: []string{b.Addr()},
		TLS:  sinkkafka.TLSConfig{Enabled: true, CAFile: testcert.WriteFile(t, dir, "ca.pem", ca.PEM)},
		SASL: sinkkafka.SASLConfig{Mechanism: sinkkafka.MechanismSCRAMSHA512, User: "relay", PasswordFile: testcert.WriteFile(t, dir, "pw", []byte("s3cret-pw\n"))}}
	kc.SetDefaults()
	for _, o := range []Options{{}, {Transactional: true}} {
		s := newStore(t, kc, "orders", o)
		wantPosition(t, s, save(t, s, "mysql-bin.000001:4"))
	}

	bad := kc
	bad.SASL.PasswordFile, bad.SASL.Password = "", "wrong-pw"
	_, err = newStore(t, bad, "orders", Options{}).Load(testContext(t))
	if err == nil || !retry.IsPermanent(err) || !strings.Contains(err.Error(), "kafka.sasl.password") || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("Load with a wrong password: %v; want a permanent error naming kafka.sasl.password, not the password", err)
	}
}

// TestAuthorizationIsPermanent: every refusal of the brokers' ACLs stops
// the relay with the ACL to grant.
func TestAuthorizationIsPermanent(t *testing.T) {
	t.Parallel()
	allow := func(res kmsg.ACLResourceType, name string, ops ...kmsg.ACLOperation) []kfake.ACL {
		var acls []kfake.ACL
		for _, op := range ops {
			acls = append(acls, kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
		}
		return acls
	}
	const (
		read, write, describe, create = kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe, kmsg.ACLOperationCreate
	)
	topic := kmsg.ACLResourceTypeTopic
	idempotent := allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite)
	txnID := allow(kmsg.ACLResourceTypeTransactionalId, "outboxrelay-orders", write, describe)
	// (Kafka ≥ 2.8, and kfake, imply IdempotentWrite from Write on a
	// topic: no case lacks only that.)
	for _, tt := range []struct {
		name string
		acls []kfake.ACL
		o    Options
		save bool // else Load
		want []string
	}{
		{"no Create", allow(topic, DefaultTopic, read, write, describe), Options{}, false,
			[]string{"Create", "--operation Create --topic " + DefaultTopic}},
		{"no Read", allow(topic, DefaultTopic, write, describe, create), Options{}, false,
			[]string{"Read and Describe", "--operation Read --operation Write --operation Describe --operation Create --topic " + DefaultTopic}},
		{"no Write", append(allow(topic, DefaultTopic, read, describe, create), idempotent...), Options{}, true,
			[]string{"not allow User:relay Write on the positions topic", "--operation Write"}},
		{"no TransactionalId", append(allow(topic, DefaultTopic, read, write, describe, create), idempotent...), Options{Transactional: true}, true,
			[]string{"transactional id outboxrelay-orders", "--operation Write --operation Describe --transactional-id outboxrelay-orders"}},
		{"all granted", append(append(allow(topic, DefaultTopic, read, write, describe, create), idempotent...), txnID...), Options{Transactional: true}, true, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cluster(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin-pw"), kfake.User("PLAIN", "relay", "relay-pw", tt.acls...))
			kc := kafkaConfig(c)
			kc.SASL = sinkkafka.SASLConfig{Mechanism: "PLAIN", User: "relay", Password: "relay-pw"}
			if tt.name != "no Create" {
				// The topic exists, with a record: the admin made it.
				admin := kc
				admin.SASL.User, admin.SASL.Password = "admin", "admin-pw"
				save(t, newStore(t, admin, "setup", Options{}), "mysql-bin.000001:4")
			}
			s := newStore(t, kc, "orders", tt.o)
			var err error
			if tt.save {
				err = s.Save(testContext(t), cp("mysql-bin.000001:4"))
			} else {
				_, err = s.Load(testContext(t))
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("with every ACL granted: %v", err)
				}
				return
			}
			if err == nil || !retry.IsPermanent(err) {
				t.Fatalf("%v; want a permanent error", err)
			}
			for _, w := range append(tt.want, "kafka-acls.sh --bootstrap-server "+kc.Brokers[0]+" --add --allow-principal User:relay") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "relay-pw") {
				t.Errorf("the error shows the password: %q", err)
			}
		})
	}
}

// TestUnreachableIsUnavailable: no broker listening is an outage
// (checkpoint.ErrUnavailable), retried by the relay, not a permanent
// failure.
func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	kc := sinkkafka.Config{Brokers: []string{addr}}
	kc.SetDefaults()
	s := newStore(t, kc, "orders", Options{})
	_, err = s.Load(testContext(t))
	if !errors.Is(err, checkpoint.ErrUnavailable) || retry.IsPermanent(err) {
		t.Fatalf("Load: %v; want ErrUnavailable, not permanent", err)
	}
	if err := s.Save(testContext(t), cp("mysql-bin.000001:4")); !errors.Is(err, checkpoint.ErrUnavailable) || retry.IsPermanent(err) {
		t.Fatalf("Save: %v; want ErrUnavailable, not permanent", err)
	}
}

// TestLoadBoundedByContext: a broker that accepts connections and never
// answers holds Load only until its context ends.
func TestLoadBoundedByContext(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	kc := sinkkafka.Config{Brokers: []string{ln.Addr().String()}}
	kc.SetDefaults()
	s := newStore(t, kc, "orders", Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	_, err = s.Load(ctx)
	took := time.Since(began)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Load: %v; want the context's deadline", err)
	}
	// sarama alone would wait 15s per request, and retry.
	if took > 5*time.Second {
		t.Fatalf("Load took %s with a 1s context", took)
	}
	t.Logf("Load returned %s after it began, with a 1s context", took.Round(time.Millisecond))
}
