package fakezapier

import (
	"net/http"
	"strings"
	"testing"
)

// exchangeWith exchanges a JWT carrying extra claims.
func (e *env) exchangeWith(k *testKey, tenant, user string, extra map[string]any) tokenResult {
	e.t.Helper()
	claims := e.claims(tenant, user)
	for name, v := range extra {
		claims[name] = v
	}
	return e.postToken(jwtForm(sign(e.t, k, claims), allScopes), false)
}

func TestUsageClaimsRecordedPerAccessToken(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	plain := e.exchange(k, "t1", "u1")
	res := e.exchangeWith(k, "t1", "u1", map[string]any{
		"billing":    `{"is_billable":true,"usage_type":"action_run","exemption_reason":null}`,
		"rate_limit": map[string]any{"limit_override": 500},
	})
	if res.status != http.StatusOK {
		t.Fatalf("exchange with claims: %d %s", res.status, res.raw)
	}
	claimed := res.str("access_token")

	if uc, ok := e.fz.ClaimsOf(plain); !ok || !uc.None() {
		t.Errorf("plain token's claims = %+v, %v", uc, ok)
	}
	uc, ok := e.fz.ClaimsOf(claimed)
	if !ok || !uc.Billable() || uc.Billing["usage_type"] != "action_run" || uc.RateLimit["limit_override"] != float64(500) {
		t.Errorf("claims = %+v, %v", uc, ok)
	}
	if limit, exempt := e.fz.StoredActionsLimit(claimed); limit != 500 || exempt {
		t.Errorf("limit = %d, %v; want the override", limit, exempt)
	}
	if limit, exempt := e.fz.StoredActionsLimit(plain); limit != DefaultStoredActionsLimit || exempt {
		t.Errorf("plain limit = %d, %v; want the default", limit, exempt)
	}

	// Both tokens work on the API; the requests are told apart by claims.
	e.api(http.MethodGet, "/v2/authentications", plain, "")
	e.api(http.MethodGet, "/v2/authentications", claimed, "")
	rcs := e.fz.RequestClaims()
	if len(rcs) != 2 || !rcs[0].Claims.None() || !rcs[1].Claims.Billable() || rcs[1].Tenant != "t1" {
		t.Errorf("RequestClaims = %+v", rcs)
	}

	// A connect exchange records its subject's claims.
	e.postToken(connectForm(plain, "https://connect.zapier.com/to/SlackAPI", "connection:write"), false)
	if cs := e.fz.ConnectExchangeClaims(); len(cs) != 1 || !cs[0].None() {
		t.Errorf("ConnectExchangeClaims = %+v", cs)
	}
}

// TestExemptOnlyWhereGranted: rate_limit.exempt lifts the limit only for a
// partner granted the exemption.
func TestExemptOnlyWhereGranted(t *testing.T) {
	for _, granted := range []bool{false, true} {
		e := newEnv(t, func(c *Config) { c.RateLimitExemptGranted = granted })
		k := e.key("ES256")
		res := e.exchangeWith(k, "t", "u", map[string]any{"rate_limit": map[string]any{"exempt": true}})
		if res.status != http.StatusOK {
			t.Fatalf("exchange: %d %s", res.status, res.raw)
		}
		tok := res.str("access_token")
		uc, _ := e.fz.ClaimsOf(tok)
		if !uc.ExemptRequested() {
			t.Errorf("exempt not recorded: %+v", uc)
		}
		limit, exempt := e.fz.StoredActionsLimit(tok)
		if exempt != granted || (!granted && limit != DefaultStoredActionsLimit) {
			t.Errorf("granted=%v: limit %d, exempt %v", granted, limit, exempt)
		}
		e.fz.SetRateLimitExemptGranted(!granted)
		if _, exempt := e.fz.StoredActionsLimit(tok); exempt == granted {
			t.Errorf("SetRateLimitExemptGranted(%v) did not apply", !granted)
		}
	}
}

func TestMalformedUsageClaimsRefused(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"billing object", map[string]any{"billing": map[string]any{"is_billable": true}}, `"billing" is an object; Zapier documents it as a JSON string`},
		{"billing not JSON", map[string]any{"billing": "yes"}, `"billing" is a string but not a JSON object`},
		{"billing unknown field", map[string]any{"billing": `{"tax":1}`}, `unknown field "tax"`},
		{"billing wrong type", map[string]any{"billing": `{"is_billable":"true"}`}, `is_billable is a string, want bool`},
		{"rate_limit string", map[string]any{"rate_limit": `{"exempt":true}`}, `"rate_limit" is a string, want an object`},
		{"rate_limit wrong type", map[string]any{"rate_limit": map[string]any{"exempt": 1}}, `exempt is a number, want bool`},
		{"limit fraction", map[string]any{"rate_limit": map[string]any{"limit_override": 1.5}}, `limit_override is a number, want int`},
		{"limit range", map[string]any{"rate_limit": map[string]any{"limit_override": 1001}}, `limit_override 1001 is outside 1-1000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.exchangeWith(k, "t", "u", tc.extra)
			if res.status != http.StatusBadRequest || res.str("error") != "invalid_grant" || !strings.Contains(res.str("error_description"), tc.want) {
				t.Errorf("got %d %s; want 400 invalid_grant naming %q", res.status, res.raw, tc.want)
			}
		})
	}
}
