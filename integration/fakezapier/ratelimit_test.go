package fakezapier

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// clientFrom returns a client whose connections come from the loopback
// address ip, so one test can act as several client IPs.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// getFrom sends GET path from client and returns the status and Retry-After.
func (e *env) getFrom(c *http.Client, path, token string) (int, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestRateLimitsOnFromConfig(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimits = &DocumentedRateLimits })
	tok := e.exchange(e.key("ES256"), "org", "alice")
	for i := range 60 {
		if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
			t.Fatalf("request %d: HTTP %d", i+1, r.status)
		}
	}
	r := e.api(http.MethodGet, "/v2/authentications?app=x", tok, "")
	if r.status != http.StatusTooManyRequests || apiErrorCode(t, r) != "throttled" ||
		r.header.Get("Retry-After") != "60" || r.header.Get("X-RateLimit-Limit") != "60" {
		t.Fatalf("61st request: HTTP %d %v %s", r.status, r.header, r.raw)
	}
	if n := e.fz.ThrottledCount(); n != 1 {
		t.Errorf("ThrottledCount = %d, want 1", n)
	}
	// A nil Config.RateLimits leaves them off (the existing behaviour).
	off := newEnv(t)
	for i := range 100 {
		if r := off.api(http.MethodGet, "/v2/echo", "", ""); r.status != http.StatusUnauthorized {
			t.Fatalf("without limits, request %d: HTTP %d", i+1, r.status)
		}
	}
}

func TestRateLimitsScaledPerIPPartnerAndCooldown(t *testing.T) {
	l := DocumentedRateLimits.Scaled(60)
	if l.PerIP != 60 || l.PerPartner != 150 || l.Window != time.Second || l.Cooldown != time.Second {
		t.Fatalf("Scaled(60) = %+v", l)
	}
	if got := (RateLimits{PerIP: 1}).Scaled(0.5); got.Window != time.Minute || got.Cooldown != time.Minute {
		t.Errorf("a factor below 1 must not stretch the window: %+v", got)
	}
	// A frozen clock: the window is 1 s, and under -race 150 requests can
	// take longer than that in real time.
	clock := newFakeClock()
	e := newEnv(t, func(c *Config) { c.RateLimits = &l; c.Now = clock.now })
	tok := e.exchange(e.key("ES256"), "org", "alice")
	a, b, c, d := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3"), clientFrom(t, "127.0.0.4")

	// Per IP: 60 per (scaled) window, then 429 and a 1 s cooldown.
	for i := range 60 {
		if st, _ := e.getFrom(a, "/v2/echo", tok); st != http.StatusOK {
			t.Fatalf("request %d from .1: HTTP %d", i+1, st)
		}
	}
	if st, h := e.getFrom(a, "/v2/echo", tok); st != http.StatusTooManyRequests || h.Get("Retry-After") != "1" || h.Get("X-RateLimit-Limit") != "60" {
		t.Fatalf("61st from .1: HTTP %d %v", st, h)
	}
	// Other addresses are not affected by .1's cooldown.
	if st, _ := e.getFrom(b, "/v2/echo", ""); st != http.StatusUnauthorized {
		t.Fatalf("from .2 during .1's cooldown: HTTP %d", st)
	}
	clock.advance(999 * time.Millisecond)
	if st, _ := e.getFrom(a, "/v2/echo", tok); st != http.StatusTooManyRequests {
		t.Errorf("just before the cooldown ends: HTTP %d", st)
	}
	clock.advance(time.Millisecond)
	if st, _ := e.getFrom(a, "/v2/echo", tok); st != http.StatusOK {
		t.Errorf("after the cooldown: HTTP %d", st)
	}

	// Per partner: 150 per window across addresses; unauthenticated
	// requests do not count.
	clock.advance(2 * time.Second) // a fresh window
	for i := range 150 {
		cl := []*http.Client{b, c, d}[i%3]
		if st, _ := e.getFrom(cl, "/v2/echo", tok); st != http.StatusOK {
			t.Fatalf("partner request %d: HTTP %d", i+1, st)
		}
	}
	if st, h := e.getFrom(a, "/v2/echo", tok); st != http.StatusTooManyRequests || h.Get("X-RateLimit-Limit") != "150" {
		t.Fatalf("151st partner request: HTTP %d %v", st, h)
	}
	if st, _ := e.getFrom(a, "/v2/echo", ""); st != http.StatusUnauthorized {
		t.Errorf("unauthenticated request during the partner cooldown: HTTP %d", st)
	}
	clock.advance(time.Second)
	if st, _ := e.getFrom(b, "/v2/echo", tok); st != http.StatusOK {
		t.Errorf("partner request after the cooldown: HTTP %d", st)
	}
	if n := e.fz.ThrottledCount(); n != 3 {
		t.Errorf("ThrottledCount = %d, want 3", n)
	}

	// Injected faults are not rate limiting.
	e.fz.FailNextTokenRequests(1, http.StatusTooManyRequests, "5")
	if r := e.postToken(jwtForm(e.mint(e.key("ES256"), "org", "bob"), allScopes), false); r.status != http.StatusTooManyRequests {
		t.Fatalf("injected 429: HTTP %d", r.status)
	}
	if n := e.fz.ThrottledCount(); n != 3 {
		t.Errorf("ThrottledCount after an injected 429 = %d, want 3", n)
	}
	e.fz.ResetCounts()
	if n := e.fz.ThrottledCount(); n != 0 {
		t.Errorf("ThrottledCount after ResetCounts = %d", n)
	}
	if st := e.fz.ActionStats(); st.Throttled != 3 {
		t.Errorf("ActionStats.Throttled = %d, want 3 (not reset)", st.Throttled)
	}
}

