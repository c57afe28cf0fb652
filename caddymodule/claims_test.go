package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/zapgate/caddy-zapier/actionclaims"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokenstore"
)

func TestUnmarshalClaims(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier {
		claims {
			billing {
				is_billable true
				usage_type action_run
				origin actions_api
				description "an action run"
				exemption_reason free_tier
				exemption_details "first month"
			}
			rate_limit {
				limit_override 500
			}
			tenant acme {
				billing {
					is_billable false
				}
			}
			tenant "big corp" {
				rate_limit {
					exempt true
				}
			}
		}
	}`)
	val, err := parseGlobalOption(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := val.(httpcaddyfile.App).Value
	var got App
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	c := got.Claims
	if c == nil || c.Billing == nil || c.RateLimit == nil {
		t.Fatalf("claims = %s", raw)
	}
	b := c.Billing
	if b.IsBillable == nil || !*b.IsBillable || b.UsageType != "action_run" || b.Origin != "actions_api" ||
		b.Description != "an action run" || b.ExemptionReason != "free_tier" || b.ExemptionDetails != "first month" {
		t.Errorf("billing = %+v", b)
	}
	if c.RateLimit.LimitOverride != 500 || c.RateLimit.Exempt != nil {
		t.Errorf("rate_limit = %+v", c.RateLimit)
	}
	if o := c.Tenants["acme"]; o == nil || o.Billing == nil || *o.Billing.IsBillable || o.RateLimit != nil {
		t.Errorf("tenant acme = %+v", o)
	}
	if o := c.Tenants["big corp"]; o == nil || o.RateLimit == nil || !*o.RateLimit.Exempt || o.Billing != nil {
		t.Errorf("tenant big corp = %+v", o)
	}
	if !strings.Contains(string(raw), `"claims":{"billing":{"is_billable":true,`) {
		t.Errorf("JSON = %s", raw)
	}
}

func TestUnmarshalClaimsErrors(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"zapier {\n claims {\n bogus\n }\n}", `unrecognized claims option "bogus"`},
		{"zapier {\n claims x\n}", "wrong argument count"},
		{"zapier {\n claims {\n billing {\n is_billable yes\n }\n }\n}", `is_billable: "yes" is not true or false`},
		{"zapier {\n claims {\n billing {\n is_billable\n }\n }\n}", "is_billable takes exactly one value"},
		{"zapier {\n claims {\n billing {\n taxes 1\n }\n }\n}", `unrecognized billing claim field "taxes"`},
		{"zapier {\n claims {\n rate_limit {\n burst 1\n }\n }\n}", `unrecognized rate_limit claim field "burst"`},
		{"zapier {\n claims {\n rate_limit {\n limit_override lots\n }\n }\n}", `limit_override: invalid number "lots"`},
		{"zapier {\n claims {\n tenant {\n }\n }\n}", "tenant takes a tenant id"},
		{"zapier {\n claims {\n tenant a {\n tenant b {\n }\n }\n }\n}", "tenant blocks do not nest"},
		{"zapier {\n claims {\n tenant a {\n billing {\n is_billable true\n }\n }\n tenant a {\n }\n }\n}", `tenant "a" appears twice`},
	} {
		_, err := parseGlobalOption(caddyfile.NewTestDispenser(tc.input), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to contain %q", tc.input, err, tc.want)
		}
	}
}

// TestClaimsJSONUnknownFieldRefused: Caddy decodes app config strictly, so a
// misspelt claim field in JSON config is an error, not silently dropped.
func TestClaimsJSONUnknownFieldRefused(t *testing.T) {
	var a App
	err := caddy.StrictUnmarshalJSON([]byte(`{"claims":{"billing":{"is_billabel":true}}}`), &a)
	if err == nil || !strings.Contains(err.Error(), "is_billabel") {
		t.Errorf("err = %v, want the unknown field named", err)
	}
}

func TestProvisionClaimsNamesTheOption(t *testing.T) {
	yes := true
	a := &App{ClientID: "id", ClientSecret: "s", Issuer: "https://iss",
		Claims: &actionclaims.Config{RateLimit: &actionclaims.RateLimit{Exempt: &yes, LimitOverride: 10}}}
	a.setDefaults()
	err := a.provisionClaims()
	if err == nil || !strings.Contains(err.Error(), "zapier: claims.rate_limit: limit_override has no effect with exempt true") {
		t.Errorf("err = %v", err)
	}
	a.Claims = nil
	if err := a.provisionClaims(); err != nil || a.claimsPolicy != nil {
		t.Errorf("no claims: policy %v, err %v", a.claimsPolicy, err)
	}
}

// TestActionsCallerOnlyWithClaims: without claims zapier_actions uses the
// very token source every capability uses (the cache key is the identity);
// with claims it asks for the tenant's claim-set key.
func TestActionsCallerOnlyWithClaims(t *testing.T) {
	a := &App{tokens: &tokenstore.Store{}}
	if _, ok := a.actionsCaller().Tokens.(appTokens); !ok {
		t.Errorf("without claims the Actions token source is %T, want the plain appTokens", a.actionsCaller().Tokens)
	}
	yes := true
	p, err := (&actionclaims.Config{Billing: &actionclaims.Billing{IsBillable: &yes}}).Compile("sub", "org_id")
	if err != nil {
		t.Fatal(err)
	}
	a.claimsPolicy = p
	ts, ok := a.actionsCaller().Tokens.(actionclaims.Tokens)
	if !ok {
		t.Fatalf("with claims the Actions token source is %T", a.actionsCaller().Tokens)
	}
	id := gateway.Identity{Tenant: "t", User: "u"}
	if k := ts.Policy.KeyFor(id); k == id {
		t.Error("the Actions key with claims is the plain identity")
	}
	if _, ok := a.caller().Tokens.(appTokens); !ok {
		t.Errorf("the other capabilities' caller changed: %T", a.caller().Tokens)
	}
}
