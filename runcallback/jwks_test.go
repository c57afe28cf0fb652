package runcallback

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

func (f *fixture) verify(t *testing.T, kid string) error {
	t.Helper()
	key := map[string]any{"rsa-1": rsaKey, "ec-256": ecKey256, "ec-new": ecKeyRotated}[kid]
	if key == nil {
		key = rsaKey2 // unknown kids: any key will do, the lookup fails first
	}
	method := jwt.SigningMethod(jwt.SigningMethodRS256)
	if kid == "ec-256" || kid == "ec-new" {
		method = jwt.SigningMethodES256
	}
	_, err := f.v.Verify(context.Background(), sign(t, method, key, kid, f.claims()))
	return err
}

func wantHits(t *testing.T, f *fixture, want int64) {
	t.Helper()
	if got := f.srv.hits.Load(); got != want {
		t.Fatalf("JWKS hits = %d, want %d", got, want)
	}
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	f := newFixture(t, VerifierConfig{RefetchInterval: 30 * time.Second})

	// First use: one fetch, and an unknown kid does not cause a second.
	if err := f.verify(t, "forged-0"); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("unknown kid on first use: %v", err)
	}
	wantHits(t, f, 1)

	// Within RefetchInterval of that fetch, unknown kids are refused locally.
	for i := range 50 {
		err := f.verify(t, fmt.Sprintf("forged-%d", i+1))
		if !errors.Is(err, ErrInvalidSignature) || !strings.Contains(err.Error(), "rate-limited") {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	wantHits(t, f, 1)

	// After the interval: exactly one refetch, then limited again.
	f.clock.Advance(30 * time.Second)
	for i := range 20 {
		if err := f.verify(t, fmt.Sprintf("forged-b%d", i)); !errors.Is(err, ErrInvalidSignature) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	wantHits(t, f, 2)

	// Known kids keep working meanwhile, without fetches.
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatal(err)
	}
	wantHits(t, f, 2)
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatal(err)
	}

	// Zapier publishes a new key and starts signing with it.
	f.srv.setKeys(t, append(standardKeys(), jwk(ecKeyRotated, "ec-new", "ES256"))...)
	f.clock.Advance(DefaultRefetchInterval)
	if err := f.verify(t, "ec-new"); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
	wantHits(t, f, 2)

	// Then retires the old one: gone once the cache reaches JWKSMaxAge.
	f.srv.setKeys(t, jwk(ecKeyRotated, "ec-new", "ES256"))
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatalf("old key dropped before JWKSMaxAge: %v", err)
	}
	f.clock.Advance(DefaultJWKSMaxAge)
	if err := f.verify(t, "rsa-1"); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("retired key still accepted: %v", err)
	}
	wantHits(t, f, 3)
	if err := f.verify(t, "ec-new"); err != nil {
		t.Fatal(err)
	}
	wantHits(t, f, 3)
}

func TestJWKSUnavailable(t *testing.T) {
	testKeys(t)
	onlyPrivate := must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKey, KeyID: "rsa-1"}}}))
	big := `{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`
	cases := []struct {
		name, body, want string
		status           int
	}{
		{"HTTP 500", `{"keys":[]}`, "HTTP 500", http.StatusInternalServerError},
		{"HTTP 404", `not found`, "HTTP 404", http.StatusNotFound},
		{"garbage", `\x00\x01garbage`, "not a JSON object", http.StatusOK},
		{"HTML", `<html>login</html>`, "not a JSON object", http.StatusOK},
		{"array", `[]`, "not a JSON object", http.StatusOK},
		{"no keys member", `{"kids":[]}`, `no "keys" array`, http.StatusOK},
		{"keys null", `{"keys":null}`, `no "keys" array`, http.StatusOK},
		{"keys not an array", `{"keys":{}}`, `"keys" is not an array`, http.StatusOK},
		{"empty key set", `{"keys":[]}`, "no usable signing key", http.StatusOK},
		{"only a private key", string(onlyPrivate), "no usable signing key (1 skipped)", http.StatusOK},
		{"oversized", big, "larger than", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, VerifierConfig{})
			f.srv.setBody(tc.status, []byte(tc.body))
			err := f.verify(t, "rsa-1")
			if !errors.Is(err, ErrKeysUnavailable) || errors.Is(err, ErrInvalidSignature) {
				t.Fatalf("err = %v, want ErrKeysUnavailable only", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		f := newFixture(t, VerifierConfig{})
		f.srv.Close()
		if err := f.verify(t, "rsa-1"); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("err = %v, want ErrKeysUnavailable", err)
		}
	})
}

func TestFailedFetchIsNotRetriedAtRequestRate(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	f.srv.setBody(http.StatusServiceUnavailable, nil)
	for range 20 {
		if err := f.verify(t, "rsa-1"); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("err = %v", err)
		}
	}
	wantHits(t, f, 1)

	f.srv.setKeys(t, standardKeys()...)
	f.clock.Advance(DefaultRefetchInterval)
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	wantHits(t, f, 2)
}

