package actionclaims

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/jwks"
)

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func compile(t *testing.T, c *Config) *Policy {
	t.Helper()
	p, err := c.Compile("sub", "org_id")
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// decode returns the claims one Set adds, as a JWT payload would hold them.
func decode(t *testing.T, s Set) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte("{"+strings.TrimPrefix(string(s.Extra), ",")+"}"), &m); err != nil {
		t.Fatalf("extra %s: %v", s.Extra, err)
	}
	return m
}

func TestNoConfigNoPolicy(t *testing.T) {
	for _, c := range []*Config{nil, {}, {Tenants: map[string]*Claims{}}} {
		p, err := c.Compile("sub", "org_id")
		if err != nil || p != nil {
			t.Errorf("Compile(%+v) = %v, %v; want nil, nil", c, p, err)
		}
		id := gateway.Identity{Tenant: "t", User: "u"}
		if k := p.KeyFor(id); k != id {
			t.Errorf("KeyFor with no claims = %#v, want the identity itself", k)
		}
	}
}

// TestBillingIsAJSONStringRateLimitAnObject: the encoding Zapier documents,
// and only the fields set (Zapier fills in its defaults).
func TestBillingIsAJSONStringRateLimitAnObject(t *testing.T) {
	p := compile(t, &Config{
		Billing:   &Billing{IsBillable: yes(), UsageType: "action_run"},
		RateLimit: &RateLimit{LimitOverride: 500},
	})
	m := decode(t, p.For("any"))
	s, ok := m["billing"].(string)
	if !ok {
		t.Fatalf("billing is %T, want a JSON string", m["billing"])
	}
	var billing map[string]any
	if err := json.Unmarshal([]byte(s), &billing); err != nil {
		t.Fatalf("billing %q is not JSON: %v", s, err)
	}
	if len(billing) != 2 || billing["is_billable"] != true || billing["usage_type"] != "action_run" {
		t.Errorf("billing = %v", billing)
	}
	rl, ok := m["rate_limit"].(map[string]any)
	if !ok || len(rl) != 1 || rl["limit_override"] != float64(500) {
		t.Errorf("rate_limit = %#v", m["rate_limit"])
	}
}

func TestTenantOverrideBeatsDefault(t *testing.T) {
	p := compile(t, &Config{
		Billing:   &Billing{IsBillable: yes()},
		RateLimit: &RateLimit{Exempt: no(), LimitOverride: 300},
		Tenants: map[string]*Claims{
			"free":  {Billing: &Billing{IsBillable: no(), ExemptionReason: "free_tier"}},
			"vip":   {RateLimit: &RateLimit{Exempt: yes()}},
			"other": {Billing: &Billing{IsBillable: yes()}, RateLimit: &RateLimit{Exempt: no(), LimitOverride: 300}},
		},
	})
	def, free, vip, other := p.For("acme"), p.For("free"), p.For("vip"), p.For("other")
	if b := decode(t, free)["billing"]; b != `{"is_billable":false,"exemption_reason":"free_tier"}` {
		t.Errorf("free's billing = %v", b)
	}
	if rl := decode(t, free)["rate_limit"].(map[string]any); rl["limit_override"] != float64(300) {
		t.Errorf("free's rate_limit (inherited) = %v", rl)
	}
	if rl := decode(t, vip)["rate_limit"].(map[string]any); rl["exempt"] != true || len(rl) != 1 {
		t.Errorf("vip's rate_limit = %v", rl)
	}
	if b := decode(t, vip)["billing"]; b != `{"is_billable":true}` {
		t.Errorf("vip's billing (inherited) = %v", b)
	}
	if def.Digest == free.Digest || def.Digest == vip.Digest || free.Digest == vip.Digest {
		t.Error("different claims share a digest")
	}
	// The same claims spelled as an override are the same set, and share
	// the cache entry's digest.
	if other.Digest != def.Digest || string(other.Extra) != string(def.Extra) {
		t.Errorf("an override equal to the default has another digest: %s vs %s", other.Extra, def.Extra)
	}
}

func TestKeysKeepClaimSetsApart(t *testing.T) {
	id := gateway.Identity{Tenant: "t1", User: "u1"}
	a := compile(t, &Config{Billing: &Billing{IsBillable: yes()}})
	b := compile(t, &Config{Billing: &Billing{IsBillable: no()}})
	ka, kb := a.KeyFor(id), b.KeyFor(id)
	if ka == id || kb == id || ka == kb {
		t.Fatalf("keys %#v, %#v for %#v: claim sets must be cached apart and apart from the plain token", ka, kb, id)
	}
	if ka.Tenant != id.Tenant {
		t.Errorf("the key's tenant %q is not the identity's (EvictTenant would miss it)", ka.Tenant)
	}
	got, digest, ok := Split(ka)
	if !ok || got != id || digest != a.For("t1").Digest {
		t.Errorf("Split(%#v) = %#v, %q, %v", ka, got, digest, ok)
	}
	if _, _, ok := Split(id); ok {
		t.Error("a plain identity splits as a claims key")
	}
	// Same claims in another config: same key (a reload keeps the token).
	if again := compile(t, &Config{Billing: &Billing{IsBillable: yes()}}); again.KeyFor(id) != ka {
		t.Error("the same claims in a new config give another key")
	}
}

