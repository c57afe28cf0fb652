package fakezapier

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestExchangeAllAlgorithms(t *testing.T) {
	e := newEnv(t)
	for _, alg := range []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"} {
		t.Run(alg, func(t *testing.T) {
			k := e.key(alg)
			res := e.postToken(jwtForm(e.mint(k, "org-"+alg, "user-1"), "connection:read zap"), false)
			if res.status != http.StatusOK {
				t.Fatalf("HTTP %d %s; last failure %q", res.status, res.raw, e.fz.LastJWTFailure())
			}
			tok := res.str("access_token")
			if !strings.HasPrefix(tok, "fzat_") || len(tok) != len("fzat_")+32 {
				t.Errorf("access_token %q: want fzat_ + 32 chars", tok)
			}
			if got := res.str("issued_token_type"); got != DefaultAccessTokenType {
				t.Errorf("issued_token_type %q", got)
			}
			if got := res.str("token_type"); got != "Bearer" {
				t.Errorf("token_type %q", got)
			}
			if got := res.body["expires_in"]; got != float64(3600) {
				t.Errorf("expires_in %v, want 3600", got)
			}
			if got := res.str("scope"); got != "connection:read zap" {
				t.Errorf("scope %q", got)
			}
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			if tenant, user, ok := e.fz.TokenOwner(tok); !ok || tenant != "org-"+alg || user != "user-1" {
				t.Errorf("TokenOwner = %q %q %v", tenant, user, ok)
			}
			if n := e.fz.ExchangesFor("org-"+alg, "user-1"); n != 1 {
				t.Errorf("ExchangesFor = %d", n)
			}
			echo := e.api(http.MethodGet, "/v2/echo", tok, "")
			if echo.status != http.StatusOK || echo.str("tenant") != "org-"+alg || echo.str("user") != "user-1" {
				t.Errorf("echo: HTTP %d %s", echo.status, echo.raw)
			}
		})
	}
	st := e.fz.Stats()
	if st.Exchanges != 6 || st.JWTFailures != 0 || st.ExchangeErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	if logs := e.logs.all(); strings.Contains(logs, "fzat_") || strings.Contains(logs, testClientSecret) {
		t.Errorf("logs leak a token or the secret:\n%s", logs)
	}
}

func TestExchangeOmitExpiresIn(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.OmitExpiresIn = true; c.AccessTokenTTL = 90 * time.Second })
	k := e.key("ES256")
	res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
	if res.status != http.StatusOK {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	if _, ok := res.body["expires_in"]; ok {
		t.Errorf("expires_in present: %s", res.raw)
	}
	if _, ok := res.body["scope"]; ok {
		t.Errorf("scope present for an empty scope request: %s", res.raw)
	}
	e.fz.SetOmitExpiresIn(false)
	e.fz.SetAccessTokenTTL(2 * time.Minute)
	res = e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
	if res.body["expires_in"] != float64(120) {
		t.Errorf("expires_in %v, want 120", res.body["expires_in"])
	}
}

