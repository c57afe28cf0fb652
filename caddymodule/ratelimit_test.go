package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalRateLimit(t *testing.T) {
	var a App
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier {\n rate_limit {\n identity 5 1m\n tenant off\n }\n}"))
	if err != nil {
		t.Fatal(err)
	}
	rl := a.RateLimit
	if rl == nil || rl.Identity == nil || rl.Identity.Events != 5 || time.Duration(rl.Identity.Window) != time.Minute || rl.Tenant == nil || !rl.Tenant.Off {
		t.Fatalf("parsed %+v", rl)
	}
	for input, want := range map[string]string{
		"rate_limit {\n identity 0 1m\n }":   "not a positive number",
		"rate_limit {\n identity x 1m\n }":   "not a positive number",
		"rate_limit {\n identity 5 soon\n }": "not a positive duration",
		"rate_limit {\n identity 5 -1s\n }":  "not a positive duration",
		"rate_limit {\n identity 5\n }":      "takes <requests> <window>",
		"rate_limit {\n tenant on\n }":       "takes <requests> <window>",
		"rate_limit {\n user 5 1m\n }":       `unrecognized zapier rate_limit option "user"`,
		"rate_limit extra":                   "wrong argument count",
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier {\n " + input + "\n}"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", input, err, want)
		}
	}
}

// JSON users get the same defaults and the same refusals.
func TestRateLimitDefaultsAndValidation(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	a := &App{}
	if err := a.provisionRateLimits(ctx); err != nil {
		t.Fatal(err)
	}
	if *a.RateLimit.Identity != defaultIdentityLimit || *a.RateLimit.Tenant != defaultTenantLimit || a.limits.identity == nil || a.limits.tenant == nil {
		t.Fatalf("defaults: %+v %+v", a.RateLimit.Identity, a.RateLimit.Tenant)
	}
	bad := &App{RateLimit: &RateLimitConfig{Identity: &RateLimit{Events: -3, Window: caddy.Duration(time.Minute)}, Tenant: &RateLimit{Events: 5}}}
	err := bad.provisionRateLimits(ctx)
	if err == nil || !strings.Contains(err.Error(), "rate_limit.identity") || !strings.Contains(err.Error(), "rate_limit.tenant") {
		t.Fatalf("err = %v, want both limits named", err)
	}
}
