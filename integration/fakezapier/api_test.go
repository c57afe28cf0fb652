package fakezapier

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEchoRequiresLiveToken(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	tok := e.exchange(k, "org", "alice")

	// No token, unknown token, wrong scheme.
	for name, auth := range map[string]string{"none": "", "unknown": "Bearer fzat_unknown", "basic": "Basic Zm9vOmJhcg=="} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v2/echo", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res := e.do(req)
		if res.status != http.StatusUnauthorized || apiErrorCode(t, res) != "not_authenticated" {
			t.Errorf("%s: HTTP %d %s", name, res.status, res.raw)
		}
		if !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", name, res.header.Get("WWW-Authenticate"))
		}
	}

	// Live token: the request is reflected.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v2/echo/a%2Fb/c?x=1&y=two", strings.NewReader(`{"hello":"world"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Add("X-Multi", "1")
	req.Header.Add("X-Multi", "2")
	res := e.do(req)
	if res.status != http.StatusOK {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	var echo EchoResponse
	if err := json.Unmarshal([]byte(res.raw), &echo); err != nil {
		t.Fatal(err)
	}
	if echo.Method != "POST" || echo.Path != "/v2/echo/a/b/c" || echo.RawPath != "/v2/echo/a%2Fb/c" ||
		echo.Query != "x=1&y=two" || echo.Body != `{"hello":"world"}` || echo.Tenant != "org" || echo.User != "alice" {
		t.Errorf("echo %+v", echo)
	}
	if echo.Headers.Get("Authorization") != "Bearer "+tok || len(echo.Headers["X-Multi"]) != 2 ||
		echo.Headers.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", echo.Headers)
	}

	// Revoked → 401.
	if n := e.fz.Revoke("org", "alice"); n != 1 {
		t.Errorf("Revoke = %d", n)
	}
	res = e.api(http.MethodGet, "/v2/echo", tok, "")
	if res.status != http.StatusUnauthorized || !strings.Contains(res.raw, "revoked") {
		t.Errorf("revoked: HTTP %d %s", res.status, res.raw)
	}
	if n := e.fz.Revoke("org", "alice"); n != 0 {
		t.Errorf("second Revoke = %d", n)
	}

	// RevokeToken revokes one token only.
	t1, t2 := e.exchange(k, "org", "bob"), e.exchange(k, "org", "bob")
	if e.fz.LiveTokens("org", "bob") != 2 || !e.fz.RevokeToken(t1) || e.fz.RevokeToken(t1) || e.fz.LiveTokens("org", "bob") != 1 {
		t.Errorf("RevokeToken bookkeeping")
	}
	if e.api(http.MethodGet, "/v2/echo", t1, "").status != http.StatusUnauthorized ||
		e.api(http.MethodGet, "/v2/echo", t2, "").status != http.StatusOK {
		t.Errorf("RevokeToken affected the wrong token")
	}

	// Expired → 401.
	t3 := e.exchange(k, "org", "carol")
	e.advance(time.Hour)
	res = e.api(http.MethodGet, "/v2/echo", t3, "")
	if res.status != http.StatusUnauthorized || !strings.Contains(res.raw, "expired") {
		t.Errorf("expired: HTTP %d %s", res.status, res.raw)
	}
	if tenant, user, ok := e.fz.TokenOwner(t3); !ok || tenant != "org" || user != "carol" {
		t.Errorf("TokenOwner of an expired token: %q %q %v", tenant, user, ok)
	}
	if e.fz.LiveTokens("org", "carol") != 0 {
		t.Errorf("expired token counted live")
	}

	st := e.fz.Stats()
	if st.Unauthorized != 6 || st.APIRequests != 8 {
		t.Errorf("stats %+v", st)
	}
}

func TestExpiryWithShortTTL(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AccessTokenTTL = 10 * time.Second })
	k := e.key("ES256")
	tok := e.exchange(k, "t", "u")
	e.advance(9 * time.Second)
	if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
		t.Fatalf("before expiry: HTTP %d", r.status)
	}
	e.advance(time.Second)
	if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusUnauthorized {
		t.Fatalf("at expiry: HTTP %d", r.status)
	}
}

