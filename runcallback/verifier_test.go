package runcallback

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestNewVerifierValidatesConfig(t *testing.T) {
	for _, u := range []string{
		"", "jwks.json", "/jwks.json", "ftp://example.com/jwks", "https://", "http:///x",
		"file:///etc/jwks.json", "https://exa mple.com/", "//example.com/jwks",
	} {
		if _, err := NewVerifier(VerifierConfig{JWKSURL: u}); err == nil {
			t.Errorf("NewVerifier(%q) succeeded, want error", u)
		}
	}
	if _, err := NewVerifier(VerifierConfig{JWKSURL: "https://example.com/j", Leeway: -time.Second}); err == nil {
		t.Error("negative Leeway accepted")
	}
	v, err := NewVerifier(VerifierConfig{JWKSURL: "http://127.0.0.1:8080/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	c := v.cfg
	if c.Leeway != DefaultLeeway || c.MaxLifetime != DefaultMaxLifetime || c.JWKSMaxAge != DefaultJWKSMaxAge ||
		c.RefetchInterval != DefaultRefetchInterval || c.HTTPClient == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestVerifyAcceptsAllowedAlgorithms(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	cases := []struct {
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{jwt.SigningMethodRS256, rsaKey, "rsa-1"},
		{jwt.SigningMethodRS384, rsaKey, "rsa-1"},
		{jwt.SigningMethodRS512, rsaKey, "rsa-1"},
		{jwt.SigningMethodPS256, rsaKey, "rsa-1"},
		{jwt.SigningMethodPS384, rsaKey, "rsa-1"},
		{jwt.SigningMethodPS512, rsaKey, "rsa-1"},
		{jwt.SigningMethodRS384, rsaKey2, "rsa-rs384"},
		{jwt.SigningMethodES256, ecKey256, "ec-256"},
		{jwt.SigningMethodES384, ecKey384, "ec-384"},
		{jwt.SigningMethodES512, ecKey521, "ec-521"},
	}
	for _, tc := range cases {
		t.Run(tc.method.Alg()+"/"+tc.kid, func(t *testing.T) {
			tok := sign(t, tc.method, tc.key, tc.kid, f.claims())
			c, err := f.v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			now := f.clock.Now()
			want := Claims{Subject: "arun_abc123", ID: "cb_1", IssuedAt: now, Expiry: now.Add(5 * time.Minute),
				KeyID: tc.kid, Algorithm: tc.method.Alg()}
			if c.Subject != want.Subject || c.ID != want.ID || !c.IssuedAt.Equal(want.IssuedAt) ||
				!c.Expiry.Equal(want.Expiry) || c.KeyID != want.KeyID || c.Algorithm != want.Algorithm {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
		})
	}
	if n := f.srv.hits.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times, want 1", n)
	}
}

func TestVerifyLeeway(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	now := f.clock.Now()
	for name, c := range map[string]jwt.MapClaims{
		"expired 30s ago":        {"iat": now.Add(-5*time.Minute - 30*time.Second).Unix(), "exp": now.Add(-30 * time.Second).Unix()},
		"issued 30s ahead":       {"iat": now.Add(30 * time.Second).Unix(), "exp": now.Add(5*time.Minute + 30*time.Second).Unix()},
		"lifetime 5m30s":         {"iat": now.Unix(), "exp": now.Add(5*time.Minute + 30*time.Second).Unix()},
		"trailing whitespace ok": {"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()},
	} {
		tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c)
		if name == "trailing whitespace ok" {
			tok = " " + tok + "\t"
		}
		if _, err := f.v.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// rejection is one token that Verify must refuse with ErrInvalidSignature.
type rejection struct {
	name    string
	token   func(t *testing.T, f *fixture) string
	wantMsg string // substring of the error
	noFetch bool   // refused before any JWKS request
}

func withClaims(edit func(c jwt.MapClaims, now time.Time)) func(*testing.T, *fixture) string {
	return func(t *testing.T, f *fixture) string {
		c := f.claims()
		edit(c, f.clock.Now())
		return sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c)
	}
}

func rejections() []rejection {
	return []rejection{
		{"alg none", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", f.claims())
		}, `alg "none" not allowed`, true},
		{"HS256 keyed with the RSA public key PEM", func(t *testing.T, f *fixture) string {
			der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
			secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			return sign(t, jwt.SigningMethodHS256, secret, "rsa-1", f.claims())
		}, `alg "HS256" not allowed`, true},
		{"HS512 keyed with the RSA public key DER", func(t *testing.T, f *fixture) string {
			der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
			return sign(t, jwt.SigningMethodHS512, der, "rsa-1", f.claims())
		}, `alg "HS512" not allowed`, true},
		{"missing alg", func(*testing.T, *fixture) string {
			return base64.RawURLEncoding.EncodeToString([]byte(`{"kid":"rsa-1"}`)) + ".e30.c2ln"
		}, "missing alg", true},
		{"missing kid", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodRS256, rsaKey, "", f.claims())
		}, "missing kid", true},
		{"kid not a string", func(t *testing.T, f *fixture) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodRS256, f.claims())
			tok.Header["kid"] = 7
			return must(tok.SignedString(rsaKey))
		}, "missing kid", true},
		{"crit header", func(t *testing.T, f *fixture) string {
			tok := jwt.NewWithClaims(jwt.SigningMethodRS256, f.claims())
			tok.Header["kid"], tok.Header["crit"] = "rsa-1", []string{"b64"}
			return must(tok.SignedString(rsaKey))
		}, "crit", true},
		{"empty", func(*testing.T, *fixture) string { return "" }, "missing token", true},
		{"two segments", func(*testing.T, *fixture) string { return "eyJhbGciOiJSUzI1NiJ9.e30" }, "not a compact JWS", true},
		{"header not base64", func(*testing.T, *fixture) string { return "!!!.e30.c2ln" }, "not base64url", true},
		{"header not an object", func(*testing.T, *fixture) string { return "WzFd.e30.c2ln" }, "not a JSON object", true},
		{"oversized", func(*testing.T, *fixture) string { return strings.Repeat("a", maxTokenBytes) + ".b.c" }, "longer than", true},
		{"expired", withClaims(func(c jwt.MapClaims, now time.Time) {
			c["iat"], c["exp"] = now.Add(-6*time.Minute).Unix(), now.Add(-61*time.Second).Unix()
		}), "expired", false},
		{"iat in the future", withClaims(func(c jwt.MapClaims, now time.Time) {
			c["iat"], c["exp"] = now.Add(2*time.Minute).Unix(), now.Add(6*time.Minute).Unix()
		}), "before issued", false},
		{"nbf in the future", withClaims(func(c jwt.MapClaims, now time.Time) {
			c["nbf"] = now.Add(2 * time.Minute).Unix()
		}), "not valid yet", false},
		{"lifetime too long", withClaims(func(c jwt.MapClaims, now time.Time) {
			c["exp"] = now.Add(5*time.Minute + 61*time.Second).Unix()
		}), "lifetime 6m1s exceeds maximum 5m0s", false},
		{"exp before iat", withClaims(func(c jwt.MapClaims, now time.Time) {
			c["iat"] = now.Add(30 * time.Second).Unix()
			c["exp"] = now.Add(10 * time.Second).Unix()
		}), "exp is before iat", false},
		{"missing exp", withClaims(func(c jwt.MapClaims, _ time.Time) { delete(c, "exp") }), "exp claim is required", false},
		{"missing iat", withClaims(func(c jwt.MapClaims, _ time.Time) { delete(c, "iat") }), "missing iat", false},
		{"exp not a number", withClaims(func(c jwt.MapClaims, _ time.Time) { c["exp"] = "soon" }), "malformed token", false},
		{"corrupted signature", func(t *testing.T, f *fixture) string {
			tok := sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", f.claims())
			i := strings.LastIndexByte(tok, '.') + 10
			b := []byte(tok)
			b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
			return string(b)
		}, "signature is invalid", false},
		{"tampered payload", func(t *testing.T, f *fixture) string {
			tok := sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", f.claims())
			parts := strings.Split(tok, ".")
			c := f.claims()
			c["sub"] = "arun_other"
			parts[1] = strings.Split(sign(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", c), ".")[1]
			return strings.Join(parts, ".")
		}, "signature is invalid", false},
		{"signed by another key under a known kid", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodRS256, rsaKey2, "rsa-1", f.claims())
		}, "signature is invalid", false},
		{"JWK alg mismatch", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodRS256, rsaKey2, "rsa-rs384", f.claims())
		}, `token alg RS256 does not match key alg RS384`, false},
		{"EC alg on an RSA key", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodES256, ecKey256, "rsa-1", f.claims())
		}, "does not fit the key type", false},
		{"ES256 under an ES384 JWK", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodES256, ecKey256, "ec-384", f.claims())
		}, "does not match key alg ES384", false},
		{"ES256 on a P-384 JWK stating no alg", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodES256, ecKey256, "ec-384-noalg", f.claims())
		}, "does not fit the key type", false},
		{"unknown kid", func(t *testing.T, f *fixture) string {
			return sign(t, jwt.SigningMethodRS256, rsaKey2, "forged", f.claims())
		}, `unknown kid "forged"`, false},
	}
}

