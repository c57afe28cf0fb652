package integration

import (
	"fmt"
	"net/http"
	"testing"
)

// Issue #22 item 4: GET /zapier/mcp/authorize spends a token exchange per
// request; it skipped rate_limit, so one identity could spend Zapier's
// token-endpoint limit for everyone. Routes now declare a class and the
// default is limited: 30 quick authorize requests from one identity get 20
// redirects and 10 rate_limited, and Zapier sees at most 20 exchanges.
func TestMCPAuthorizeIsLimitedPerIdentity(t *testing.T) {
	g := startMCPGateway(t, "")
	before := g.fake.Stats().TokenRequests
	redirected, limited := 0, 0
	alice := g.mcpBrowser("org_rl", "alice")
	authorize := gatewayURL + "/zapier/mcp/authorize?app=" + mcpSlack + "&return_to=/done"
	for range 30 {
		switch status, _ := alice.get(authorize); status {
		case http.StatusFound:
			redirected++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("GET authorize: %d", status)
		}
	}
	status, hdr, raw := g.do(request{path: "/zapier/mcp/authorize?app=" + mcpSlack + "&return_to=/done", tenant: "org_rl", user: "alice"})
	expectError(t, status, hdr, raw, http.StatusTooManyRequests, "rate_limited")
	if redirected != 20 || limited != 10 {
		t.Fatalf("%d redirected, %d rate limited; want 20 and 10", redirected, limited)
	}
	if n := g.fake.Stats().TokenRequests - before; n > 20 {
		t.Errorf("Zapier's token endpoint saw %d requests for 20 admitted authorize requests", n)
	}
	// Another user of the tenant is not limited by alice's requests.
	if status, _ := g.mcpBrowser("org_rl", "bob").get(authorize); status != http.StatusFound {
		t.Errorf("bob: %d", status)
	}
}

// Issue #22 item 10: a page whose name is rebound to 127.0.0.1 makes the
// victim's browser a loopback source, trusted to assert any identity. A
// loopback request whose Host names neither a loopback name nor one of the
// gateway's names is refused on every route, zapier_auth's proxy included,
// and browser-facing routes refuse a foreign Origin.
func TestDNSRebindingIsRefusedOnEveryRoute(t *testing.T) {
	callback := gatewayURL + "/zapier/connect/callback"
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s\n\t\tidentity {\n\t\t\tallowed_hosts sidecar.internal\n\t\t}", callback, partnerOrigin),
		siteExtra: fmt.Sprintf(`handle_path /zapier/connect/* {
		zapier_connect {
			app %s %s
		}
	}
	handle_path /zapier/actions/* {
		zapier_actions
	}
	handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %s
		}
	}`, slackApp, slackUUID, mcpCallbackURL),
	})
	g.fake.RegisterPartner(partnerOrigin, callback)
	g.fake.RegisterApp(slackApp, slackUUID)
	g.fake.RegisterMCPApp(mcpSlack, "Slack")
	before := g.fake.Stats()
	routes := []request{
		{path: "/zapier/api/v2/echo"},
		{path: "/zapier/connect/connections"},
		{method: http.MethodPost, path: "/zapier/connect/token", body: `{"app":"` + slackApp + `"}`, header: http.Header{"Content-Type": {"application/json"}}},
		{path: "/zapier/actions/actions?app=" + slackUUID},
		{path: "/zapier/mcp/apps"},
		{path: "/zapier/mcp/authorize?app=" + mcpSlack + "&return_to=/done"},
		{method: http.MethodPost, path: "/zapier/mcp/", body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`,
			header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}}},
		{method: http.MethodPost, path: "/zapier/mcp/" + mcpSlack, body: `{}`, header: http.Header{"Content-Type": {"application/json"}}},
	}
	for _, rebound := range []string{"rebind.attacker.example", fmt.Sprintf("rebind.attacker.example:%d", gatewayPort), "localhost.attacker.example"} {
		for _, r := range routes {
			r.tenant, r.user, r.host = "org", "alice", rebound
			status, hdr, raw := g.do(r)
			if status != http.StatusForbidden {
				t.Errorf("%s %s with Host %s: %d %s, want 403 host_refused", r.method, r.path, rebound, status, raw)
				continue
			}
			expectError(t, status, hdr, raw, http.StatusForbidden, "host_refused")
		}
	}
	if after := g.fake.Stats(); after.TokenRequests != before.TokenRequests || after.APIRequests != before.APIRequests {
		t.Errorf("a refused request reached Zapier: %+v → %+v", before, after)
	}
	// The gateway's own names are served: loopback names, allowed_hosts.
	for _, host := range []string{fmt.Sprintf("localhost:%d", gatewayPort), "sidecar.internal", fmt.Sprintf("127.0.0.1:%d", gatewayPort)} {
		status, _, raw := g.do(request{path: "/zapier/connect/connections", tenant: "org", user: "alice", host: host})
		if status != http.StatusOK {
			t.Errorf("Host %s: %d %s", host, status, raw)
		}
	}
	// A browser-facing route called from a foreign page's Origin.
	status, hdr, raw := g.do(request{method: http.MethodPost, path: "/zapier/connect/token", tenant: "org", user: "alice", body: `{"app":"` + slackApp + `"}`,
		header: http.Header{"Content-Type": {"application/json"}, "Origin": {"https://evil.example"}}})
	expectError(t, status, hdr, raw, http.StatusForbidden, "origin_refused")
	status, _, raw = g.do(request{method: http.MethodPost, path: "/zapier/connect/token", tenant: "org", user: "alice", body: `{"app":"` + slackApp + `"}`,
		header: http.Header{"Content-Type": {"application/json"}, "Origin": {partnerOrigin}}})
	if status != http.StatusOK {
		t.Errorf("the partner's own Origin: %d %s", status, raw)
	}
}