// fakeClock is a Config.Now that moves only when told to.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestCallCounts(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	conn := e.fz.AddConnection("org", "alice", testApp, "Slack")
	id := e.actionID(tok, testApp, "send_message")
	e.api(http.MethodPost, "/v2/actions/"+id+"/inputs", tok, `{"data":{"authentication":null,"inputs":{}}}`)
	e.api(http.MethodPost, "/v2/actions/"+id+"/inputs/channel/choices", tok, `{}`)
	res := e.api(http.MethodPost, "/v2/action-runs/", tok, runBody(id, `"`+conn+`"`, `{}`))
	if res.status != http.StatusOK {
		t.Fatalf("create run: HTTP %d %s", res.status, res.raw)
	}
	runID := res.body["data"].(map[string]any)["id"].(string)
	e.api(http.MethodGet, "/v2/action-runs/"+runID, tok, "")
	e.api(http.MethodGet, "/v2/action-runs/"+runID+"/", "", "") // 401 counts too
	e.api(http.MethodGet, "/v2/authentications?app="+testApp, tok, "")
	e.api(http.MethodGet, "/v2/apps", tok, "")
	e.api(http.MethodGet, "/v2/echo/a/b", tok, "")
	e.api(http.MethodGet, "/v2/nope", tok, "")
	e.api(http.MethodGet, "/.well-known/jwks.json", "", "")
	e.api(http.MethodGet, "/elsewhere", "", "")
	e.api("PROPFIND", "/v2/echo", tok, "")

	// Throttled requests count as calls too.
	e.fz.SetRateLimits(RateLimits{PerIP: 1})
	e.api(http.MethodGet, "/v2/actions?app="+testApp, tok, "")
	e.api(http.MethodGet, "/v2/actions?app="+testApp, tok, "")

	want := map[string]int{
		"POST /oauth/token":                            1,
		"GET /v2/actions":                              3,
		"POST /v2/actions/{id}/inputs":                 1,
		"POST /v2/actions/{id}/inputs/{input}/choices": 1,
		"POST /v2/action-runs":                         1,
		"GET /v2/action-runs/{id}":                     2,
		"GET /v2/authentications":                      1,
		"GET /v2/apps":                                 1,
		"GET /v2/echo/{path...}":                       1,
		"GET /v2/*":                                    1,
		"GET /.well-known/jwks.json":                   1,
		"GET *":                                        1,
		"OTHER /v2/echo":                               1,
	}
	if got := e.fz.CallCounts(); !maps.Equal(got, want) {
		keys := slices.Sorted(maps.Keys(got))
		for _, k := range keys {
			t.Logf("%s: %d", k, got[k])
		}
		t.Errorf("CallCounts differ from %v", want)
	}
	if n := e.fz.ThrottledCount(); n != 1 {
		t.Errorf("ThrottledCount = %d, want 1", n)
	}
	e.fz.ResetCounts()
	if got := e.fz.CallCounts(); len(got) != 0 {
		t.Errorf("after ResetCounts: %v", got)
	}
}