// TestMintIncludesClaimsOnlyForActionsTokens: the plain key mints a JWT
// without the claims; the Actions key (Tokens) mints one with them.
func TestMintIncludesClaimsOnlyForActionsTokens(t *testing.T) {
	m, err := jwks.NewManager(jwks.NewMemoryStorage(), jwks.Config{Issuer: "https://iss.example"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := compile(t, &Config{Billing: &Billing{IsBillable: yes()}, RateLimit: &RateLimit{Exempt: yes()}})
	rec := &recordingSource{}
	actionsTokens := Tokens{Next: rec, Policy: p}
	id := gateway.Identity{Tenant: "t1", User: "u1"}

	mint := func(k gateway.Identity) map[string]any {
		mid, extra, err := Mint(k)
		if err != nil {
			t.Fatal(err)
		}
		if mid != id {
			t.Fatalf("minting for %#v, want %#v", mid, id)
		}
		tok, err := m.MintWith(mid.Tenant, mid.User, extra)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims map[string]any
		if err := json.Unmarshal(raw, &claims); err != nil {
			t.Fatal(err)
		}
		return claims
	}

	plain := mint(id) // what every other capability's token source asks for
	if _, ok := plain["billing"]; ok {
		t.Errorf("plain token's JWT carries billing: %v", plain)
	}
	if _, ok := plain["rate_limit"]; ok {
		t.Errorf("plain token's JWT carries rate_limit: %v", plain)
	}

	if _, err := actionsTokens.Token(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	actions := mint(rec.last)
	if actions["billing"] != `{"is_billable":true}` || actions["sub"] != "u1" || actions["org_id"] != "t1" {
		t.Errorf("Actions token's JWT = %v", actions)
	}
	if rl, _ := actions["rate_limit"].(map[string]any); rl["exempt"] != true {
		t.Errorf("Actions token's rate_limit = %v", actions["rate_limit"])
	}

	actionsTokens.Evict(id, "tok")
	if rec.evicted != rec.last {
		t.Errorf("Evict reached %#v, want the Actions key %#v", rec.evicted, rec.last)
	}

	if _, _, err := Mint(Key(id, "0123456789abcdef0123456789abcdef")); err == nil {
		t.Error("Mint of an unknown claim set succeeded")
	}
}

type recordingSource struct{ last, evicted gateway.Identity }

func (r *recordingSource) Token(_ context.Context, id gateway.Identity) (string, error) {
	r.last = id
	return "tok", nil
}
func (r *recordingSource) Evict(id gateway.Identity, _ string) { r.evicted = id }

func TestCompileRefusesBadClaims(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"empty billing", Config{Billing: &Billing{}}, "claims.billing: set at least one field"},
		{"empty rate_limit", Config{RateLimit: &RateLimit{}}, "claims.rate_limit: set exempt or limit_override"},
		{"limit too low", Config{RateLimit: &RateLimit{LimitOverride: -1}}, "limit_override -1: Zapier accepts 1-1000"},
		{"limit too high", Config{RateLimit: &RateLimit{LimitOverride: 1001}}, "limit_override 1001"},
		{"exempt and limit", Config{RateLimit: &RateLimit{Exempt: yes(), LimitOverride: 5}}, "no effect with exempt true"},
		{"usage_type", Config{Billing: &Billing{UsageType: "Action Run"}}, `usage_type "Action Run": want a lower-case identifier`},
		{"origin", Config{Billing: &Billing{Origin: "x-y"}}, `origin "x-y"`},
		{"control char", Config{Billing: &Billing{Description: "a\nb"}}, "billing.description: at most 512 bytes"},
		{"tenant id", Config{Tenants: map[string]*Claims{"": {Billing: &Billing{IsBillable: yes()}}}}, `claims.tenants[""]: a tenant id`},
		{"empty tenant", Config{Tenants: map[string]*Claims{"t": {}}}, `claims.tenants["t"]: names neither`},
		{"tenant's bad value", Config{Tenants: map[string]*Claims{"t": {RateLimit: &RateLimit{LimitOverride: 2000}}}}, `claims.tenants["t"].rate_limit.limit_override 2000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Compile("sub", "org_id")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Compile = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c := Config{Billing: &Billing{IsBillable: yes()}}
	if _, err := c.Compile("sub", "billing"); err == nil || !strings.Contains(err.Error(), `identity claim "billing" collides`) {
		t.Errorf("a tenant claim named billing: %v", err)
	}
}