// TestExchangeRefusals covers every way a partner JWT is refused.
func TestExchangeRefusals(t *testing.T) {
	e := newEnv(t)
	es := e.key("ES256")
	rs := e.key("RS256")
	other := newTestKey(t, "ES256") // not published
	other.kid = es.kid              // same kid, different key: bad signature

	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := e.claims("org", "user")
		mut(c)
		return c
	}
	now := e.now().Unix()
	cases := []struct {
		name, jwt, reason string
	}{
		{"bad signature", sign(t, other, e.claims("org", "user")), "bad signature"},
		{"tampered payload", func() string {
			p := strings.Split(e.mint(es, "org", "user"), ".")
			p[1] = b64([]byte(`{"iss":"` + testIssuer + `","aud":"connect.zapier.com","sub":"admin","org_id":"org","iat":1,"nbf":1,"exp":9999999999}`))
			return strings.Join(p, ".")
		}(), "bad signature"},
		{"wrong iss", sign(t, es, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" })), "iss"},
		{"missing iss", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "iss") })), "iss"},
		{"wrong aud", sign(t, es, claims(func(c jwt.MapClaims) { c["aud"] = "https://connect.zapier.com" })), "aud"},
		{"aud array without ours", sign(t, es, claims(func(c jwt.MapClaims) { c["aud"] = []string{"a", "b"} })), "aud"},
		{"missing aud", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "aud") })), "aud"},
		{"expired", sign(t, es, claims(func(c jwt.MapClaims) { c["iat"], c["nbf"], c["exp"] = now-400, now-400, now-100 })), "expired"},
		{"exp now", sign(t, es, claims(func(c jwt.MapClaims) { c["iat"], c["nbf"], c["exp"] = now-60, now-60, now-1 })), "expired"},
		{"lifetime over 5m", sign(t, es, claims(func(c jwt.MapClaims) { c["exp"] = now + 301 })), "lifetime"},
		{"nbf in future", sign(t, es, claims(func(c jwt.MapClaims) { c["nbf"] = now + 120 })), "nbf"},
		{"iat in future", sign(t, es, claims(func(c jwt.MapClaims) { c["iat"], c["nbf"], c["exp"] = now+120, now, now+200 })), "iat"},
		{"missing exp", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "exp") })), `"exp" missing`},
		{"missing nbf", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "nbf") })), `"nbf" missing`},
		{"missing iat", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "iat") })), `"iat" missing`},
		{"iat as string", sign(t, es, claims(func(c jwt.MapClaims) { c["iat"] = "1711900000" })), "not a number"},
		{"missing tenant claim", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "org_id") })), `tenant claim "org_id"`},
		{"empty tenant claim", sign(t, es, claims(func(c jwt.MapClaims) { c["org_id"] = "" })), `tenant claim "org_id"`},
		{"numeric tenant claim", sign(t, es, claims(func(c jwt.MapClaims) { c["org_id"] = 42 })), `tenant claim "org_id"`},
		{"missing user claim", sign(t, es, claims(func(c jwt.MapClaims) { delete(c, "sub") })), `user claim "sub"`},
		{"alg none", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, e.claims("org", "user"))
			tok.Header["kid"] = es.kid
			s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}(), `alg "none" refused`},
		{"alg HS256", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, e.claims("org", "user"))
			tok.Header["kid"] = es.kid
			s, err := tok.SignedString([]byte("shared-secret-shared-secret-1234"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}(), `alg "HS256" refused`},
		{"alg confusion RS256 header on EC key", func() string {
			// an RS256 JWT whose kid names the EC key
			k := *rs
			k.kid = es.kid
			return sign(t, &k, e.claims("org", "user"))
		}(), "kty"},
		{"control: valid", e.mint(es, "org", "user"), ""},
		{"missing kid", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodES256, e.claims("org", "user"))
			return mustSigned(t, tok, es)
		}(), `"kid" missing`},
		{"DER ECDSA signature", func() string {
			p := strings.Split(e.mint(es, "org", "user"), ".")
			h := sha256.Sum256([]byte(p[0] + "." + p[1]))
			der, err := ecdsa.SignASN1(rand.Reader, es.priv.(*ecdsa.PrivateKey), h[:])
			if err != nil {
				t.Fatal(err)
			}
			return p[0] + "." + p[1] + "." + b64(der)
		}(), "not DER"},
		{"padded base64", e.mint(es, "org", "user") + "==", "base64url"},
		{"two parts", "abc.def", "compact JWS"},
		{"JWE", "a.b.c.d.e", "JWE"},
		{"unknown kid", sign(t, &testKey{kid: "nope", alg: "ES256", method: jwt.SigningMethodES256, priv: other.priv}, e.claims("org", "user")), `unknown kid "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fz.Stats()
			res := e.postToken(jwtForm(tc.jwt, "zap"), false)
			after := e.fz.Stats()
			if tc.reason == "" {
				if res.status != http.StatusOK {
					t.Fatalf("control case refused: %s", res.raw)
				}
				return
			}
			if res.status != http.StatusBadRequest || res.str("error") != "invalid_grant" {
				t.Fatalf("HTTP %d %s, want 400 invalid_grant", res.status, res.raw)
			}
			if after.JWTFailures != before.JWTFailures+1 || after.ExchangeErrors != before.ExchangeErrors+1 {
				t.Errorf("counters: before %+v after %+v", before, after)
			}
			if after.Exchanges != before.Exchanges {
				t.Errorf("a token was issued")
			}
			if got := e.fz.LastJWTFailure(); !strings.Contains(got, tc.reason) {
				t.Errorf("LastJWTFailure = %q, want it to mention %q", got, tc.reason)
			}
			if !strings.Contains(res.str("error_description"), tc.reason) {
				t.Errorf("error_description %q lacks %q", res.str("error_description"), tc.reason)
			}
		})
	}

	// aud as an array containing ours is accepted.
	res := e.postToken(jwtForm(sign(t, es, claims(func(c jwt.MapClaims) { c["aud"] = []string{"x", "connect.zapier.com"} })), ""), false)
	if res.status != http.StatusOK {
		t.Errorf("aud array: HTTP %d %s", res.status, res.raw)
	}
	// nbf/iat within the skew are accepted.
	res = e.postToken(jwtForm(sign(t, es, claims(func(c jwt.MapClaims) { c["iat"], c["nbf"] = now+20, now+20 })), ""), false)
	if res.status != http.StatusOK {
		t.Errorf("iat within skew: HTTP %d %s", res.status, res.raw)
	}
}

func mustSigned(t *testing.T, tok *jwt.Token, k *testKey) string {
	t.Helper()
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWKSKeyChecks(t *testing.T) {
	cases := []struct {
		name   string
		alg    string
		mutate func(m map[string]any)
		reason string
	}{
		{"private member d", "ES256", func(m map[string]any) { m["d"] = "AAAA" }, `private member "d"`},
		{"private RSA members", "RS256", func(m map[string]any) { m["p"] = "AAAA" }, `private member "p"`},
		{"use enc", "ES256", func(m map[string]any) { m["use"] = "enc" }, `use "enc"`},
		{"jwk alg mismatch", "ES256", func(m map[string]any) { m["alg"] = "ES384" }, `alg "ES384" does not match`},
		{"crv mismatch", "ES256", func(m map[string]any) { m["crv"] = "P-384" }, `crv "P-384"`},
		{"short EC coordinate", "ES256", func(m map[string]any) {
			m["x"] = b64([]byte{1, 2, 3})
		}, "coordinates must be 32 bytes"},
		{"point not on curve", "ES256", func(m map[string]any) {
			m["x"] = b64(make([]byte, 32))
		}, "invalid P-256 point"},
		{"key_ops without verify", "ES256", func(m map[string]any) { m["key_ops"] = []string{"encrypt"} }, "key_ops"},
		{"no use/alg is fine", "ES256", func(m map[string]any) { delete(m, "use"); delete(m, "alg") }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			k := newTestKey(t, tc.alg)
			j := k.jwk()
			tc.mutate(j)
			e.jwks.set(j)
			res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
			if tc.reason == "" {
				if res.status != http.StatusOK {
					t.Fatalf("HTTP %d %s", res.status, res.raw)
				}
				return
			}
			if res.status != http.StatusBadRequest || res.str("error") != "invalid_grant" {
				t.Fatalf("HTTP %d %s", res.status, res.raw)
			}
			if got := e.fz.LastJWTFailure(); !strings.Contains(got, tc.reason) {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
			if e.fz.Stats().JWTFailures != 1 {
				t.Errorf("JWTFailures = %d", e.fz.Stats().JWTFailures)
			}
		})
	}

	t.Run("private member on another key poisons the set", func(t *testing.T) {
		e := newEnv(t)
		good := newTestKey(t, "ES256")
		bad := newTestKey(t, "ES384").jwk()
		bad["d"] = "AAAA"
		e.jwks.set(good.jwk(), bad)
		res := e.postToken(jwtForm(e.mint(good, "t", "u"), ""), false)
		if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "private member") {
			t.Fatalf("HTTP %d %s; reason %q", res.status, res.raw, e.fz.LastJWTFailure())
		}
	})
	t.Run("duplicate kid", func(t *testing.T) {
		e := newEnv(t)
		k := newTestKey(t, "ES256")
		e.jwks.set(k.jwk(), k.jwk())
		res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
		if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "duplicate kid") {
			t.Fatalf("HTTP %d %s; reason %q", res.status, res.raw, e.fz.LastJWTFailure())
		}
	})
	t.Run("JWKS unreachable", func(t *testing.T) {
		e := newEnv(t)
		k := newTestKey(t, "ES256")
		e.jwks.mu.Lock()
		e.jwks.fail = true
		e.jwks.mu.Unlock()
		res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
		if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "HTTP 500") {
			t.Fatalf("HTTP %d %s; reason %q", res.status, res.raw, e.fz.LastJWTFailure())
		}
	})
	t.Run("no JWKS URL, then SetJWKSURL", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.JWKSURL = "" })
		k := e.key("ES256")
		res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
		if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "no JWKS URL") {
			t.Fatalf("HTTP %d %s; reason %q", res.status, res.raw, e.fz.LastJWTFailure())
		}
		e.fz.SetJWKSURL(e.jwks.URL)
		e.exchange(k, "t", "u")
	})
}

func TestJWKSUnknownKidRefetch(t *testing.T) {
	e := newEnv(t)
	k1 := e.key("ES256")
	e.exchange(k1, "t", "u") // caches the set
	if got := e.fz.Stats().JWKSFetches; got != 1 {
		t.Fatalf("JWKSFetches = %d, want 1", got)
	}
	e.exchange(k1, "t", "u")
	if got := e.fz.Stats().JWKSFetches; got != 1 {
		t.Fatalf("cached set not reused: JWKSFetches = %d", got)
	}

	// A key published after the set was cached is found by one refetch.
	k2 := e.key("RS256")
	e.exchange(k2, "t", "u")
	if got := e.fz.Stats().JWKSFetches; got != 2 {
		t.Fatalf("JWKSFetches = %d, want 2", got)
	}

	// A kid absent even after the refetch fails; once the JWKS gains it, a
	// later attempt (after the per-kid refetch interval) succeeds.
	k3 := newTestKey(t, "ES384")
	jwt3 := e.mint(k3, "t", "u")
	res := e.postToken(jwtForm(jwt3, ""), false)
	if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "unknown kid") {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	fetches := e.fz.Stats().JWKSFetches
	// Within the interval the same kid does not cause another fetch.
	_ = e.postToken(jwtForm(jwt3, ""), false)
	if got := e.fz.Stats().JWKSFetches; got != fetches {
		t.Errorf("refetch not rate limited: %d fetches, want %d", got, fetches)
	}
	e.jwks.add(k3.jwk())
	time.Sleep(30 * time.Millisecond) // > JWKSRefetchInterval (20ms)
	e.exchange(k3, "t", "u")

	// A kid removed from the JWKS stays usable until the cache ages out,
	// then is refused.
	e.jwks.set(k3.jwk())
	e.exchange(k1, "t", "u")
	e.advance(6 * time.Minute)
	res = e.postToken(jwtForm(e.mint(k1, "t", "u"), ""), false)
	if res.status != http.StatusBadRequest || !strings.Contains(e.fz.LastJWTFailure(), "unknown kid") {
		t.Fatalf("removed kid after max age: HTTP %d %s", res.status, res.raw)
	}
}

func TestJWKSNotModified(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	e.exchange(k, "t", "u")
	e.advance(6 * time.Minute) // past JWKSMaxAge
	e.exchange(k, "t", "u")
	st := e.fz.Stats()
	if st.JWKSFetches != 2 || st.JWKSNotModified != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestJWKSConcurrentNewKid: many concurrent JWTs signed with a newly
// published kid all verify, with one refetch.
func TestJWKSConcurrentNewKid(t *testing.T) {
	e := newEnv(t)
	k1 := e.key("ES256")
	e.exchange(k1, "t", "u")
	k2 := e.key("ES256")
	block := make(chan struct{})
	e.jwks.mu.Lock()
	e.jwks.block = block
	e.jwks.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := e.postToken(jwtForm(e.mint(k2, "t", "u"), ""), false)
			if res.status != http.StatusOK {
				errs <- res.raw
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(block)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	if got := e.jwks.hitCount(); got != 2 {
		t.Errorf("JWKS hit %d times, want 2", got)
	}
}

func TestClientAuthentication(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	form := func() url.Values { return jwtForm(e.mint(k, "t", "u"), "") }

	t.Run("basic", func(t *testing.T) {
		if res := e.postToken(form(), true); res.status != http.StatusOK {
			t.Fatalf("HTTP %d %s", res.status, res.raw)
		}
	})
	t.Run("basic without url-encoding", func(t *testing.T) {
		// RFC 6749 §2.3.1 requires form-urlencoding before Basic; the raw
		// secret's '+' then decodes to a space and no longer matches.
		req := mustTokenRequest(t, e, form())
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret)))
		res := e.do(req)
		if res.status != http.StatusUnauthorized || res.str("error") != "invalid_client" {
			t.Fatalf("HTTP %d %s", res.status, res.raw)
		}
	})
	refusals := []struct {
		name   string
		mut    func(url.Values, *http.Request)
		status int
		code   string
	}{
		{"missing", func(f url.Values, r *http.Request) { f.Del("client_id"); f.Del("client_secret") }, 401, "invalid_client"},
		{"wrong secret", func(f url.Values, r *http.Request) { f.Set("client_secret", "nope") }, 401, "invalid_client"},
		{"wrong id", func(f url.Values, r *http.Request) { f.Set("client_id", "other") }, 401, "invalid_client"},
		{"secret only", func(f url.Values, r *http.Request) { f.Del("client_id") }, 401, "invalid_client"},
		{"basic wrong", func(f url.Values, r *http.Request) {
			f.Del("client_id")
			f.Del("client_secret")
			r.SetBasicAuth(testClientID, "nope")
		}, 401, "invalid_client"},
		{"basic and form secret", func(f url.Values, r *http.Request) {
			r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(
				[]byte(url.QueryEscape(testClientID)+":"+url.QueryEscape(testClientSecret))))
		}, 400, "invalid_request"},
		{"basic malformed", func(f url.Values, r *http.Request) {
			f.Del("client_secret")
			r.Header.Set("Authorization", "Basic !!!")
		}, 401, "invalid_client"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			f := form()
			f.Set("client_id", testClientID)
			f.Set("client_secret", testClientSecret)
			req := mustTokenRequest(t, e, nil)
			tc.mut(f, req)
			req.Body = io.NopCloser(strings.NewReader(f.Encode()))
			req.ContentLength = int64(len(f.Encode()))
			res := e.do(req)
			if res.status != tc.status || res.str("error") != tc.code {
				t.Fatalf("HTTP %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
			if tc.status == 401 && res.header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	if st := e.fz.Stats(); st.JWTFailures != 0 {
		t.Errorf("client failures counted as JWT failures: %+v", st)
	}
}

func TestTokenRequestShape(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	valid := func() url.Values { return jwtForm(e.mint(k, "t", "u"), "zap") }
	cases := []struct {
		name   string
		form   func() url.Values
		status int
		code   string
	}{
		{"wrong grant type", func() url.Values { f := valid(); f.Set("grant_type", "client_credentials"); return f }, 400, "unsupported_grant_type"},
		{"missing grant type", func() url.Values { f := valid(); f.Del("grant_type"); return f }, 400, "invalid_request"},
		{"missing subject_token", func() url.Values { f := valid(); f.Del("subject_token"); return f }, 400, "invalid_request"},
		{"RFC 8693 jwt subject type", func() url.Values {
			f := valid()
			f.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
			return f
		}, 400, "invalid_request"},
		{"underscore access_token type", func() url.Values {
			f := valid()
			f.Set("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
			return f
		}, 400, "invalid_request"},
		{"missing requested type", func() url.Values { f := valid(); f.Del("requested_token_type"); return f }, 400, "invalid_request"},
		{"JWT to connect token (MCP) needs an MCP resource", func() url.Values {
			f := valid()
			f.Set("requested_token_type", DefaultConnectTokenType)
			f.Set("resource", "https://connect.zapier.com/to/SlackCLIAPI")
			return f
		}, 400, "invalid_target"},
		{"unknown scope", func() url.Values { f := valid(); f.Set("scope", "zap everything"); return f }, 400, "invalid_scope"},
		{"repeated parameter", func() url.Values { f := valid(); f.Add("scope", "zap"); return f }, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := e.postToken(tc.form(), false)
			if res.status != tc.status || res.str("error") != tc.code {
				t.Fatalf("HTTP %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
		})
	}
	t.Run("JSON body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", strings.NewReader(`{"grant_type":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		if res := e.do(req); res.status != http.StatusUnsupportedMediaType {
			t.Fatalf("HTTP %d", res.status)
		}
	})
	t.Run("GET", func(t *testing.T) {
		res := e.api(http.MethodGet, "/oauth/token", "", "")
		if res.status != http.StatusMethodNotAllowed || res.header.Get("Allow") != "POST" {
			t.Fatalf("HTTP %d", res.status)
		}
	})
	t.Run("trailing slash", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token/", strings.NewReader(func() string {
			f := valid()
			f.Set("client_id", testClientID)
			f.Set("client_secret", testClientSecret)
			return f.Encode()
		}()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		if res := e.do(req); res.status != http.StatusOK {
			t.Fatalf("HTTP %d %s", res.status, res.raw)
		}
	})
	st := e.fz.Stats()
	if st.JWTFailures != 0 || st.ExchangeErrors != len(cases)+2 {
		t.Errorf("stats %+v", st)
	}
}