func TestVerifyRejects(t *testing.T) {
	for _, r := range rejections() {
		t.Run(r.name, func(t *testing.T) {
			f := newFixture(t, VerifierConfig{})
			tok := r.token(t, f)
			_, err := f.v.Verify(context.Background(), tok)
			if !errors.Is(err, ErrInvalidSignature) || errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("Verify error = %v, want ErrInvalidSignature", err)
			}
			if !strings.Contains(err.Error(), r.wantMsg) {
				t.Errorf("error %q does not mention %q", err, r.wantMsg)
			}
			assertNoTokenIn(t, err, tok)
			if hits := f.srv.hits.Load(); r.noFetch && hits != 0 {
				t.Errorf("JWKS fetched %d times for a token refused on its header", hits)
			}
		})
	}
}

// assertNoTokenIn checks the error echoes neither the token nor any of its
// longer segments.
func assertNoTokenIn(t *testing.T, err error, tok string) {
	t.Helper()
	msg := err.Error()
	for _, part := range append(strings.Split(tok, "."), tok) {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("error message contains token material %.20q…", part)
		}
	}
}

func TestVerifyKeepsJWTSentinels(t *testing.T) {
	f := newFixture(t, VerifierConfig{})
	c := f.claims()
	c["exp"] = f.clock.Now().Add(-2 * time.Minute).Unix()
	c["iat"] = f.clock.Now().Add(-3 * time.Minute).Unix()
	_, err := f.v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c))
	if !errors.Is(err, jwt.ErrTokenExpired) || !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("err = %v, want both ErrInvalidSignature and jwt.ErrTokenExpired", err)
	}
}

