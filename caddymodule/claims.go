package caddymodule

// The billing and rate_limit claims of Actions tokens: the `claims` option
// of the zapier app, and the glue that gives zapier_actions its own token
// per claim set. The work is done by the actionclaims package.

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/zapgate/caddy-zapier/actionclaims"
	"github.com/zapgate/caddy-zapier/gateway"
)

// parseClaims reads the `claims` option. Syntax:
//
//	claims {
//		billing {
//			is_billable       true|false
//			origin            <identifier>
//			usage_type        <identifier>
//			description       <text>
//			exemption_reason  <text>
//			exemption_details <text>
//		}
//		rate_limit {
//			exempt         true|false
//			limit_override <1-1000>
//		}
//		tenant <id> {
//			billing    { … }
//			rate_limit { … }
//		}
//	}
func parseClaims(d *caddyfile.Dispenser, c *actionclaims.Config) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	var claims func(nesting int, dst *actionclaims.Claims, tenants bool) error
	claims = func(nesting int, dst *actionclaims.Claims, tenants bool) error {
		for d.NextBlock(nesting) {
			var err error
			switch opt := d.Val(); opt {
			case "billing":
				if d.NextArg() {
					return d.ArgErr()
				}
				dst.Billing = new(actionclaims.Billing)
				err = parseBillingClaim(d, dst.Billing)
			case "rate_limit":
				if d.NextArg() {
					return d.ArgErr()
				}
				dst.RateLimit = new(actionclaims.RateLimit)
				err = parseRateLimitClaim(d, dst.RateLimit)
			case "tenant":
				if !tenants {
					return d.Err("claims: tenant blocks do not nest")
				}
				var id string
				if !d.NextArg() {
					return d.Err("claims: tenant takes a tenant id and a block")
				}
				id = d.Val()
				if d.NextArg() {
					return d.ArgErr()
				}
				if _, dup := c.Tenants[id]; dup {
					return d.Errf("claims: tenant %q appears twice", id)
				}
				o := new(actionclaims.Claims)
				if c.Tenants == nil {
					c.Tenants = map[string]*actionclaims.Claims{}
				}
				c.Tenants[id] = o
				err = claims(d.Nesting(), o, false)
			default:
				return d.Errf("unrecognized claims option %q (billing, rate_limit, tenant)", opt)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	var def actionclaims.Claims
	if err := claims(d.Nesting(), &def, true); err != nil {
		return err
	}
	c.Billing, c.RateLimit = def.Billing, def.RateLimit
	return nil
}

func parseBillingClaim(d *caddyfile.Dispenser, b *actionclaims.Billing) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "is_billable":
			b.IsBillable, err = oneBool(d)
		case "origin":
			err = oneString(d, &b.Origin)
		case "usage_type":
			err = oneString(d, &b.UsageType)
		case "description":
			err = oneString(d, &b.Description)
		case "exemption_reason":
			err = oneString(d, &b.ExemptionReason)
		case "exemption_details":
			err = oneString(d, &b.ExemptionDetails)
		default:
			return d.Errf("unrecognized billing claim field %q (is_billable, origin, usage_type, description, exemption_reason, exemption_details)", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parseRateLimitClaim(d *caddyfile.Dispenser, r *actionclaims.RateLimit) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "exempt":
			r.Exempt, err = oneBool(d)
		case "limit_override":
			err = oneInt(d, &r.LimitOverride)
		default:
			return d.Errf("unrecognized rate_limit claim field %q (exempt, limit_override)", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func oneBool(d *caddyfile.Dispenser) (*bool, error) {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return nil, d.Errf("%s takes exactly one value: true or false", opt)
	}
	v, err := strconv.ParseBool(s)
	if err != nil || (s != "true" && s != "false") {
		return nil, d.Errf("%s: %q is not true or false", opt, s)
	}
	return &v, nil
}

// provisionClaims checks the claims option; it runs after the defaults are
// filled in (the identity claim names).
func (a *App) provisionClaims() error {
	p, err := a.Claims.Compile(a.UserClaim, a.TenantClaim)
	if err != nil {
		return fmt.Errorf("zapier: %w", err)
	}
	a.claimsPolicy = p
	return nil
}

// actionsCaller is the Zapier caller of zapier_actions: with claims
// configured, each tenant's claim set has its own token (minted with the
// claims, cached apart); every other capability keeps the plain token.
func (a *App) actionsCaller() *gateway.Caller {
	c := a.caller()
	if a.claimsPolicy != nil {
		c.Tokens = actionclaims.Tokens{Next: c.Tokens, Policy: a.claimsPolicy}
	}
	return c
}