func TestRecordedRequests(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxRecorded = 3 })
	k := e.key("ES256")
	tok := e.exchange(k, "org", "alice")
	e.api(http.MethodGet, "/v2/echo?a=1", tok, "")
	e.api(http.MethodPut, "/v2/echo/x", tok, "body-1")
	e.api(http.MethodGet, "/v2/echo", "", "")
	e.api(http.MethodGet, "/v2/unknown", tok, "")
	got := e.fz.Requests()
	if len(got) != 3 {
		t.Fatalf("%d recorded, want 3 (ring)", len(got))
	}
	if got[0].Method != "PUT" || got[0].Path != "/v2/echo/x" || string(got[0].Body) != "body-1" ||
		got[0].Tenant != "org" || got[0].User != "alice" || got[0].Status != 200 ||
		got[0].Header.Get("Authorization") != "Bearer "+tok || got[0].Time.IsZero() {
		t.Errorf("first %+v", got[0])
	}
	if got[1].Tenant != "" || got[1].Status != 401 {
		t.Errorf("second %+v", got[1])
	}
	if got[2].Path != "/v2/unknown" || got[2].Status != 404 {
		t.Errorf("third %+v", got[2])
	}
	e.fz.ResetRecorded()
	if len(e.fz.Requests()) != 0 {
		t.Fatal("not reset")
	}
	e.api(http.MethodGet, "/v2/echo?q=1", tok, "")
	if r := e.fz.Requests(); len(r) != 1 || r[0].RawQuery != "q=1" {
		t.Errorf("after reset: %+v", r)
	}
}

func TestAuthenticationsAndUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	tok := e.exchange(k, "org", "alice")

	res := e.api(http.MethodGet, "/v2/authentications?app=81f613aa-c98a-4383-a5fc-195e68647217", tok, "")
	const empty = `{"links":{"next":null,"prev":null},"meta":{"count":0,"limit":10,"offset":0},"data":[]}`
	if res.status != http.StatusOK || strings.TrimSpace(res.raw) != empty {
		t.Fatalf("HTTP %d %s", res.status, res.raw)
	}
	res = e.api(http.MethodGet, "/v2/authentications", tok, "")
	if res.status != http.StatusBadRequest || apiErrorCode(t, res) != "invalid" {
		t.Errorf("no app: HTTP %d %s", res.status, res.raw)
	}
	res = e.api(http.MethodGet, "/v2/authentications?app=x&limit=0", tok, "")
	if res.status != http.StatusBadRequest {
		t.Errorf("limit=0: HTTP %d", res.status)
	}
	if r := e.api(http.MethodGet, "/v2/authentications?app=x", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d", r.status)
	}
	if r := e.api(http.MethodDelete, "/v2/authentications?app=x", tok, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: HTTP %d", r.status)
	}

	// Connections are per identity and app; pagination links.
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.fz.AddConnection("org", "alice", "app-1", fmt.Sprintf("Slack %d", i)))
	}
	e.fz.AddConnection("org", "bob", "app-1", "Bob's")
	e.fz.AddConnection("org", "alice", "app-2", "Other app")
	e.fz.SetConnectionExpired(ids[1], true)
	res = e.api(http.MethodGet, "/v2/authentications?app=app-1&limit=2", tok, "")
	var env struct {
		Links struct{ Next, Prev *string }
		Meta  struct{ Count, Limit, Offset int }
		Data  []Authentication
	}
	if err := json.Unmarshal([]byte(res.raw), &env); err != nil {
		t.Fatal(err)
	}
	if env.Meta.Count != 3 || env.Meta.Limit != 2 || len(env.Data) != 2 || env.Links.Next == nil || env.Links.Prev != nil ||
		env.Data[0].ID != ids[0] || env.Data[1].ID != ids[1] || !env.Data[1].IsExpired || env.Data[0].Type != "authentication" {
		t.Fatalf("page 1: %s", res.raw)
	}
	next := strings.TrimPrefix(*env.Links.Next, e.srv.URL)
	res = e.api(http.MethodGet, next, tok, "")
	env.Data = nil
	_ = json.Unmarshal([]byte(res.raw), &env)
	if len(env.Data) != 1 || env.Data[0].ID != ids[2] || env.Links.Prev == nil || env.Links.Next != nil {
		t.Fatalf("page 2: %s", res.raw)
	}

	// Scope connection:read required.
	res = e.postToken(jwtForm(e.mint(k, "org", "alice"), "zap"), false)
	narrow := res.str("access_token")
	if r := e.api(http.MethodGet, "/v2/authentications?app=app-1", narrow, ""); r.status != http.StatusForbidden || apiErrorCode(t, r) != "permission_denied" {
		t.Errorf("without connection:read: HTTP %d %s", r.status, r.raw)
	}

	// Unknown /v2 route: 404 with a token, 401 without.
	if r := e.api(http.MethodGet, "/v2/nothing-here", tok, ""); r.status != http.StatusNotFound || apiErrorCode(t, r) != "not_found" {
		t.Errorf("unknown route: HTTP %d %s", r.status, r.raw)
	}
	if r := e.api(http.MethodGet, "/v2/nothing-here", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("unknown route without token: HTTP %d", r.status)
	}
	if r := e.api(http.MethodGet, "/healthz", "", ""); r.status != http.StatusOK {
		t.Errorf("healthz: HTTP %d", r.status)
	}
	if r := e.api(http.MethodGet, "/elsewhere", "", ""); r.status != http.StatusNotFound {
		t.Errorf("non-API path: HTTP %d", r.status)
	}
}