func TestVerifyIssuerAndAudience(t *testing.T) {
	const iss, aud = "https://zapier.com", "https://partner.example.com"
	f := newFixture(t, VerifierConfig{Issuer: iss, Audience: aud})
	cases := []struct {
		name string
		edit func(jwt.MapClaims)
		ok   bool
	}{
		{"both match", func(c jwt.MapClaims) { c["iss"], c["aud"] = iss, aud }, true},
		{"aud array contains", func(c jwt.MapClaims) { c["iss"], c["aud"] = iss, []string{"x", aud} }, true},
		{"wrong issuer", func(c jwt.MapClaims) { c["iss"], c["aud"] = "https://evil.example", aud }, false},
		{"missing issuer", func(c jwt.MapClaims) { c["aud"] = aud }, false},
		{"wrong audience", func(c jwt.MapClaims) { c["iss"], c["aud"] = iss, "https://other.example" }, false},
		{"missing audience", func(c jwt.MapClaims) { c["iss"] = iss }, false},
	}
	for _, tc := range cases {
		c := f.claims()
		tc.edit(c)
		got, err := f.v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.ok && (got.Issuer != iss || !slices.Contains(got.Audience, aud)):
			t.Errorf("%s: claims %+v lack iss/aud", tc.name, got)
		case !tc.ok && !errors.Is(err, ErrInvalidSignature):
			t.Errorf("%s: err = %v, want ErrInvalidSignature", tc.name, err)
		}
	}

	// Unconfigured checks ignore whatever iss/aud the token carries.
	g := newFixture(t, VerifierConfig{})
	c := g.claims()
	c["iss"], c["aud"] = "anything", "anyone"
	if _, err := g.v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c)); err != nil {
		t.Errorf("iss/aud checks off: %v", err)
	}
}

func TestPeekHeaderMatchesMemberNamesExactly(t *testing.T) {
	// encoding/json struct decoding would let "KID" fill Kid; golang-jwt
	// would not. Both must see the same header.
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","KID":"rsa-1"}`))
	if _, err := peekHeader(hdr + ".e30.c2ln"); err == nil || !strings.Contains(err.Error(), "missing kid") {
		t.Errorf("err = %v, want missing kid", err)
	}
	hdr = base64.RawURLEncoding.EncodeToString([]byte(`{"ALG":"RS256","alg":"none","kid":"k"}`))
	if _, err := peekHeader(hdr + ".e30.c2ln"); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("err = %v, want alg not allowed", err)
	}
}

func TestBindsRun(t *testing.T) {
	cases := []struct {
		sub, run string
		want     bool
	}{
		{"", "arun_1", true},
		{"arun_1", "arun_1", true},
		{"arun_2", "arun_1", false},
		{"ARUN_1", "arun_1", false},
		{"", "", false},
		{"arun_1", "", false},
	}
	for _, tc := range cases {
		if got := BindsRun(Claims{Subject: tc.sub}, tc.run); got != tc.want {
			t.Errorf("BindsRun(sub=%q, %q) = %v, want %v", tc.sub, tc.run, got, tc.want)
		}
	}
}
