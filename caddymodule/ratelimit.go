package caddymodule

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/ratelimit"
)

// Defaults of the end-user rate limits: one identity may make 20 requests a
// minute to the zapier_connect and zapier_actions routes (bursts of 20),
// one tenant 200 a minute.
var (
	defaultIdentityLimit = RateLimit{Events: 20, Window: caddy.Duration(time.Minute)}
	defaultTenantLimit   = RateLimit{Events: 200, Window: caddy.Duration(time.Minute)}
)

// RateLimitConfig limits the end-user routes (zapier_connect and
// zapier_actions), which spend Zapier calls on behalf of one browser: per
// identity and per tenant, so that one user cannot use up Zapier's rate
// limit for everyone. A refused request gets 429 rate_limited with
// Retry-After and costs Zapier nothing. zapier_auth (the partner backend's
// proxy) is not limited here.
type RateLimitConfig struct {
	// Per (tenant, user). Default 20 per 1m.
	Identity *RateLimit `json:"identity,omitempty"`
	// Per tenant, all its users together. Default 200 per 1m.
	Tenant *RateLimit `json:"tenant,omitempty"`
}

// RateLimit allows Events requests per Window, in bursts of up to Events.
type RateLimit struct {
	Events int            `json:"events,omitempty"`
	Window caddy.Duration `json:"window,omitempty"`
	// Off turns this limit off.
	Off bool `json:"off,omitempty"`
}

// endUserLimits are the provisioned limiters; a nil limiter allows all.
type endUserLimits struct {
	identity, tenant *ratelimit.Limiter
}

// rateLimited counts requests refused by the end-user rate limits.
var rateLimited = func() *prometheus.CounterVec {
	c := metrics.NewCounterVec("rate_limited_total",
		"End-user requests to limited routes (Connect, actions, triggers, MCP authorize and apps) refused by the rate limit, by the limit that refused them (identity, tenant).", "scope")
	c.WithLabelValues("identity")
	c.WithLabelValues("tenant")
	return c
}()

// provisionRateLimits fills the defaults and builds the limiters.
func (a *App) provisionRateLimits(ctx caddy.Context) error {
	if err := metrics.Register(ctx.GetMetricsRegistry(), rateLimited); err != nil {
		return err
	}
	if a.RateLimit == nil {
		a.RateLimit = new(RateLimitConfig)
	}
	var errs []error
	build := func(name string, l **RateLimit, def RateLimit) *ratelimit.Limiter {
		if *l == nil {
			*l = new(RateLimit)
		}
		if (*l).Off {
			return nil
		}
		if (*l).Events == 0 && (*l).Window == 0 {
			**l = def
		}
		lim, err := ratelimit.New(ratelimit.Config{Events: (*l).Events, Window: time.Duration((*l).Window)})
		if err != nil || lim == nil {
			errs = append(errs, fmt.Errorf("rate_limit.%s: %d per %s: want a positive number of requests per positive window, or off",
				name, (*l).Events, time.Duration((*l).Window)))
		}
		return lim
	}
	a.limits = &endUserLimits{
		identity: build("identity", &a.RateLimit.Identity, defaultIdentityLimit),
		tenant:   build("tenant", &a.RateLimit.Tenant, defaultTenantLimit),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("zapier: %w", err)
	}
	return nil
}

// unmarshalCaddyfile parses
//
//	rate_limit {
//		identity <requests> <window> | off
//		tenant   <requests> <window> | off
//	}
func (c *RateLimitConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var dst **RateLimit
		switch opt {
		case "identity":
			dst = &c.Identity
		case "tenant":
			dst = &c.Tenant
		default:
			return d.Errf("unrecognized zapier rate_limit option %q", opt)
		}
		l, err := parseRateLimit(d, "rate_limit "+opt)
		if err != nil {
			return err
		}
		*dst = l
	}
	return nil
}

// parseRateLimit parses the arguments "<requests> <window>" or "off" of
// the option named what.
func parseRateLimit(d *caddyfile.Dispenser, what string) (*RateLimit, error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		return &RateLimit{Off: true}, nil
	case len(args) == 2:
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 {
			return nil, d.Errf("%s: %q is not a positive number of requests", what, args[0])
		}
		win, err := caddy.ParseDuration(args[1])
		if err != nil || win <= 0 {
			return nil, d.Errf("%s: %q is not a positive duration", what, args[1])
		}
		return &RateLimit{Events: n, Window: caddy.Duration(win)}, nil
	}
	return nil, d.Errf("%s takes <requests> <window> (e.g. 20 1m) or off", what)
}
