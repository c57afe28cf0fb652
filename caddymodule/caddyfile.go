package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/actionclaims"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("zapier", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("zapier_auth", parseHandler[Auth])
	httpcaddyfile.RegisterHandlerDirective("zapier_jwks", parseHandler[JWKS])
	// Token injection must run before the proxy; the responders answer
	// before a catch-all respond.
	httpcaddyfile.RegisterDirectiveOrder("zapier_auth", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterDirectiveOrder("zapier_jwks", httpcaddyfile.Before, "respond")
}

// handlerModule is a handler that parses its own Caddyfile tokens.
type handlerModule[T any] interface {
	*T
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}

func parseHandler[T any, PT handlerModule[T]](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := PT(new(T))
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

func parseGlobalOption(d *caddyfile.Dispenser, existingVal any) (any, error) {
	if existingVal != nil {
		return nil, d.Err("the zapier global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "zapier", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile parses the zapier global option. Syntax:
//
//	zapier {
//		client_id     <id>
//		client_secret <secret>
//		issuer        <iss>
//		audience      <aud>
//		user_claim    <name>
//		tenant_claim  <name>
//		jwt_ttl       <duration>
//		signing_alg   ES256|ES384|ES512|RS256|RS384|RS512
//		key_rotation  <duration>
//		key_overlap   <duration>
//		key_sync      <duration>
//		scopes        <scope...>
//		token_url     <url>
//		api_url       <url>
//		connect_url   <url>
//		callback_url  <url>
//		return_origins <origin...>
//		exchange {
//			grant_type | subject_token_type | access_token_type | connect_token_type <urn>
//			client_auth post|basic
//			timeout <duration>
//			max_inflight <n>
//		}
//		identity {
//			user_header <name>
//			tenant_header <name>
//			trusted_sources <cidr...>
//			allowed_hosts <name...>
//		}
//		cache {
//			size <n>
//			refresh_ahead | default_ttl | negative_ttl <duration>
//			redis         <url>
//			redis_key     <base64 of 32 bytes>
//			redis_timeout <duration>
//			redis_prefix  <prefix>
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var err error
		switch opt := d.Val(); opt {
		case "client_id":
			err = oneString(d, &a.ClientID)
		case "client_secret":
			err = oneString(d, &a.ClientSecret)
		case "issuer":
			err = oneString(d, &a.Issuer)
		case "audience":
			err = oneString(d, &a.Audience)
		case "user_claim":
			err = oneString(d, &a.UserClaim)
		case "tenant_claim":
			err = oneString(d, &a.TenantClaim)
		case "signing_alg":
			err = oneString(d, &a.SigningAlg)
		case "token_url":
			err = oneString(d, &a.TokenURL)
		case "api_url":
			err = oneString(d, &a.APIURL)
		case "connect_url":
			err = oneString(d, &a.ConnectURL)
		case "callback_url":
			err = oneString(d, &a.CallbackURL)
		case "jwt_ttl":
			err = oneDuration(d, &a.JWTTTL)
		case "key_rotation":
			a.KeyRotation = new(caddy.Duration)
			err = oneDuration(d, a.KeyRotation)
		case "key_overlap":
			err = oneDuration(d, &a.KeyOverlap)
		case "key_sync":
			err = oneDuration(d, &a.KeySync)
		case "scopes":
			err = someStrings(d, &a.Scopes)
		case "return_origins":
			err = someStrings(d, &a.ReturnOrigins)
		case "exchange":
			a.Exchange = new(ExchangeConfig)
			err = a.Exchange.unmarshalCaddyfile(d)
		case "identity":
			a.Identity = new(IdentityConfig)
			err = a.Identity.unmarshalCaddyfile(d)
		case "cache":
			a.Cache = new(CacheConfig)
			err = a.Cache.unmarshalCaddyfile(d)
		case "api_budget":
			err = a.parseAPIBudget(d)
		case "usage", "quota": // usage.go
			err = a.parseUsage(d)
		case "rate_limit": // ratelimit.go
			a.RateLimit = new(RateLimitConfig)
			err = a.RateLimit.unmarshalCaddyfile(d)
		case "claims": // claims.go
			a.Claims = new(actionclaims.Config)
			err = parseClaims(d, a.Claims)
		default:
			return d.Errf("unrecognized zapier option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *ExchangeConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "grant_type":
			err = oneString(d, &e.GrantType)
		case "subject_token_type":
			err = oneString(d, &e.SubjectTokenType)
		case "access_token_type":
			err = oneString(d, &e.AccessTokenType)
		case "connect_token_type":
			err = oneString(d, &e.ConnectTokenType)
		case "client_auth":
			err = oneString(d, &e.ClientAuth)
		case "timeout":
			err = oneDuration(d, &e.Timeout)
		case "max_inflight":
			err = oneInt(d, &e.MaxInflight)
		default:
			return d.Errf("unrecognized zapier exchange option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *IdentityConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "user_header":
			err = oneString(d, &c.UserHeader)
		case "tenant_header":
			err = oneString(d, &c.TenantHeader)
		case "trusted_sources":
			err = someStrings(d, &c.TrustedSources)
		case "allowed_hosts":
			err = someStrings(d, &c.AllowedHosts)
		default:
			return d.Errf("unrecognized zapier identity option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *CacheConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "size":
			err = oneInt(d, &c.Size)
		case "refresh_ahead":
			err = oneDuration(d, &c.RefreshAhead)
		case "default_ttl":
			err = oneDuration(d, &c.DefaultTTL)
		case "negative_ttl":
			err = oneDuration(d, &c.NegativeTTL)
		case "redis": // the shared token tier (sharedtokens.go)
			err = oneString(d, &c.redis().URL)
		case "redis_key":
			err = oneString(d, &c.redis().Key)
		case "redis_timeout":
			err = oneDuration(d, &c.redis().Timeout)
		case "redis_prefix":
			err = oneString(d, &c.redis().Prefix)
		default:
			return d.Errf("unrecognized zapier cache option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func oneString(d *caddyfile.Dispenser, dst *string) error {
	opt := d.Val()
	if !d.AllArgs(dst) {
		return d.Errf("%s takes exactly one value", opt)
	}
	return nil
}

func someStrings(d *caddyfile.Dispenser, dst *[]string) error {
	opt := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s takes one or more values", opt)
	}
	*dst = append(*dst, args...)
	return nil
}

func oneDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return d.Errf("%s takes exactly one duration", opt)
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: invalid duration %q: %v", opt, s, err)
	}
	*dst = caddy.Duration(dur)
	return nil
}

func oneInt(d *caddyfile.Dispenser, dst *int) error {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return d.Errf("%s takes exactly one number", opt)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("%s: invalid number %q", opt, s)
	}
	*dst = n
	return nil
}

// Interface guards.
var _ caddyfile.Unmarshaler = (*App)(nil)