// TestConcurrent fires 200 concurrent exchanges and API calls.
func TestConcurrent(t *testing.T) {
	e := newEnv(t)
	keys := []*testKey{e.key("ES256"), e.key("RS256")}
	var wg sync.WaitGroup
	errs := make(chan string, 400)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant, user := fmt.Sprintf("t%d", i%10), fmt.Sprintf("u%d", i)
			res := e.postToken(jwtForm(e.mint(keys[i%2], tenant, user), "connection:read"), false)
			if res.status != http.StatusOK {
				errs <- res.raw
				return
			}
			tok := res.str("access_token")
			r := e.api(http.MethodGet, "/v2/echo", tok, "")
			if r.status != http.StatusOK || r.str("user") != user {
				errs <- r.raw
			}
			if i%3 == 0 {
				e.fz.Revoke(tenant, user)
			}
			_ = e.fz.Stats()
			_ = e.fz.Requests()
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	st := e.fz.Stats()
	if st.Exchanges != 200 || st.APIRequests != 200 || len(e.fz.Requests()) != 200 {
		t.Errorf("stats %+v", st)
	}
	if st.JWKSFetches > 3 {
		t.Errorf("JWKSFetches = %d", st.JWKSFetches)
	}
}

func TestDeleteAuthentication(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	alice := e.exchange(k, "org", "alice")
	mine := e.fz.AddConnection("org", "alice", "app-1", "Slack")
	bobs := e.fz.AddConnection("org", "bob", "app-1", "Bob's")

	for name, tc := range map[string]struct {
		id     string
		status int
	}{
		"another user's": {bobs, http.StatusNotFound},
		"unknown":        {"999", http.StatusNotFound},
	} {
		if r := e.api(http.MethodDelete, "/v2/authentications/"+tc.id, alice, ""); r.status != tc.status {
			t.Errorf("%s: HTTP %d %s", name, r.status, r.raw)
		}
	}
	if r := e.api(http.MethodGet, "/v2/authentications/"+mine, alice, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET one: HTTP %d", r.status)
	}
	e.fz.FailNextAuthenticationDeletes(1, http.StatusServiceUnavailable)
	if r := e.api(http.MethodDelete, "/v2/authentications/"+mine, alice, ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("injected failure: HTTP %d", r.status)
	}
	if r := e.api(http.MethodDelete, "/v2/authentications/"+mine, alice, ""); r.status != http.StatusNoContent || r.raw != "" {
		t.Errorf("delete: HTTP %d %s", r.status, r.raw)
	}
	if r := e.api(http.MethodDelete, "/v2/authentications/"+mine, alice, ""); r.status != http.StatusNotFound {
		t.Errorf("deleted twice: HTTP %d", r.status)
	}
	if n := len(e.fz.Connections("org", "alice", "app-1")); n != 0 || e.fz.AuthenticationDeletes() != 1 || len(e.fz.Connections("org", "bob", "app-1")) != 1 {
		t.Errorf("after: alice %d, deletes %d", n, e.fz.AuthenticationDeletes())
	}
}
