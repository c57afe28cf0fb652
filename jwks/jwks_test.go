package jwks

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// fakeClock is a goroutine-safe manual clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

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

const testIssuer = "https://accounts.example.com"

func newManager(t testing.TB, store Storage, clock *fakeClock, cfg Config) *Manager {
	t.Helper()
	cfg.Issuer = testIssuer
	cfg.Now = clock.Now
	m, err := NewManager(store, cfg)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return m
}

func loaded(t testing.TB, store Storage, clock *fakeClock, cfg Config) *Manager {
	t.Helper()
	m := newManager(t, store, clock, cfg)
	if err := m.Load(context.Background()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return m
}

type want struct {
	alg, userClaim, tenantClaim, user, tenant string
	ttl                                       time.Duration
	now                                       time.Time
	extra                                     int // claims beyond the seven Mint sets (MintWith)
}

// verify checks token against the JWKS body with go-jose, an implementation
// independent of the signer, and returns the kid it was signed with.
func verify(t *testing.T, body []byte, token string, w want) string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("go-jose rejects JWKS: %v\n%s", err, body)
	}
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(w.alg)})
	if err != nil {
		t.Fatalf("ParseSigned: %v", err)
	}
	h := tok.Headers[0]
	if h.Algorithm != w.alg || h.ExtraHeaders[jose.HeaderType] != "JWT" || h.KeyID == "" {
		t.Fatalf("header: alg %q typ %v kid %q", h.Algorithm, h.ExtraHeaders[jose.HeaderType], h.KeyID)
	}
	var header map[string]any
	decodeSegment(t, strings.Split(token, ".")[0], &header)
	if len(header) != 3 {
		t.Errorf("header has extra members: %v", header)
	}
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s: %d keys in JWKS", h.KeyID, len(keys))
	}
	var std josejwt.Claims
	var raw map[string]any
	if err := tok.Claims(keys[0].Key, &std, &raw); err != nil {
		t.Fatalf("signature: %v", err)
	}
	exp := josejwt.Expected{Issuer: testIssuer, AnyAudience: josejwt.Audience{"connect.zapier.com"}, Time: w.now}
	if err := std.ValidateWithLeeway(exp, 0); err != nil {
		t.Errorf("claims: %v", err)
	}
	iat := float64(w.now.Unix())
	for name, v := range map[string]any{
		"iss": testIssuer, "aud": "connect.zapier.com", // aud a plain string, not an array
		w.userClaim: w.user, w.tenantClaim: w.tenant,
		"iat": iat, "nbf": iat, "exp": iat + w.ttl.Seconds(),
	} {
		if raw[name] != v {
			t.Errorf("claim %s = %#v, want %#v", name, raw[name], v)
		}
	}
	if len(raw) != 7+w.extra {
		t.Errorf("unexpected claims: %v", raw)
	}
	return h.KeyID
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatalf("decode %q: %v", seg, err)
	}
}

// checkPublicOnly asserts every JWK has exactly the public members for its type.
func checkPublicOnly(t *testing.T, body []byte) {
	t.Helper()
	var doc map[string][]map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || len(doc) != 1 {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	curveSize := map[string]int{"P-256": 32, "P-384": 48, "P-521": 66}
	for _, k := range doc["keys"] {
		var names []string
		for name := range k {
			names = append(names, name)
		}
		slices.Sort(names)
		switch k["kty"] {
		case "EC":
			if !slices.Equal(names, []string{"alg", "crv", "kid", "kty", "use", "x", "y"}) {
				t.Errorf("EC JWK members %v", names)
			}
			for _, c := range []string{"x", "y"} {
				b, err := base64.RawURLEncoding.DecodeString(k[c].(string))
				if err != nil || len(b) != curveSize[k["crv"].(string)] {
					t.Errorf("%s: %d bytes for %s (err %v)", c, len(b), k["crv"], err)
				}
			}
		case "RSA":
			if !slices.Equal(names, []string{"alg", "e", "kid", "kty", "n", "use"}) {
				t.Errorf("RSA JWK members %v", names)
			}
		default:
			t.Errorf("kty %v", k["kty"])
		}
		if k["use"] != "sig" {
			t.Errorf("use %v", k["use"])
		}
	}
}

func TestMintVerifiesWithGoJose(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			clock := newClock()
			m := loaded(t, NewMemoryStorage(), clock, Config{Alg: alg})
			body, _ := m.JWKS()
			checkPublicOnly(t, body)

			tok, err := m.Mint("org_456", "user_123")
			if err != nil {
				t.Fatal(err)
			}
			w := want{alg: alg, userClaim: "sub", tenantClaim: "org_id", user: "user_123", tenant: "org_456", ttl: 5 * time.Minute, now: clock.Now()}
			kid := verify(t, body, tok, w)

			// The kid is the RFC 7638 thumbprint, as go-jose computes it.
			var set jose.JSONWebKeySet
			_ = json.Unmarshal(body, &set)
			tp, err := set.Keys[0].Thumbprint(crypto.SHA256)
			if err != nil || base64.RawURLEncoding.EncodeToString(tp) != kid {
				t.Errorf("kid %s is not the thumbprint (%v)", kid, err)
			}
			if ks := m.Keys(); len(ks) != 1 || ks[0].KID != kid || ks[0].Alg != alg || ks[0].State != StateActive {
				t.Errorf("Keys() = %+v", ks)
			}
		})
	}
}

