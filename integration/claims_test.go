package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// claimsExtra is the zapier option of the claims tests: the actions tests'
// settings plus a claims block.
func claimsExtra(claims string) string {
	return fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s\n\t\trate_limit {\n\t\t\tidentity off\n\t\t\ttenant off\n\t\t}\n\t\t%s",
		gatewayURL, gatewayURL, claims)
}

const claimsV1 = `claims {
			billing {
				is_billable true
			}
			rate_limit {
				limit_override 500
			}
			tenant free {
				billing {
					is_billable false
					exemption_reason free_tier
				}
			}
		}`

// claimsV2 changes the free tenant's billing only.
const claimsV2 = `claims {
			billing {
				is_billable true
			}
			rate_limit {
				limit_override 500
			}
			tenant free {
				billing {
					is_billable true
					usage_type action_run
				}
			}
		}`

// claimsRun runs send_message for (tenant, user) and fails t unless it
// succeeds.
func claimsRun(g *gateway, tenant, user string) {
	g.t.Helper()
	status, _, body := g.do(request{method: http.MethodPost, path: "/zapier/actions/run", tenant: tenant, user: user,
		header: http.Header{"Content-Type": {"application/json"}},
		body:   `{"app":"` + actApp + `","action":"send_message","inputs":{"channel":"#general"}}`})
	if status != http.StatusOK {
		g.t.Fatalf("POST run as %s/%s: %d %s", tenant, user, status, body)
	}
}

// actionsCall tells the fake's requests zapier_actions makes (action list,
// inputs, runs) from the others.
func actionsCall(path string) bool {
	return strings.HasPrefix(path, "/v2/actions") || strings.HasPrefix(path, "/v2/action-runs") || strings.HasPrefix(path, "/actions/")
}

