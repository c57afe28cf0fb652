package gateway

import (
	"context"
	"net/http"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// TokenSource gives an identity's access token: from the cache, or through
// one (coalesced, limited) exchange on a miss; Evict drops a token Zapier
// refused so the next Token exchanges afresh.
type TokenSource interface {
	Token(ctx context.Context, id Identity) (string, error)
	Evict(id Identity, token string)
}

// Caller is the one way the gateway calls Zapier's API for a user: the
// user's access token from the TokenSource, the request budget (the call's
// context names the tenant it is spent for: WithTenant), the API breaker
// (fail fast while Zapier keeps failing or a 429 cooldown runs), and one
// retry with a fresh token after a 401 (Zapier refused the first call, so
// nothing happened twice). Capabilities make their Zapier call sequences
// through it.
type Caller struct {
	Tokens  TokenSource
	Breaker *zapierapi.Breaker
	// Client and APIURL are what the calls are made with.
	Client *zapierapi.Client
	APIURL string
}

// Call runs call with id's access token. A failed token lookup comes back
// as the gateway's *Error (ExchangeError); Zapier's own failures as they
// are (map them with CallError).
func (c *Caller) Call(ctx context.Context, id Identity, call func(ctx context.Context, access string) error) error {
	ctx = WithTenant(ctx, id.Tenant)
	for attempt := 0; ; attempt++ {
		access, err := c.Tokens.Token(ctx, id)
		if err != nil {
			return ExchangeError(err)
		}
		err = Guard(c.Breaker, func() error { return call(ctx, access) })
		if zerr, ok := zapierapi.AsError(err); ok && zerr.StatusCode == http.StatusUnauthorized && attempt == 0 {
			c.Tokens.Evict(id, access)
			continue
		}
		return err
	}
}

// Guard runs one call to Zapier through breaker b: while Zapier keeps
// failing, or while a 429 cooldown runs, it fails fast with a
// KindUnavailable error carrying Retry-After instead of calling. The token
// endpoint and the API have a breaker each: their rate limits and outages
// are separate.
func Guard(b *zapierapi.Breaker, call func() error) error {
	if err := b.Before(); err != nil {
		return err
	}
	err := call()
	b.After(err)
	return err
}

type tenantKey struct{}

// WithTenant names the tenant a call to Zapier is made for, so the request
// budget can be fair across tenants.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantOf is the tenant WithTenant named, or "".
func TenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}