func TestStaleKeysServeThroughRefreshFailure(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatal(err)
	}
	f.srv.setBody(http.StatusBadGateway, nil)

	f.clock.Advance(DefaultJWKSMaxAge)
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatalf("stale key not used while the JWKS is down: %v", err)
	}
	wantHits(t, f, 2)
	// An unknown kid cannot be told from a rotation now: 503, not 401.
	if err := f.verify(t, "maybe-rotated"); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("unknown kid while JWKS down: %v", err)
	}
	wantHits(t, f, 2) // the failure is remembered for RefetchInterval
	if err := f.verify(t, "maybe-rotated-2"); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("second unknown kid while JWKS down: %v", err)
	}
	wantHits(t, f, 2)

	// Past twice JWKSMaxAge the old keys are no longer trusted.
	f.clock.Advance(DefaultJWKSMaxAge)
	if err := f.verify(t, "rsa-1"); !errors.Is(err, ErrKeysUnavailable) {
		t.Fatalf("keys used past the stale grace: %v", err)
	}
}

func TestUnknownKidWhileJWKSDownIsUnavailable(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatal(err)
	}
	f.srv.setBody(http.StatusInternalServerError, nil)
	f.clock.Advance(DefaultRefetchInterval)
	for i := range 3 { // the refetch fails, then the failure is remembered
		if err := f.verify(t, fmt.Sprintf("new-%d", i)); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("unknown kid %d while JWKS down: %v", i, err)
		}
	}
	wantHits(t, f, 2)
	if err := f.verify(t, "ec-256"); err != nil { // the fresh cache still serves
		t.Fatal(err)
	}
}

func TestConcurrentVerifySharesOneFetch(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	gate := make(chan struct{})
	f.srv.setGate(gate)
	tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", f.claims())

	const n = 64
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := f.v.Verify(context.Background(), tok)
			errs <- err
		})
	}
	waitFor(t, func() bool { return f.srv.hits.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the other callers queue up behind the fetch
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantHits(t, f, 1)
}

func TestCancelledCallerDoesNotAbortSharedFetch(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	gate := make(chan struct{})
	f.srv.setGate(gate)
	tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", f.claims())

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := f.v.Verify(ctx, tok); first <- err }()
	waitFor(t, func() bool { return f.srv.hits.Load() == 1 })
	second := make(chan error, 1)
	go func() { _, err := f.v.Verify(context.Background(), tok); second <- err }()

	cancel()
	if err := <-first; !errors.Is(err, ErrKeysUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("other caller: %v", err)
	}
	wantHits(t, f, 1)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestUnusableKeysAreSkipped(t *testing.T) {
	testKeys(t)
	small := must(rsa.GenerateKey(rand.Reader, 1024))
	edPub, _ := must2(ed25519.GenerateKey(rand.Reader))
	entries := []any{
		jose.JSONWebKey{Key: rsaKey2, KeyID: "private-rsa"},
		jose.JSONWebKey{Key: ecKeyRotated, KeyID: "private-ec"},
		jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "oct"},
		jose.JSONWebKey{Key: edPub, KeyID: "okp"},
		jose.JSONWebKey{Key: &small.PublicKey, KeyID: "rsa-1024"},
		map[string]any{"kty": "XYZ", "kid": "weird"},
		jwk(ecKey256, "", ""),
		jose.JSONWebKey{Key: ecKey256.Public(), KeyID: "enc", Use: "enc"},
		map[string]any{"kty": "EC", "kid": "ops", "key_ops": []string{"encrypt"}},
		jwk(rsaKey, "hs", "HS256"),
		jwk(ecKey256, "ec-as-rsa", "RS256"),
		map[string]any{"kty": "EC", "kid": "bad-ec", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
		"not an object",
		map[string]any{"kty": 1, "kid": "num"},
		jwk(rsaKey, "rsa-1", ""),
		jwk(rsaKey2, "rsa-1", ""), // duplicate: the first wins
	}
	body := must(json.Marshal(map[string]any{"keys": entries}))
	f := newFixture(t, VerifierConfig{})
	f.srv.setBody(http.StatusOK, body)

	if err := f.verify(t, "rsa-1"); err != nil {
		t.Fatalf("the one good key: %v", err)
	}
	// A key published with its private half must not verify anything.
	_, err := f.v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, rsaKey2, "private-rsa", f.claims()))
	if !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("token under a private JWK: %v", err)
	}

	want := map[string]string{
		"private-rsa": `private key material ("d")`,
		"private-ec":  `private key material ("d")`,
		"oct":         "symmetric key",
		"okp":         `unsupported kty "OKP"`,
		"rsa-1024":    "RSA key of 1024 bits",
		"weird":       `unsupported kty "XYZ"`,
		"":            "no kid",
		"enc":         `use is "enc"`,
		"ops":         `key_ops lacks "verify"`,
		"hs":          `alg "HS256" not allowed`,
		"ec-as-rsa":   "alg RS256 does not fit the key",
		"bad-ec":      "malformed key",
		"rsa-1":       "duplicate kid",
	}
	got := map[string]string{}
	for _, s := range f.v.SkippedKeys() {
		got[s.KeyID] += s.Reason + ";"
	}
	for kid, reason := range want {
		if !strings.Contains(got[kid], reason) {
			t.Errorf("kid %q skipped for %q, want %q", kid, got[kid], reason)
		}
	}
	if !strings.Contains(got[""], "not a JSON object") || !strings.Contains(got[""], "wrong JSON type") {
		t.Errorf("kid-less entries: %q", got[""])
	}
	if n := len(f.v.SkippedKeys()); n != len(entries)-1 {
		t.Errorf("%d keys skipped, want %d", n, len(entries)-1)
	}
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}