// TestClaimsPerTenantOnActionsCallsOnly: two tenants with different billing
// claims run an action and call Zapier through zapier_auth; the fake saw
// each tenant's claims on its Actions calls, and none on the calls of
// Connect or the other proxied calls (connection checks and listing,
// the connect-token exchange). A reload that changes one tenant's claims
// mints that tenant a new Actions token with the new claims.
func TestClaimsPerTenantOnActionsCallsOnly(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: claimsExtra(claimsV1), siteExtra: actSite})
	g.fake.RegisterApp(actApp, actAppUUID)
	g.fake.SetActions(actAppUUID, fakezapier.ActionSpec{Key: "send_message", Title: "Send Channel Message"})

	for _, id := range [][2]string{{"paid", "alice"}, {"free", "bob"}} {
		tenant, user := id[0], id[1]
		g.actConnect(tenant, user)
		claimsRun(g, tenant, user)
		// Connect's own calls: listing the stored connections and a connect
		// token (exchanged from the user's plain access token).
		if status, _, body := g.do(request{method: http.MethodGet, path: "/zapier/connect/connections", tenant: tenant, user: user}); status != http.StatusOK {
			t.Fatalf("GET connections: %d %s", status, body)
		}
		if status, _, body := g.do(request{method: http.MethodPost, path: "/zapier/connect/token", tenant: tenant, user: user,
			header: http.Header{"Content-Type": {"application/json"}}, body: `{"app":"` + actApp + `"}`}); status != http.StatusOK {
			t.Fatalf("POST token: %d %s", status, body)
		}
		// A backend's own calls through zapier_auth: to the Actions API with
		// the claims, to anything else without.
		for _, path := range []string{"/zapier/api/v2/actions?app=" + actAppUUID, "/zapier/api/v2/authentications?app=" + actAppUUID} {
			if status, _, body := g.do(request{method: http.MethodGet, path: path, tenant: tenant, user: user}); status != http.StatusOK {
				t.Fatalf("GET %s through zapier_auth: %d %s", path, status, body)
			}
		}
	}

	wantBilling := map[string]string{"paid": `{"is_billable":true}`, "free": `{"is_billable":false,"exemption_reason":"free_tier"}`}
	actionsCalls, otherCalls := 0, 0
	for _, r := range g.fake.RequestClaims() {
		if actionsCall(r.Path) {
			actionsCalls++
			if r.Claims.BillingRaw != wantBilling[r.Tenant] || r.Claims.RateLimit["limit_override"] != float64(500) {
				t.Errorf("%s %s as %s/%s carried billing %q, rate_limit %v; want billing %q, limit_override 500",
					r.Method, r.Path, r.Tenant, r.User, r.Claims.BillingRaw, r.Claims.RateLimit, wantBilling[r.Tenant])
			}
			continue
		}
		otherCalls++
		if !r.Claims.None() {
			t.Errorf("%s %s (not an Actions call) as %s/%s carried claims %+v", r.Method, r.Path, r.Tenant, r.User, r.Claims)
		}
	}
	runs := 0
	for _, r := range g.fake.ActionRuns() { // stored runs and /v2/action-runs alike
		if r.Tenant == "paid" || r.Tenant == "free" {
			runs++
		}
	}
	if runs != 2 || actionsCalls < 4 || otherCalls == 0 {
		t.Errorf("%d runs, %d Actions calls, %d other calls: the test did not exercise both kinds", runs, actionsCalls, otherCalls)
	}
	connects := g.fake.ConnectExchangeClaims()
	if len(connects) < 2 {
		t.Errorf("%d connect-token exchanges, want one per user at least", len(connects))
	}
	for _, c := range connects {
		if !c.None() {
			t.Errorf("a connect-token exchange's subject token carried claims %+v", c)
		}
	}

	// Each user: one plain token (Connect) and one Actions token.
	for _, id := range [][2]string{{"paid", "alice"}, {"free", "bob"}} {
		if n := g.fake.ExchangesFor(id[0], id[1]); n != 2 {
			t.Errorf("%s/%s: %d exchanges, want 2 (the plain token and the Actions token)", id[0], id[1], n)
		}
	}

	// A reload that changes the free tenant's claims: bob's next run is
	// made with a new token carrying them; alice's claims are unchanged, so
	// her cached Actions token is used again.
	g.opts.zapierExtra = claimsExtra(claimsV2)
	if err := g.reload(g.opts.siteExtra); err != nil {
		t.Fatal(err)
	}
	waitForSingleListener(t, gatewayPort)
	g.fake.ResetRecorded()
	claimsRun(g, "free", "bob")
	claimsRun(g, "paid", "alice")
	if n := g.fake.ExchangesFor("free", "bob"); n != 3 {
		t.Errorf("free/bob: %d exchanges after the reload, want 3 (a new Actions token)", n)
	}
	if n := g.fake.ExchangesFor("paid", "alice"); n != 2 {
		t.Errorf("paid/alice: %d exchanges after the reload, want still 2 (her claims did not change)", n)
	}
	wantBilling["free"] = `{"is_billable":true,"usage_type":"action_run"}`
	seen := map[string]bool{}
	for _, r := range g.fake.RequestClaims() {
		if !actionsCall(r.Path) {
			continue
		}
		seen[r.Tenant] = true
		if r.Claims.BillingRaw != wantBilling[r.Tenant] {
			t.Errorf("after the reload %s %s as %s carried billing %q, want %q", r.Method, r.Path, r.Tenant, r.Claims.BillingRaw, wantBilling[r.Tenant])
		}
	}
	if !seen["free"] || !seen["paid"] {
		t.Errorf("Actions calls after the reload by %v, want both tenants", seen)
	}
}

// TestClaimsRefusedAtLoad: a bad claims block is refused when the config
// loads, naming the option.
func TestClaimsRefusedAtLoad(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: claimsExtra(claimsV1), siteExtra: actSite})
	g.opts.zapierExtra = claimsExtra("claims {\n\t\t\trate_limit {\n\t\t\t\tlimit_override 5000\n\t\t\t}\n\t\t}")
	err := g.reload(g.opts.siteExtra)
	if err == nil || !strings.Contains(err.Error(), "claims.rate_limit.limit_override 5000: Zapier accepts 1-1000") {
		t.Errorf("reload with limit_override 5000: %v", err)
	}
}
