package runcallback

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// Test keys are generated once: RSA generation is slow under -race.
var (
	keysOnce               sync.Once
	rsaKey, rsaKey2        *rsa.PrivateKey
	ecKey256, ecKey384     *ecdsa.PrivateKey
	ecKey521, ecKeyRotated *ecdsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		rsaKey = must(rsa.GenerateKey(rand.Reader, 2048))
		rsaKey2 = must(rsa.GenerateKey(rand.Reader, 2048))
		ecKey256 = must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		ecKey384 = must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
		ecKey521 = must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader))
		ecKeyRotated = must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// fakeClock is a goroutine-safe manual clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwksServer is an httptest JWKS endpoint whose body, status and latency the
// test controls, and which counts requests.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
	gate   chan struct{} // when non-nil, requests block until it is closed
}

func newJWKSServer(t testing.TB, keys ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.setKeys(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status, gate := s.body, s.status, s.gate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(t testing.TB, keys ...jose.JSONWebKey) {
	t.Helper()
	body, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	s.setBody(http.StatusOK, body)
}

func (s *jwksServer) setBody(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *jwksServer) setGate(gate chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = gate
}

// jwk is the public JWK for priv with kid and (optionally) alg.
func jwk(priv crypto.Signer, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: priv.Public(), KeyID: kid, Algorithm: alg, Use: "sig"}
}

// standardKeys is the JWKS most tests use.
func standardKeys() []jose.JSONWebKey {
	return []jose.JSONWebKey{
		jwk(rsaKey, "rsa-1", ""),
		jwk(ecKey256, "ec-256", "ES256"),
		jwk(ecKey384, "ec-384", "ES384"),
		jwk(ecKey384, "ec-384-noalg", ""),
		jwk(ecKey521, "ec-521", "ES512"),
		jwk(rsaKey2, "rsa-rs384", "RS384"), // states an alg, for mismatch tests
	}
}

// fixture is a verifier wired to a JWKS server and a fake clock.
type fixture struct {
	srv   *jwksServer
	clock *fakeClock
	v     *Verifier
}

func newFixture(t testing.TB, cfg VerifierConfig) *fixture {
	t.Helper()
	testKeys(t)
	f := &fixture{srv: newJWKSServer(t, standardKeys()...), clock: newClock()}
	cfg.JWKSURL = f.srv.URL + "/.well-known/jwks.json"
	cfg.Now = f.clock.Now
	cfg.HTTPClient = f.srv.Client()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	f.v = v
	return f
}

// claims returns the claims Zapier documents: iat now, exp 5 minutes later.
func (f *fixture) claims() jwt.MapClaims {
	now := f.clock.Now()
	return jwt.MapClaims{
		"iat": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(),
		"sub": "arun_abc123",
		"jti": "cb_1",
	}
}

// sign signs claims with method and key, setting kid unless it is empty.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}
