package integration

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// The review's reproduction: 70 quick POST token from one browser. With the
// default limit (20 per minute per identity) 20 reach Zapier and 50 get 429
// rate_limited with Retry-After; the same identity is refused on the
// actions routes too (one budget), and another user of the tenant is not.
func TestOneIdentityCannotFloodZapier(t *testing.T) {
	callback := gatewayURL + "/zapier/connect/callback"
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s", callback, partnerOrigin),
		siteExtra: fmt.Sprintf("handle_path /zapier/connect/* {\n\t\tzapier_connect {\n\t\t\tapp %s %s\n\t\t}\n\t}\n\thandle_path /zapier/actions/* {\n\t\tzapier_actions\n\t}",
			slackApp, slackUUID),
	})
	g.fake.RegisterPartner(partnerOrigin, callback)
	g.fake.RegisterApp(slackApp, slackUUID)
	alice := newHTTPBrowser(g, "org_rl", "alice")
	before := g.fake.Stats().ConnectExchanges
	limitedBefore := scrapeMetric(t, "caddy_zapier_rate_limited_total", `scope="identity"`)
	ok, limited := 0, 0
	start := time.Now()
	for range 70 {
		status, hdr, raw := alice.call(http.MethodPost, "token", map[string]any{"app": slackApp})
		switch status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			expectError(t, status, hdr, raw, http.StatusTooManyRequests, "rate_limited")
			if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 || s > 60 {
				t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
			}
		default:
			t.Fatalf("POST token: %d %s", status, raw)
		}
	}
	// The limit is a token bucket (one more every 3 s): a loaded machine
	// that takes longer than 3 s for the 70 requests earns one more each 3 s.
	refills := int(time.Since(start) / (3 * time.Second))
	if ok < 20 || ok > 20+refills || ok+limited != 70 {
		t.Fatalf("%d answered, %d rate limited in %d refill periods; want 20 (+ %d) and the rest limited", ok, limited, refills, refills)
	}
	if issued := g.fake.Stats().ConnectExchanges - before; issued != ok {
		t.Errorf("Zapier issued %d connect tokens, want %d", issued, ok)
	}
	status, hdr, raw := g.do(request{path: "/zapier/actions/actions?app=" + slackUUID, tenant: "org_rl", user: "alice"})
	expectError(t, status, hdr, raw, http.StatusTooManyRequests, "rate_limited")
	bob := newHTTPBrowser(g, "org_rl", "bob")
	if status, _, raw := bob.call(http.MethodPost, "token", map[string]any{"app": slackApp}); status != http.StatusOK {
		t.Errorf("bob, same tenant: %d %s", status, raw)
	}
	if n := scrapeMetric(t, "caddy_zapier_rate_limited_total", `scope="identity"`) - limitedBefore; n != float64(limited+1) {
		t.Errorf("caddy_zapier_rate_limited_total{scope=identity} grew by %v, want %d", n, limited+1)
	}
}

// Configured limits: the tenant's budget caps its users together.
func TestTenantLimitCapsAllItsUsers(t *testing.T) {
	g := startGateway(t, gatewayOptions{
		zapierExtra: "rate_limit {\n\t\t\tidentity 5 1m\n\t\t\ttenant 8 1h\n\t\t}",
		siteExtra:   "handle_path /zapier/actions/* {\n\t\tzapier_actions\n\t}",
	})
	call := func(tenant, user string) int {
		status, _, _ := g.do(request{path: "/zapier/actions/actions?app=" + slackUUID, tenant: tenant, user: user})
		return status
	}
	counts := map[string]int{}
	for _, user := range []string{"u1", "u1", "u1", "u1", "u1", "u1", "u2", "u2", "u2", "u2", "u3"} {
		if call("org_t", user) != http.StatusTooManyRequests {
			counts[user]++
		}
	}
	// u1: 5 (its own limit), u2: 3 (the tenant's 8 are spent), u3: none.
	if counts["u1"] != 5 || counts["u2"] != 3 || counts["u3"] != 0 {
		t.Fatalf("passed per user %v, want u1:5 u2:3 u3:0", counts)
	}
	if call("org_other", "u1") == http.StatusTooManyRequests {
		t.Error("another tenant was limited")
	}
	status, hdr, raw := g.do(request{path: "/zapier/actions/actions?app=" + slackUUID, tenant: "org_t", user: "u3"})
	expectError(t, status, hdr, raw, http.StatusTooManyRequests, "rate_limited")
	if ra, _ := strconv.Atoi(hdr.Get("Retry-After")); ra < 60*60/8-1 || ra > 60*60/8+1 {
		t.Errorf("Retry-After %q, want the tenant's 450s", hdr.Get("Retry-After"))
	}
}
