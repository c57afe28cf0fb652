package integration

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// lastKID is the kid of the last JWT the fake verified.
func (g *gateway) lastKID() string {
	g.t.Helper()
	jwts := g.fake.JWTs()
	if len(jwts) == 0 {
		g.t.Fatal("the fake saw no JWT")
	}
	return jwts[len(jwts)-1].KID
}

func TestRotationPublishesTheNextKeyBeforeItSigns(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: "key_rotation 0\n\t\tkey_overlap 3s\n\t\tjwt_ttl 3s"})
	g.echoAs("rot", "a")
	set, _ := g.jwks()
	if len(set.Keys) != 1 {
		t.Fatalf("fresh gateway publishes %d keys, want 1", len(set.Keys))
	}
	first := set.kids()[0]
	if kid := g.lastKID(); kid != first {
		t.Fatalf("JWT kid %q is not the published key %q", kid, first)
	}

	status, body := admin(t, http.MethodPost, "/zapier/keys/rotate")
	if status != http.StatusOK {
		t.Fatalf("rotate: %d %s", status, body)
	}
	var rotated struct {
		Next struct {
			KID         string    `json:"kid"`
			State       string    `json:"state"`
			ActivatesAt time.Time `json:"activates_at"`
		} `json:"next"`
	}
	if err := json.Unmarshal(body, &rotated); err != nil {
		t.Fatal(err)
	}
	next := rotated.Next.KID
	if next == "" || next == first || rotated.Next.State != "next" {
		t.Fatalf("rotate answered %s", body)
	}

	// Published at once, not yet signing.
	set, _ = g.jwks()
	if !slices.Equal(set.kids(), []string{first, next}) {
		t.Fatalf("after rotate the JWKS has %v, want [%s %s]", set.kids(), first, next)
	}
	g.echoAs("rot", "b")
	if kid := g.lastKID(); kid != first {
		t.Fatalf("the next key signed before its overlap: kid %q", kid)
	}

	// Once active it signs, and the retired key stays published.
	time.Sleep(time.Until(rotated.Next.ActivatesAt) + 100*time.Millisecond)
	g.echoAs("rot", "c")
	if kid := g.lastKID(); kid != next {
		t.Fatalf("after activation the JWT kid is %q, want %q", kid, next)
	}
	set, _ = g.jwks()
	if !slices.Contains(set.kids(), first) {
		t.Fatal("the retired key left the JWKS before key_overlap passed")
	}
	// key_overlap after retiring, the old key is gone.
	eventually(t, 10*time.Second, "the retired key to be dropped", func() bool {
		set, _ := g.jwks()
		return slices.Equal(set.kids(), []string{next})
	})
	if st := g.fake.Stats(); st.JWTFailures != 0 {
		t.Fatalf("the fake failed %d JWTs during rotation: %s", st.JWTFailures, g.fake.LastJWTFailure())
	}
}

func TestJWKSCachingHeaders(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	status, hdr, body := g.do(request{path: "/.well-known/jwks.json"})
	if status != http.StatusOK {
		t.Fatalf("jwks status %d", status)
	}
	etag := hdr.Get("ETag")
	if etag == "" || !strings.HasPrefix(hdr.Get("Cache-Control"), "public, max-age=") {
		t.Errorf("headers: ETag %q, Cache-Control %q", etag, hdr.Get("Cache-Control"))
	}
	status, _, body304 := g.do(request{path: "/.well-known/jwks.json", header: http.Header{"If-None-Match": {etag}}})
	if status != http.StatusNotModified || len(body304) != 0 {
		t.Errorf("If-None-Match: %d with %d bytes, want 304 and no body", status, len(body304))
	}
	status, _, _ = g.do(request{method: http.MethodPost, path: "/.well-known/jwks.json"})
	if status != http.StatusMethodNotAllowed {
		t.Errorf("POST jwks: %d", status)
	}
	assertNoPrivateMembers(t, body)
}

func assertNoPrivateMembers(t *testing.T, jwksBody []byte) {
	t.Helper()
	var set jwkSet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"kty": true, "kid": true, "use": true, "alg": true, "crv": true, "x": true, "y": true, "n": true, "e": true}
	for _, k := range set.Keys {
		for member := range k {
			if !allowed[member] {
				t.Errorf("JWK %v has member %q", k["kid"], member)
			}
		}
		if k["use"] != "sig" {
			t.Errorf("JWK %v use = %v", k["kid"], k["use"])
		}
	}
}

// TestIndependentJOSEVerifiesJWKSAndJWTs checks the published keys and the
// minted JWTs with go-jose, which shares no code with the signer
// (golang-jwt) nor with the fake's own verifier (stdlib crypto), for every
// algorithm.
func TestIndependentJOSEVerifiesJWKSAndJWTs(t *testing.T) {
	for _, alg := range []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512"} {
		t.Run(alg, func(t *testing.T) {
			g := startGateway(t, gatewayOptions{zapierExtra: "signing_alg " + alg + "\n\t\tuser_claim uid\n\t\ttenant_claim tenant_id"})
			g.fake.SetClaimNames("uid", "tenant_id")
			g.echoAs("jose-tenant", "jose-user")
			_, body := g.jwks()
			assertNoPrivateMembers(t, body)

			var set jose.JSONWebKeySet
			if err := json.Unmarshal(body, &set); err != nil {
				t.Fatalf("go-jose cannot parse the JWKS: %v", err)
			}
			raw := g.fake.JWTs()[len(g.fake.JWTs())-1].Raw
			tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatalf("parsing the JWT: %v", err)
			}
			hdr := tok.Headers[0]
			keys := set.Key(hdr.KeyID)
			if len(keys) != 1 || !keys[0].IsPublic() || keys[0].Algorithm != alg || keys[0].Use != "sig" {
				t.Fatalf("kid %q: JWKS entries %+v", hdr.KeyID, keys)
			}
			if typ, _ := hdr.ExtraHeaders["typ"].(string); typ != "JWT" {
				t.Errorf("typ = %v", hdr.ExtraHeaders["typ"])
			}
			var std josejwt.Claims
			var custom map[string]any
			if err := tok.Claims(keys[0].Key, &std, &custom); err != nil {
				t.Fatalf("signature does not verify with go-jose: %v", err)
			}
			if err := std.ValidateWithLeeway(josejwt.Expected{
				Issuer: testIssuer, AnyAudience: josejwt.Audience{"connect.zapier.com"}, Time: time.Now(),
			}, 0); err != nil {
				t.Errorf("claims: %v", err)
			}
			if std.IssuedAt == nil || std.NotBefore == nil || std.Expiry == nil {
				t.Fatalf("iat/nbf/exp missing: %+v", std)
			}
			if life := std.Expiry.Time().Sub(std.IssuedAt.Time()); life != 5*time.Minute {
				t.Errorf("exp - iat = %s, want the default jwt_ttl 5m", life)
			}
			if aud, ok := custom["aud"].(string); !ok || aud != "connect.zapier.com" {
				t.Errorf("aud = %#v, want the plain string connect.zapier.com", custom["aud"])
			}
			if custom["uid"] != "jose-user" || custom["tenant_id"] != "jose-tenant" {
				t.Errorf("identity claims = uid %v, tenant_id %v", custom["uid"], custom["tenant_id"])
			}
		})
	}
}
