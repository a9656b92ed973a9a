package devbroker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// SASL mechanisms the broker accepts.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// User is a SASL user of the broker.
type User struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	Name      string
	Password  string
}

// scramIterations is what kfake announces in its server-first message.
const scramIterations = 4096

// authFailed is the message Kafka sends with SASL_AUTHENTICATION_FAILED.
const authFailed = "Authentication failed: Invalid username or password"

// security is the broker's TLS and SASL state. kfake itself drops the
// connection on a wrong password, where a real broker answers
// SaslAuthenticate with SASL_AUTHENTICATION_FAILED (58) first; clients tell
// the two apart (a refused password is not worth retrying), so the broker
// checks credentials before kfake does and answers as Kafka would. For
// SCRAM that needs the salt: the users' SCRAM credentials are set with a
// known salt after start (AlterUserScramCredentials).
type security struct {
	tls    bool
	admin  User                         // the broker's own PLAIN superuser
	plain  map[string]string            // PLAIN user → password
	scram  map[string][]scramCredential // SCRAM user → credentials
	mu     sync.Mutex
	starts map[string]scramStart // client nonce → client-first-message-bare
}

type scramCredential struct {
	mechanism int8 // 1: SHA-256, 2: SHA-512 (as in AlterUserScramCredentials)
	hash      func() hash.Hash
	salt      []byte
	salted    []byte // SaltedPassword
	stored    []byte // StoredKey
}

type scramStart struct {
	user string
	bare string
}

// securityOpts validates the security options and returns kfake's.
func securityOpts(opts *Options) (*security, []kfake.Opt, error) {
	s := &security{tls: opts.TLS != nil}
	var kopts []kfake.Opt
	if opts.TLS != nil {
		if len(opts.TLS.Certificates) == 0 && opts.TLS.GetCertificate == nil {
			return nil, nil, errors.New("devbroker: Options.TLS has no server certificate")
		}
		kopts = append(kopts, kfake.TLS(opts.TLS))
	}
	if len(opts.Users) == 0 {
		return s, kopts, nil
	}
	s.admin = User{Mechanism: Plain, Name: "devbroker-admin", Password: randomHex(16)}
	s.plain = map[string]string{s.admin.Name: s.admin.Password}
	s.scram = map[string][]scramCredential{}
	s.starts = map[string]scramStart{}
	kopts = append(kopts, kfake.EnableSASL(), kfake.Superuser(Plain, s.admin.Name, s.admin.Password))
	for i, u := range opts.Users {
		if u.Name == "" || u.Password == "" {
			return nil, nil, fmt.Errorf("devbroker: Options.Users[%d]: name and password are required", i)
		}
		switch u.Mechanism {
		case Plain:
			s.plain[u.Name] = u.Password
		case ScramSHA256, ScramSHA512:
			s.scram[u.Name] = append(s.scram[u.Name], newScramCredential(u.Mechanism, u.Password))
		default:
			return nil, nil, fmt.Errorf("devbroker: Options.Users[%d]: mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", i, u.Mechanism)
		}
		kopts = append(kopts, kfake.Superuser(u.Mechanism, u.Name, u.Password))
	}
	return s, kopts, nil
}

func newScramCredential(mechanism, password string) scramCredential {
	c := scramCredential{mechanism: 1, hash: sha256.New, salt: make([]byte, 16)}
	if mechanism == ScramSHA512 {
		c.mechanism, c.hash = 2, sha512.New
	}
	_, _ = rand.Read(c.salt)
	c.salted, _ = pbkdf2.Key(c.hash, password, c.salt, scramIterations, c.hash().Size())
	c.stored = c.storedKey()
	return c
}

func (c scramCredential) storedKey() []byte {
	mac := hmac.New(c.hash, c.salted)
	mac.Write([]byte("Client Key"))
	h := c.hash()
	h.Write(mac.Sum(nil))
	return h.Sum(nil)
}

// install sets the SCRAM users' salts on the running cluster and starts
// checking credentials.
func (s *security) install(ctx context.Context, c *kfake.Cluster, addr string) error {
	if s.plain == nil {
		return nil
	}
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		msg, ok := s.refuse(req.(*kmsg.SASLAuthenticateRequest).SASLAuthBytes)
		if ok {
			return nil, nil, false // let kfake authenticate, as it will succeed
		}
		c.KeepControl()
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	if len(s.scram) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(s.clientOpts(), kgo.SeedBrokers(addr))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for name, creds := range s.scram {
		// One request per credential: Kafka refuses a request naming a
		// user twice.
		for _, cr := range creds {
			req := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
			up := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
			up.Name, up.Mechanism, up.Iterations, up.Salt, up.SaltedPassword = name, cr.mechanism, scramIterations, cr.salt, cr.salted
			req.Upsertions = append(req.Upsertions, up)
			resp, err := req.RequestWith(ctx, cl)
			if err != nil {
				return fmt.Errorf("set SCRAM credentials of %s: %w", name, err)
			}
			for _, r := range resp.Results {
				if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
					return fmt.Errorf("set SCRAM credentials of %s: %w", r.User, err)
				}
			}
		}
	}
	return nil
}