func TestMintCustomClaimsAndEscaping(t *testing.T) {
	clock := newClock()
	m := loaded(t, NewMemoryStorage(), clock, Config{UserClaim: "uid", TenantClaim: "tenant_id", TTL: 90 * time.Second})
	body, _ := m.JWKS()
	for _, user := range []string{"plain", `quote" back\slash`, "ünï\ncode <&>", "\x00\x1f"} {
		tok, err := m.Mint("acme/eu", user)
		if err != nil {
			t.Fatal(err)
		}
		verify(t, body, tok, want{alg: "ES256", userClaim: "uid", tenantClaim: "tenant_id", user: user, tenant: "acme/eu", ttl: 90 * time.Second, now: clock.Now()})
	}
}

func TestMintErrors(t *testing.T) {
	clock := newClock()
	m := newManager(t, NewMemoryStorage(), clock, Config{})
	if _, err := m.Mint("t", "u"); err == nil {
		t.Error("Mint before Load succeeded")
	}
	if body, etag := m.JWKS(); string(body) != `{"keys":[]}` || etag == "" {
		t.Errorf("JWKS before Load: %s %s", body, etag)
	}
	if err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"", "u"}, {"t", ""}, {"t", "\xff"}} {
		if _, err := m.Mint(c[0], c[1]); err == nil {
			t.Errorf("Mint(%q, %q) succeeded", c[0], c[1])
		}
	}
}