func TestConnectTokenExchange(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	access := e.exchange(k, "org", "alice")
	const resource = "http://127.0.0.1:9900/to/SlackCLIAPI"

	cases := []struct {
		name     string
		subject  string
		resource string
		scope    string
		status   int
		code     string
	}{
		{"resource required", access, "", "connection:write", 400, "invalid_request"},
		{"resource not a connect URL", access, "https://connect.zapier.com/oauth/authorize", "connection:write", 400, "invalid_target"},
		{"resource relative", access, "/to/SlackCLIAPI", "connection:write", 400, "invalid_target"},
		{"resource with query", access, resource + "?token=x", "connection:write", 400, "invalid_target"},
		{"resource with empty app", access, "https://connect.zapier.com/to/", "connection:write", 400, "invalid_target"},
		{"resource with extra segment", access, resource + "/x", "connection:write", 400, "invalid_target"},
		{"scope required", access, resource, "", 400, "invalid_scope"},
		{"scope without connection:write", access, resource, "connection:read", 400, "invalid_scope"},
		{"scope not granted to subject", access, resource, "connection:write mcp:run", 400, "invalid_scope"},
		{"unknown subject", "fzat_nope", resource, "connection:write", 400, "invalid_grant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := e.postToken(connectForm(tc.subject, tc.resource, tc.scope), false)
			if res.status != tc.status || res.str("error") != tc.code {
				t.Fatalf("HTTP %d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
		})
	}

	res := e.postToken(connectForm(access, resource, "connection:write"), false)
	if res.status != http.StatusOK {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	ct := res.str("access_token")
	if !strings.HasPrefix(ct, "fzct_") || res.str("issued_token_type") != DefaultConnectTokenType ||
		res.body["expires_in"] != float64(360) || res.str("scope") != "connection:write" {
		t.Fatalf("response %s", res.raw)
	}
	if st := e.fz.Stats(); st.ConnectExchanges != 1 || st.Exchanges != 1 || st.JWTFailures != 0 {
		t.Errorf("stats %+v", st)
	}
	// A connect token is not an API token.
	if r := e.api(http.MethodGet, "/v2/echo", ct, ""); r.status != http.StatusUnauthorized {
		t.Errorf("connect token accepted on /v2: HTTP %d", r.status)
	}
	// Nor can it be exchanged again as an access token.
	if r := e.postToken(connectForm(ct, resource, "connection:write"), false); r.str("error") != "invalid_grant" {
		t.Errorf("connect token as subject: %s", r.raw)
	}

	// Single use, bound to the resource.
	if _, err := e.fz.ConsumeConnectToken(ct, "https://connect.zapier.com/to/SlackCLIAPI"); err != ErrConnectTokenResource {
		t.Fatalf("wrong resource: err %v", err)
	}
	g, err := e.fz.ConsumeConnectToken(ct, resource)
	if err != nil || g.Tenant != "org" || g.User != "alice" || g.App != "SlackCLIAPI" || g.Resource != resource {
		t.Fatalf("consume: %+v %v", g, err)
	}
	if _, err := e.fz.ConsumeConnectToken(ct, resource); err != ErrConnectTokenUsed {
		t.Fatalf("second use: err %v", err)
	}
	if _, err := e.fz.ConsumeConnectToken("fzct_unknown", resource); err != ErrConnectTokenInvalid {
		t.Fatalf("unknown: err %v", err)
	}
	// Expiry.
	res = e.postToken(connectForm(access, resource, "connection:write"), false)
	ct2 := res.str("access_token")
	e.advance(361 * time.Second)
	if _, err := e.fz.ConsumeConnectToken(ct2, resource); err != ErrConnectTokenExpired {
		t.Fatalf("expired: err %v", err)
	}
	if e.fz.Stats().ConnectTokensUsed != 1 {
		t.Errorf("ConnectTokensUsed = %d", e.fz.Stats().ConnectTokensUsed)
	}

	// A revoked subject cannot mint connect tokens.
	e.advance(-361 * time.Second)
	e.fz.Revoke("org", "alice")
	if r := e.postToken(connectForm(access, resource, "connection:write"), false); r.str("error") != "invalid_grant" {
		t.Errorf("revoked subject: %s", r.raw)
	}
}

func TestParseBasicAuth(t *testing.T) {
	cases := []struct {
		header, id, secret string
		ok, err            bool
	}{
		{"", "", "", false, false},
		{"Bearer x", "", "", false, false},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("a%3Ab:c+d%2B")), "a:b", "c d+", true, false},
		{"basic " + base64.StdEncoding.EncodeToString([]byte("a:")), "a", "", true, false},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("nocolon")), "", "", true, true},
		{"Basic " + base64.StdEncoding.EncodeToString([]byte("a:%zz")), "", "", true, true},
	}
	for _, tc := range cases {
		id, secret, ok, err := parseBasicAuth(tc.header)
		if id != tc.id || secret != tc.secret || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%q: got %q %q %v %v", tc.header, id, secret, ok, err)
		}
	}
}