// refuse checks one SaslAuthenticate message: ok when kfake may take it,
// else the error message to answer with.
func (s *security) refuse(msg []byte) (string, bool) {
	switch {
	case bytes.Count(msg, []byte{0}) == 2: // PLAIN: authzid NUL user NUL password
		parts := strings.SplitN(string(msg), "\x00", 3)
		want, known := s.plain[parts[1]]
		return authFailed, known && subtle.ConstantTimeCompare([]byte(want), []byte(parts[2])) == 1
	case bytes.HasPrefix(msg, []byte("n,")): // SCRAM client-first: gs2 header, then n=user,r=nonce
		i := bytes.IndexByte(msg[2:], ',')
		if i < 0 {
			return "invalid SCRAM client-first-message", false
		}
		bare := string(msg[2+i+1:])
		user, nonce := scramAttr(bare, "n"), scramAttr(bare, "r")
		if _, known := s.scram[user]; !known || nonce == "" {
			return authFailed, false
		}
		s.mu.Lock()
		if len(s.starts) > 1000 { // abandoned exchanges
			clear(s.starts)
		}
		s.starts[nonce] = scramStart{user: user, bare: bare}
		s.mu.Unlock()
		return "", true
	case bytes.HasPrefix(msg, []byte("c=")): // SCRAM client-final: c=…,r=nonce,p=proof
		return authFailed, s.scramProofOK(string(msg))
	}
	return "", true // not ours to judge
}

// scramProofOK verifies a client-final-message against the exchange it
// ends (RFC 5802 §3).
func (s *security) scramProofOK(final string) bool {
	nonce := scramAttr(final, "r")
	i := strings.LastIndex(final, ",p=")
	if i < 0 || nonce == "" {
		return false
	}
	proof, err := base64.StdEncoding.DecodeString(final[i+3:])
	if err != nil {
		return false
	}
	s.mu.Lock()
	var start scramStart
	found := false
	for n, st := range s.starts {
		if strings.HasPrefix(nonce, n) {
			start, found = st, true
			delete(s.starts, n)
			break
		}
	}
	s.mu.Unlock()
	if !found {
		return false
	}
	for _, cr := range s.scram[start.user] {
		serverFirst := fmt.Sprintf("r=%s,s=%s,i=%d", nonce, base64.StdEncoding.EncodeToString(cr.salt), scramIterations)
		mac := hmac.New(cr.hash, cr.stored)
		mac.Write([]byte(start.bare + "," + serverFirst + "," + final[:i]))
		sig := mac.Sum(nil)
		if len(sig) != len(proof) {
			continue
		}
		key := make([]byte, len(sig))
		for j := range sig {
			key[j] = proof[j] ^ sig[j]
		}
		h := cr.hash()
		h.Write(key)
		if hmac.Equal(h.Sum(nil), cr.stored) {
			return true
		}
	}
	return false
}

// scramAttr returns the value of attribute k in a SCRAM message.
func scramAttr(msg, k string) string {
	for _, a := range strings.Split(msg, ",") {
		if v, ok := strings.CutPrefix(a, k+"="); ok {
			return v
		}
	}
	return ""
}

// clientOpts connect a franz-go client to the broker as its own superuser.
// The broker's certificate is not verified: this client only ever talks
// to the broker in the same process, on loopback.
func (s *security) clientOpts() []kgo.Opt {
	var opts []kgo.Opt
	if s.tls {
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // see above
	}
	if s.plain != nil {
		opts = append(opts, kgo.SASL(plain.Auth{User: s.admin.Name, Pass: s.admin.Password}.AsMechanism()))
	}
	return opts
}

// ClientOpts are the franz-go options a test client needs to reach the
// broker when it has TLS or SASL on: TLS without verification and the
// broker's own superuser. Use them with ConsumeWith.
func (b *Broker) ClientOpts() []kgo.Opt { return b.sec.clientOpts() }

// ConsumeWith is Consume with extra client options (such as ClientOpts).
func ConsumeWith(ctx context.Context, brokers []string, topicRegex string, fn func(Record) error, opts ...kgo.Opt) error {
	return consume(ctx, brokers, topicRegex, fn, opts...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// plainListener hands out connections that drop a client opening with a
// TLS handshake, as a real plaintext listener does (its first four bytes,
// read as a request size, exceed socket.request.max.bytes). kfake would
// instead wait for hundreds of megabytes that never come, after
// allocating them.
type plainListener struct{ net.Listener }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &plainConn{Conn: c}, nil
}

type plainConn struct {
	net.Conn
	checked bool
}

func (c *plainConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.checked && n > 0 {
		c.checked = true
		if p[0] == 0x16 { // a TLS handshake record; no request is that large
			_ = c.Conn.Close()
			return 0, io.EOF
		}
	}
	return n, err
}
