package caddymodule

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// cachePool keeps token caches alive across config reloads: a reload with the
// same credentials must not throw away every user's access token.
var cachePool = caddy.NewUsagePool()

// pooledCache is the token cache shared by every config generation with the
// same credentials. Fetches go through the newest started App.
type pooledCache struct {
	cache *tokencache.Cache
	// The breakers live here, not in the App, so a reload during a Zapier
	// outage does not reset them: breaker guards the token endpoint,
	// apiBreaker the API (each has its own limits and cooldown).
	breaker    *zapierapi.Breaker
	apiBreaker *zapierapi.Breaker
	exchanger  atomic.Pointer[App]
	forgets    gateway.ForgetLog // offboard.go
	lookups    atomic.Uint64
	// waited counts lookups not served from the cache at once; a hit, the
	// common case, costs one atomic add instead of two.
	waited atomic.Uint64
	// revocations counts purges after a key revocation: a fetch that
	// straddles one re-exchanges (fetchToken).
	revocations atomic.Uint64
}

// accessToken returns the identity's access token from the shared cache,
// exchanging on a miss, and counts the lookup.
func (a *App) accessToken(ctx context.Context, key tokencache.Key) (string, error) {
	tok, res, err := a.tokens.get(ctx, key)
	a.metrics.ObserveLookup(res)
	tracing.AnnotateLookup(ctx, res)
	return tok.Value, err
}

func (pc *pooledCache) get(ctx context.Context, key tokencache.Key) (tokencache.Token, tokencache.Result, error) {
	tok, res, err := pc.cache.Get(ctx, key)
	pc.lookups.Add(1)
	if res != tokencache.Hit && res != tokencache.RefreshAhead {
		pc.waited.Add(1)
	}
	return tok, res, err
}

// hitRatio is the share of lookups answered from the cache.
func (pc *pooledCache) hitRatio() float64 {
	n := pc.lookups.Load()
	waited := min(pc.waited.Load(), n) // loaded after n: may count a lookup n has not
	if n == 0 {
		return 0
	}
	return float64(n-waited) / float64(n)
}

func newPooledCache(a *App) (*pooledCache, error) {
	pc := new(pooledCache)
	pc.forgets.Since = time.Now()
	pc.breaker = zapierapi.NewBreaker(zapierapi.BreakerConfig{
		OnOpen: func(openFor time.Duration) {
			if app := pc.exchanger.Load(); app != nil {
				app.breakerOpened(openFor)
			}
		},
	})
	pc.apiBreaker = zapierapi.NewBreaker(zapierapi.BreakerConfig{})
	// A fetch may retry: give it room for every attempt and the backoff
	// between them, and nothing more.
	fetchTimeout := 3*time.Duration(a.Exchange.Timeout) + 5*time.Second
	if a.Cache.Redis != nil {
		fetchTimeout += sharedTokenWait(a) // waiting for another gateway's exchange
	}
	c, err := tokencache.New(tokencache.Config{
		Size:         a.Cache.Size,
		RefreshAhead: time.Duration(a.Cache.RefreshAhead),
		ExpiryMargin: expiryMargin,
		NegativeTTL:  time.Duration(a.Cache.NegativeTTL),
		FetchTimeout: fetchTimeout,
		IsPermanent:  zapierapi.IsPermanent,
		OnEvict: func(tokencache.Key) {
			if app := pc.exchanger.Load(); app != nil {
				app.metrics.CacheEvictions.Inc()
			}
		},
	}, func(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
		app := pc.exchanger.Load()
		if app == nil {
			return tokencache.Token{}, errors.New("no zapier app is running")
		}
		return app.fetchToken(ctx, key) // Redis tier, then exchange (sharedtokens.go)
	})
	if err != nil {
		return nil, err
	}
	pc.cache = c
	return pc, nil
}

// Destruct stops background refreshes when the last config using the cache
// is unloaded.
func (pc *pooledCache) Destruct() error {
	pc.cache.Close()
	return nil
}

var _ caddy.Destructor = (*pooledCache)(nil)
