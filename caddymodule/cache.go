package caddymodule

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/tokenstore"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// cachePool keeps token caches alive across config reloads: a reload with the
// same credentials must not throw away every user's access token.
var cachePool = caddy.NewUsagePool()

// accessToken returns the identity's access token from the shared store,
// exchanging on a miss, and counts the lookup.
func (a *App) accessToken(ctx context.Context, key tokencache.Key) (string, error) {
	tok, res, err := a.tokens.Get(ctx, key)
	a.metrics.ObserveLookup(res)
	tracing.AnnotateLookup(ctx, res)
	return tok.Value, err
}

// newTokenStore builds the token store of a's credentials.
func newTokenStore(a *App) (*tokenstore.Store, error) {
	// A fetch may retry: give it room for every attempt and the backoff
	// between them, and nothing more.
	fetchTimeout := 3*time.Duration(a.Exchange.Timeout) + 5*time.Second
	if a.Cache.Redis != nil {
		fetchTimeout += sharedTokenWait(a) // waiting for another gateway's exchange
	}
	return tokenstore.New(tokencache.Config{
		Size:         a.Cache.Size,
		RefreshAhead: time.Duration(a.Cache.RefreshAhead),
		ExpiryMargin: expiryMargin,
		NegativeTTL:  time.Duration(a.Cache.NegativeTTL),
		FetchTimeout: fetchTimeout,
		IsPermanent:  zapierapi.IsPermanent,
	})
}

// tokenGeneration is what this config lends the token store: its exchange,
// its Redis tier and claims, its logger and metrics.
func (a *App) tokenGeneration() *tokenstore.Generation {
	g := &tokenstore.Generation{
		Exchange:      a.exchange,
		Shared:        a.shared,
		BreakerOpened: a.breakerOpened,
		Evicted:       func() { a.metrics.CacheEvictions.Inc() },
		SharedFetch:   func(o sharedtokens.Outcome) { sharedTokenFetches.WithLabelValues(o.String()).Inc() },
		PurgeFailed:   func(err error) { a.logger.Warn("purging the shared token tier", zap.Error(err)) },
	}
	if p := a.claimsPolicy; p != nil {
		g.ActionsKey = func(key tokencache.Key) (tokencache.Key, bool) {
			k := p.KeyFor(key)
			return k, k != key
		}
	}
	return g
}