func TestNewManagerValidates(t *testing.T) {
	store := NewMemoryStorage()
	for name, cfg := range map[string]Config{
		"no issuer":         {},
		"bad alg":           {Issuer: "i", Alg: "HS256"},
		"ttl too long":      {Issuer: "i", TTL: 5*time.Minute + time.Second},
		"ttl too short":     {Issuer: "i", TTL: time.Millisecond},
		"overlap below ttl": {Issuer: "i", Overlap: time.Minute},
		"rotation negative": {Issuer: "i", Rotation: -time.Hour},
		"rotation short":    {Issuer: "i", Rotation: time.Hour}, // default overlap 24h
		"same claims":       {Issuer: "i", UserClaim: "org_id"},
		"reserved claim":    {Issuer: "i", TenantClaim: "exp"},
	} {
		if _, err := NewManager(store, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewManager(nil, Config{Issuer: "i"}); err == nil {
		t.Error("nil storage accepted")
	}
	m, err := NewManager(store, Config{Issuer: "i", Rotation: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := m.cfg
	if c.Alg != "ES256" || c.Audience != "connect.zapier.com" || c.UserClaim != "sub" || c.TenantClaim != "org_id" ||
		c.TTL != 5*time.Minute || c.Overlap != 24*time.Hour || c.StorageKey != "zapier/keys.json" || c.Now == nil {
		t.Errorf("defaults: %+v", c)
	}
}

func TestPersistenceAcrossManagers(t *testing.T) {
	store, clock := NewMemoryStorage(), newClock()
	m1 := loaded(t, store, clock, Config{Alg: "ES384"})
	if _, err := m1.Rotate(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	m2 := loaded(t, store, clock, Config{Alg: "ES384"})

	kids := func(m *Manager) (k []string) {
		for _, info := range m.Keys() {
			k = append(k, info.KID)
		}
		return k
	}
	if k1, k2 := kids(m1), kids(m2); len(k1) != 2 || !slices.Equal(k1, k2) {
		t.Fatalf("kids differ: %v vs %v", k1, k2)
	}
	b1, e1 := m1.JWKS()
	b2, e2 := m2.JWKS()
	if string(b1) != string(b2) || e1 != e2 {
		t.Error("JWKS differ between managers")
	}
	tok, err := m2.Mint("t", "u")
	if err != nil {
		t.Fatal(err)
	}
	w := want{alg: "ES384", userClaim: "sub", tenantClaim: "org_id", user: "u", tenant: "t", ttl: 5 * time.Minute, now: clock.Now()}
	if kid := verify(t, b1, tok, w); kid != m1.Keys()[0].KID {
		t.Errorf("m2 signs with %s, want the active key", kid)
	}
}

func TestConcurrentFirstLoadCreatesOneKey(t *testing.T) {
	store, clock := NewMemoryStorage(), newClock()
	ms := make([]*Manager, 8)
	var wg sync.WaitGroup
	for i := range ms {
		ms[i] = newManager(t, store, clock, Config{})
		wg.Go(func() {
			if err := ms[i].Load(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	body, _ := ms[0].JWKS()
	for _, m := range ms {
		if b, _ := m.JWKS(); string(b) != string(body) || len(m.Keys()) != 1 {
			t.Fatalf("managers disagree: %s vs %s", b, body)
		}
	}
}

func TestCorruptDocument(t *testing.T) {
	// A valid document to mutate.
	store, clock := NewMemoryStorage(), newClock()
	loaded(t, store, clock, Config{})
	ctx := context.Background()
	valid, _ := store.Load(ctx, "zapier/keys.json")
	var doc map[string]any
	if err := json.Unmarshal(valid, &doc); err != nil {
		t.Fatal(err)
	}
	secret := doc["keys"].([]any)[0].(map[string]any)["private_key"].(string)
	mutate := func(f func(k map[string]any)) []byte {
		var d map[string]any
		_ = json.Unmarshal(valid, &d)
		f(d["keys"].([]any)[0].(map[string]any))
		b, _ := json.Marshal(d)
		return b
	}
	rsa := loaded(t, NewMemoryStorage(), clock, Config{Alg: "RS256"})
	rsaDoc, _ := rsa.store.Load(ctx, "zapier/keys.json")

	cases := map[string][]byte{
		"garbage":       []byte("not json at all"),
		"truncated":     valid[:len(valid)/2],
		"null":          []byte("null"),
		"no keys":       []byte(`{"version":1,"keys":[]}`),
		"version":       []byte(strings.Replace(string(valid), `"version": 1`, `"version": 2`, 1)),
		"bad base64":    mutate(func(k map[string]any) { k["private_key"] = "%%%" }),
		"not pkcs8":     mutate(func(k map[string]any) { k["private_key"] = base64.StdEncoding.EncodeToString([]byte("nope")) }),
		"kid mismatch":  mutate(func(k map[string]any) { k["kid"] = "someone-else" }),
		"alg mismatch":  mutate(func(k map[string]any) { k["alg"] = "ES384" }),
		"unknown alg":   mutate(func(k map[string]any) { k["alg"] = "HS256" }),
		"no activation": mutate(func(k map[string]any) { delete(k, "activates_at") }),
		"rsa as ec":     []byte(strings.Replace(string(rsaDoc), `"RS256"`, `"ES256"`, 1)),
		"duplicate kid": []byte(strings.Replace(string(valid), `"keys": [`, `"keys": [`+string(mustJSON(doc["keys"].([]any)[0]))+",", 1)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			store := NewMemoryStorage()
			_ = store.Store(ctx, "zapier/keys.json", data)
			m := newManager(t, store, clock, Config{Rotation: 48 * time.Hour})
			err := m.Load(ctx)
			if err == nil || !strings.Contains(err.Error(), "corrupt key document") {
				t.Fatalf("Load error = %v", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[20:60]) {
				t.Fatal("error leaks the private key")
			}
			if _, err := m.Maintain(ctx); err == nil {
				t.Error("Maintain succeeded")
			}
			if _, err := m.Rotate(ctx, true); err == nil {
				t.Error("Rotate succeeded")
			}
			if got, _ := store.Load(ctx, "zapier/keys.json"); string(got) != string(data) {
				t.Error("corrupt document was overwritten")
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestMemoryStorage(t *testing.T) {
	s, ctx := NewMemoryStorage(), context.Background()
	if _, err := s.Load(ctx, "k"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v", err)
	}
	v := []byte("v1")
	_ = s.Store(ctx, "k", v)
	v[0] = 'X' // stored value must be a copy
	if got, _ := s.Load(ctx, "k"); string(got) != "v1" {
		t.Errorf("Load = %q", got)
	}

	if err := s.Lock(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "b"); err != nil { // locks are per name
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := s.Lock(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock(a) = %v, want deadline exceeded", err)
	}
	acquired := make(chan struct{})
	go func() {
		_ = s.Lock(ctx, "a")
		close(acquired)
	}()
	select {
	case <-acquired:
		t.Fatal("lock acquired while held")
	case <-time.After(20 * time.Millisecond):
	}
	_ = s.Unlock(ctx, "a")
	<-acquired
	_ = s.Unlock(ctx, "a")
	_ = s.Unlock(ctx, "b")
	if err := s.Unlock(ctx, "a"); err == nil {
		t.Error("unlock of unlocked lock succeeded")
	}
}
