package fakezapier

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testClientID     = "client-1"
	testClientSecret = "s3cr:t+/ü&="
	testIssuer       = "https://accounts.example.com"
)

// testKey is a signing key plus its public JWK.
type testKey struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

var (
	rsaKeyOnce sync.Once
	rsaKeys    [3]*rsa.PrivateKey
)

// rsaKey returns one of three cached 2048-bit keys (generation is slow).
func rsaKey(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i%len(rsaKeys)]
}

var keyCounter atomic.Int64

func newTestKey(t *testing.T, alg string) *testKey {
	t.Helper()
	n := keyCounter.Add(1)
	k := &testKey{kid: fmt.Sprintf("kid-%s-%d", alg, n), alg: alg, method: jwt.GetSigningMethod(alg)}
	var err error
	switch alg {
	case "RS256", "RS384", "RS512":
		k.priv = rsaKey(t, int(n))
	case "ES256":
		k.priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		k.priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		k.priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		t.Fatalf("no test key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func padded(i *big.Int, size int) []byte {
	b := make([]byte, size)
	return i.FillBytes(b)
}

// jwk returns the public JWK of k (what a correct gateway publishes).
func (k *testKey) jwk() map[string]any {
	m := map[string]any{"kid": k.kid, "use": "sig", "alg": k.alg}
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		m["kty"] = "RSA"
		m["n"] = b64(p.N.Bytes())
		m["e"] = b64(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PrivateKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		m["kty"] = "EC"
		m["crv"] = p.Curve.Params().Name
		x, y := ecCoords(p)
		m["x"] = b64(padded(x, size))
		m["y"] = b64(padded(y, size))
	}
	return m
}

func ecCoords(p *ecdsa.PrivateKey) (*big.Int, *big.Int) {
	b, err := p.PublicKey.Bytes() // uncompressed 0x04||X||Y
	if err != nil {
		panic(err)
	}
	size := (len(b) - 1) / 2
	return new(big.Int).SetBytes(b[1 : 1+size]), new(big.Int).SetBytes(b[1+size:])
}

// jwksServer serves a mutable JWK Set with an ETag.
type jwksServer struct {
	*httptest.Server
	mu    sync.Mutex
	keys  []map[string]any
	hits  int
	gen   int
	fail  bool
	block chan struct{} // if non-nil, requests wait on it
}

func newJWKSServer(t *testing.T) *jwksServer {
	j := &jwksServer{}
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.mu.Lock()
		block := j.block
		j.mu.Unlock()
		if block != nil {
			<-block
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		j.hits++
		if j.fail {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		etag := fmt.Sprintf(`"g%d"`, j.gen)
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": j.keys})
	}))
	t.Cleanup(j.Close)
	return j
}

func (j *jwksServer) add(keys ...map[string]any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys = append(j.keys, keys...)
	j.gen++
}

func (j *jwksServer) set(keys ...map[string]any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys = keys
	j.gen++
}

func (j *jwksServer) hitCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.hits
}

// env is a fake Zapier with a JWKS server and a controllable clock.
type env struct {
	t      *testing.T
	fz     *Server
	srv    *httptest.Server
	jwks   *jwksServer
	offset atomic.Int64 // clock offset in ns
	logs   *logSink
}

type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logSink) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func newEnv(t *testing.T, mutate ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, jwks: newJWKSServer(t), logs: &logSink{}}
	cfg := Config{
		ClientID:            testClientID,
		ClientSecret:        testClientSecret,
		Issuer:              testIssuer,
		JWKSURL:             e.jwks.URL + "/.well-known/jwks.json",
		Now:                 e.now,
		JWKSRefetchInterval: 20 * time.Millisecond,
		Logf:                e.logs.logf,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	e.fz = New(cfg)
	e.srv = httptest.NewServer(e.fz)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) now() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }

func (e *env) advance(d time.Duration) { e.offset.Add(int64(d)) }

func (e *env) key(alg string) *testKey {
	k := newTestKey(e.t, alg)
	e.jwks.add(k.jwk())
	return k
}

// claims returns valid claims for tenant/user at the env's clock.
func (e *env) claims(tenant, user string) jwt.MapClaims {
	now := e.now().Unix()
	return jwt.MapClaims{
		"iss": testIssuer, "aud": "connect.zapier.com", "sub": user, "org_id": tenant,
		"iat": now, "nbf": now, "exp": now + 300,
	}
}

func sign(t *testing.T, k *testKey, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) mint(k *testKey, tenant, user string) string {
	return sign(e.t, k, e.claims(tenant, user))
}

type tokenResult struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r tokenResult) str(k string) string {
	s, _ := r.body[k].(string)
	return s
}

// postToken posts form to /oauth/token with client_secret_post credentials
// unless the form already carries client fields or basic is set.
func (e *env) postToken(form url.Values, basic bool) tokenResult {
	e.t.Helper()
	if !basic {
		if _, ok := form["client_id"]; !ok {
			form.Set("client_id", testClientID)
			form.Set("client_secret", testClientSecret)
		}
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
			[]byte(url.QueryEscape(testClientID)+":"+url.QueryEscape(testClientSecret))))
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) tokenResult {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := tokenResult{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &res.body)
	return res
}

func jwtForm(jwt, scope string) url.Values {
	return url.Values{
		"grant_type":           {DefaultGrantType},
		"subject_token":        {jwt},
		"subject_token_type":   {DefaultSubjectTokenType},
		"requested_token_type": {DefaultAccessTokenType},
		"scope":                {scope},
	}
}

func connectForm(access, resource, scope string) url.Values {
	f := url.Values{
		"grant_type":           {DefaultGrantType},
		"subject_token":        {access},
		"subject_token_type":   {DefaultAccessTokenType},
		"requested_token_type": {DefaultConnectTokenType},
		"scope":                {scope},
	}
	if resource != "" {
		f.Set("resource", resource)
	}
	return f
}

const allScopes = "external connection:read connection:write zap zap:write action:run"

// exchange performs a valid JWT exchange and returns the access token.
func (e *env) exchange(k *testKey, tenant, user string) string {
	e.t.Helper()
	res := e.postToken(jwtForm(e.mint(k, tenant, user), allScopes), false)
	if res.status != http.StatusOK {
		e.t.Fatalf("exchange: HTTP %d %s (last JWT failure: %s)", res.status, res.raw, e.fz.LastJWTFailure())
	}
	return res.str("access_token")
}

// api calls the fake's /v2 API with an optional bearer token.
func (e *env) api(method, path, token, body string) tokenResult {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(req)
}

func apiErrorCode(t *testing.T, res tokenResult) string {
	t.Helper()
	errs, ok := res.body["errors"].([]any)
	if !ok || len(errs) != 1 {
		t.Fatalf("no error envelope in %s", res.raw)
	}
	obj := errs[0].(map[string]any)
	if int(obj["status"].(float64)) != res.status {
		t.Errorf("envelope status %v != HTTP %d", obj["status"], res.status)
	}
	return obj["code"].(string)
}
