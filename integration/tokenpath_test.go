package integration

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

func TestProxiedCallCarriesBearerAndNothingElse(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	status, _, body := g.do(request{
		path:   "/zapier/api/v2/echo?x=1",
		tenant: "org_456", user: "user_123",
		header: http.Header{
			"Authorization":    {"Basic Y2xpZW50OnNlY3JldA=="},
			"Cookie":           {"session=partner-session"},
			"X_Zapier_User":    {"mallory"},
			"X-Request-Marker": {"kept"},
		},
	})
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	e := decodeEcho(t, body)
	if e.Tenant != "org_456" || e.User != "user_123" {
		t.Errorf("fake resolved the bearer to %q/%q, want org_456/user_123", e.Tenant, e.User)
	}
	auth := e.header("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		t.Fatalf("Authorization = %q, want a Bearer token", auth)
	}
	if tenant, user, ok := g.fake.TokenOwner(token); !ok || tenant != "org_456" || user != "user_123" {
		t.Errorf("token owner = %q/%q/%v", tenant, user, ok)
	}
	if len(e.Headers["Authorization"]) != 1 {
		t.Errorf("Authorization values = %q, want only the bearer", e.Headers["Authorization"])
	}
	for name := range e.Headers {
		lower := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if lower == "x-zapier-user" || lower == "x-zapier-tenant" || lower == "cookie" {
			t.Errorf("header %s reached Zapier", name)
		}
	}
	if e.header("X-Request-Marker") != "kept" {
		t.Errorf("an unrelated header was dropped")
	}
	if e.Path != "/v2/echo" {
		t.Errorf("path at Zapier = %q, want /v2/echo", e.Path)
	}
	if st := g.fake.Stats(); st.Exchanges != 1 || st.JWTFailures != 0 {
		t.Errorf("fake stats = %+v, want one exchange and no JWT failure", st)
	}
	// A second call is served from the cache.
	g.echoAs("org_456", "user_123")
	if n := g.fake.ExchangesFor("org_456", "user_123"); n != 1 {
		t.Errorf("exchanges after a cached call = %d, want 1", n)
	}
}

func TestConcurrentColdRequestsCauseOneExchange(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	g.fake.SetTokenDelay(300 * time.Millisecond) // let all 200 pile up on the miss

	const clients = 200
	var wg sync.WaitGroup
	statuses := make([]int, clients)
	tokens := make([]string, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, body, err := send(request{path: "/zapier/api/v2/echo", tenant: "cold-tenant", user: "cold-user"})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			statuses[i] = status
			if status == http.StatusOK {
				tokens[i] = decodeEcho(t, body).header("Authorization")
			}
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("request %d got a different token", i)
		}
	}
	if n := g.fake.ExchangesFor("cold-tenant", "cold-user"); n != 1 {
		t.Errorf("%d concurrent cold requests caused %d exchanges, want 1", clients, n)
	}
}

func TestTenantsWithSameUserGetDifferentTokens(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	a := g.echoAs("tenant-a", "same-user")
	b := g.echoAs("tenant-b", "same-user")
	if a.Tenant != "tenant-a" || b.Tenant != "tenant-b" {
		t.Fatalf("tenants at Zapier = %q and %q", a.Tenant, b.Tenant)
	}
	if a.header("Authorization") == b.header("Authorization") {
		t.Fatal("two tenants with the same user id shared a token")
	}
	// And each keeps its own token afterwards.
	if again := g.echoAs("tenant-a", "same-user"); again.header("Authorization") != a.header("Authorization") {
		t.Error("tenant-a's cached token changed")
	}
}

func TestTokenNearExpiryIsRefreshedAheadWithoutInjectingExpiredTokens(t *testing.T) {
	// Tokens live 12s; the gateway stops using a token 5s before it expires
	// and refreshes it in the 3s before that.
	g := startGateway(t, gatewayOptions{
		zapierExtra: "cache {\n\t\t\trefresh_ahead 3s\n\t\t}",
		fake:        fakezapier.Config{AccessTokenTTL: 12 * time.Second},
	})
	before := lookupCount(t, "refresh_ahead")
	first := g.echoAs("refresh", "user")
	g.fake.SetTokenDelay(200 * time.Millisecond) // refreshes take a while; requests must not wait

	// Keep requests flowing for longer than one token lifetime.
	deadline := time.Now().Add(14 * time.Second)
	seen := map[string]bool{first.header("Authorization"): true}
	requests := 0
	for time.Now().Before(deadline) {
		e := g.echoAs("refresh", "user") // fails the test on any non-200, including a 401 for an expired token
		seen[e.header("Authorization")] = true
		requests++
		time.Sleep(20 * time.Millisecond)
	}
	if st := g.fake.Stats(); st.Unauthorized != 0 {
		t.Errorf("the fake refused %d requests: an expired token was injected", st.Unauthorized)
	}
	if len(seen) < 2 {
		t.Errorf("saw %d token(s) over 14s of 12s tokens, want a refresh", len(seen))
	}
	if n := g.fake.ExchangesFor("refresh", "user"); n < 2 || n > 5 {
		t.Errorf("exchanges = %d over %d requests, want 2-5 (one per refresh, not one per request)", n, requests)
	}
	if lookupCount(t, "refresh_ahead") <= before {
		t.Error("no lookup was served ahead of a refresh")
	}
}

func TestRevokedTokenIsReplacedTransparently(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	first := g.echoAs("rev", "user")

	if n := g.fake.Revoke("rev", "user"); n != 1 {
		t.Fatalf("revoked %d tokens, want 1", n)
	}
	second := g.echoAs("rev", "user") // GET: must be 200 with a new token
	if second.header("Authorization") == first.header("Authorization") {
		t.Fatal("the revoked token was injected again")
	}

	g.fake.Revoke("rev", "user")
	payload := `{"data":{"inputs":{"email":"me@example.com"}}}`
	status, _, body := g.do(request{
		method: http.MethodPost, path: "/zapier/api/v2/echo", tenant: "rev", user: "user",
		header: http.Header{"Content-Type": {"application/json"}}, body: payload,
	})
	if status != http.StatusOK {
		t.Fatalf("POST after revocation: status %d: %s", status, body)
	}
	third := decodeEcho(t, body)
	if third.Body != payload {
		t.Errorf("the retried POST body = %q, want %q", third.Body, payload)
	}
	if third.header("Authorization") == second.header("Authorization") {
		t.Error("the revoked token was injected into the POST")
	}
	if st := g.fake.Stats(); st.Unauthorized != 2 {
		t.Errorf("the fake answered 401 %d times, want exactly 2 (one per revocation)", st.Unauthorized)
	}
	if n := g.fake.ExchangesFor("rev", "user"); n != 3 {
		t.Errorf("exchanges = %d, want 3", n)
	}
}

func TestLargeBodyIsNotBufferedButStillEvicts(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	g.echoAs("big", "user")
	g.fake.Revoke("big", "user")
	big := strings.Repeat("x", 100<<10)
	status, _, _ := g.do(request{method: http.MethodPost, path: "/zapier/api/v2/echo", tenant: "big", user: "user", body: big})
	if status != http.StatusUnauthorized {
		t.Fatalf("a 100 KiB POST after revocation got %d, want Zapier's 401 passed through (not replayable)", status)
	}
	// The stale token was evicted: the next request works.
	g.echoAs("big", "user")
}