func mustTokenRequest(t *testing.T, e *env, form url.Values) *http.Request {
	t.Helper()
	body := ""
	if form != nil {
		body = form.Encode()
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func TestJWTLogAndClaimNames(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES384")
	e.fz.SetClaimNames("uid", "tenant_id")
	c := e.claims("", "")
	delete(c, "sub")
	delete(c, "org_id")
	c["uid"], c["tenant_id"] = "user-9", "tenant-9"
	raw := sign(t, k, c)
	res := e.postToken(jwtForm(raw, ""), false)
	if res.status != http.StatusOK {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	// The old claim names no longer work.
	if r := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false); r.status != http.StatusBadRequest ||
		!strings.Contains(e.fz.LastJWTFailure(), `"uid"`) {
		t.Errorf("old claim names accepted: %s", r.raw)
	}
	jwts := e.fz.JWTs()
	if len(jwts) != 1 {
		t.Fatalf("%d JWTs logged, want 1 (failures are not logged)", len(jwts))
	}
	j := jwts[0]
	if j.Raw != raw || j.KID != k.kid || j.Alg != "ES384" || j.Tenant != "tenant-9" || j.User != "user-9" ||
		j.Header["typ"] != "JWT" || j.Claims["uid"] != "user-9" || j.Claims["exp"] != float64(c["exp"].(int64)) {
		t.Errorf("logged %+v", j)
	}
	if strings.Contains(e.logs.all(), raw) {
		t.Error("a JWT reached the log")
	}
}