func TestRoutePattern(t *testing.T) {
	for path, want := range map[string]string{
		"/oauth/token/":                   "/oauth/token",
		"/v2/actions/":                    "/v2/actions",
		"/v2/actions/core:x/inputs/":      "/v2/actions/{id}/inputs",
		"/v2/actions/core:x/outputs":      "/v2/actions/{id}/outputs",
		"/v2/actions/core:x/test":         "/v2/actions/{id}/test",
		"/v2/actions/core:x":              "/v2/*",
		"/v2/action-runs/123":             "/v2/action-runs/{id}",
		"/v2/authentications/42":          "/v2/authentications/{id}",
		"/v2/whitelabel/apps":             "/v2/whitelabel/apps",
		"/v2/echo":                        "/v2/echo",
		"/v2":                             "/v2/*",
		"/to/SlackCLIAPI":                 "/to/{app}",
		"/healthz":                        "/healthz",
		"/":                               "*",
		"/v2/action-runs/123/extra/stuff": "/v2/*",
	} {
		if got := routePattern(path); got != want {
			t.Errorf("routePattern(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestAPILatency(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	const d = 150 * time.Millisecond
	e.fz.SetAPILatency(d)
	for _, token := range []string{tok, ""} { // 200 and 401 alike
		start := time.Now()
		e.api(http.MethodGet, "/v2/echo", token, "")
		if el := time.Since(start); el < d {
			t.Errorf("answered after %s, want at least %s", el, d)
		}
	}

	// A client that gives up gets no answer, and the request is recorded
	// with status 0.
	e.fz.SetAPILatency(time.Hour)
	e.fz.ResetRecorded()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/v2/echo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with an hour of latency: %v", err)
	}
	waitFor(t, "the abandoned request to be recorded", func() bool { return len(e.fz.Requests()) == 1 })
	if rr := e.fz.Requests()[0]; rr.Status != 0 {
		t.Errorf("abandoned request recorded with status %d", rr.Status)
	}
	e.fz.SetAPILatency(0)
	if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
		t.Errorf("latency off: HTTP %d", r.status)
	}
}

// waitFor polls cond until it holds, failing the test after 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEveryV2RouteIsThrottled(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v2/echo"}, {"POST", "/v2/echo/x"}, {"GET", "/v2/authentications?app=x"},
		{"GET", "/v2/apps"}, {"GET", "/v2/whitelabel/apps"}, {"GET", "/v2/actions?app=x"},
		{"POST", "/v2/actions/core:x/inputs"}, {"POST", "/v2/actions/core:x/inputs/i/choices"},
		{"POST", "/v2/action-runs"}, {"GET", "/v2/action-runs/x"}, {"DELETE", "/v2/authentications/1"},
		{"GET", "/v2"}, {"GET", "/v2/anything/else"},
	} {
		for _, token := range []string{tok, ""} {
			e.fz.SetRateLimits(RateLimits{PerIP: 1, PerPartner: 1})
			e.api(http.MethodGet, "/v2/echo", tok, "") // uses both budgets
			if r := e.api(rt.method, rt.path, token, `{}`); r.status != http.StatusTooManyRequests {
				t.Errorf("%s %s (token %t): HTTP %d, want 429", rt.method, rt.path, token != "", r.status)
			}
		}
	}
}
