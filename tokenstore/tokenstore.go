// Package tokenstore keeps the users' Zapier access tokens: the in-memory
// cache (which outlives config reloads), the Redis tier sidecars share, and
// the breakers in front of Zapier's token endpoint and API. It counts
// lookups for the hit ratio, evicts an identity's tokens everywhere they
// live (its Actions token too), and re-exchanges a fetch that straddled a
// key revocation.
package tokenstore

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Generation is what the newest configuration lends the store: how to get
// a token the cache does not have, and whom to tell what happened. Fields
// may be nil.
type Generation struct {
	// Exchange mints a JWT and trades it for an access token. Required.
	Exchange tokencache.FetchFunc
	// Shared is the Redis tier; nil when off.
	Shared *sharedtokens.Tier
	// ActionsKey is the cache key of an identity's Actions token (minted
	// with its tenant's claims); ok false when its tenant has none.
	ActionsKey func(tokencache.Key) (key tokencache.Key, ok bool)
	// BreakerOpened hears the token endpoint's breaker open.
	BreakerOpened func(openFor time.Duration)
	// Evicted hears a token dropped to make room.
	Evicted func()
	// SharedFetch hears how a fetch through the Redis tier was answered.
	SharedFetch func(sharedtokens.Outcome)
	// PurgeFailed hears the Redis tier refusing a purge.
	PurgeFailed func(error)
}

// Store is the token store one set of credentials shares across reloads.
type Store struct {
	Cache *tokencache.Cache
	// Breaker guards the token endpoint, APIBreaker the API (each has its
	// own limits and cooldown); they outlive reloads, so a reload during
	// an outage does not reset them.
	Breaker, APIBreaker *zapierapi.Breaker
	// Forgets is the offboardings applied from the shared forget log.
	Forgets gateway.ForgetLog

	gen     atomic.Pointer[Generation]
	lookups atomic.Uint64
	// waited counts lookups not served from the cache at once; a hit, the
	// common case, costs one atomic add instead of two.
	waited atomic.Uint64
	// revocations counts purges after a key revocation: a fetch that
	// straddles one re-exchanges.
	revocations atomic.Uint64
}

// New builds a store over a cache configured by cfg (its fetch and
// eviction hook are the store's).
func New(cfg tokencache.Config) (*Store, error) {
	s := new(Store)
	s.Forgets.Since = time.Now()
	s.Breaker = zapierapi.NewBreaker(zapierapi.BreakerConfig{
		OnOpen: func(openFor time.Duration) {
			if g := s.gen.Load(); g != nil && g.BreakerOpened != nil {
				g.BreakerOpened(openFor)
			}
		},
	})
	s.APIBreaker = zapierapi.NewBreaker(zapierapi.BreakerConfig{})
	cfg.OnEvict = func(tokencache.Key) {
		if g := s.gen.Load(); g != nil && g.Evicted != nil {
			g.Evicted()
		}
	}
	c, err := tokencache.New(cfg, s.fetch)
	if err != nil {
		return nil, err
	}
	s.Cache = c
	return s, nil
}

// Use makes g the generation fetches and evictions go through.
func (s *Store) Use(g *Generation) { s.gen.Store(g) }

// Destruct stops background refreshes (the last configuration using the
// store was unloaded).
func (s *Store) Destruct() error {
	s.Cache.Close()
	return nil
}

// Get returns key's token, fetching on a miss, and counts the lookup.
func (s *Store) Get(ctx context.Context, key tokencache.Key) (tokencache.Token, tokencache.Result, error) {
	tok, res, err := s.Cache.Get(ctx, key)
	s.lookups.Add(1)
	if res != tokencache.Hit && res != tokencache.RefreshAhead {
		s.waited.Add(1)
	}
	return tok, res, err
}

// HitRatio is the share of lookups answered from the cache at once.
func (s *Store) HitRatio() float64 {
	n := s.lookups.Load()
	waited := min(s.waited.Load(), n) // loaded after n: may count a lookup n has not
	if n == 0 {
		return 0
	}
	return float64(n-waited) / float64(n)
}

// fetch is the cache's fetch: through the Redis tier when it is on, else
// straight to the exchange. A fetch that straddles a key revocation may
// hold a token minted with the revoked key, obtained after the purge: it is
// dropped (from Redis too) and fetched once more.
func (s *Store) fetch(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
	g := s.gen.Load()
	if g == nil {
		return tokencache.Token{}, errors.New("no zapier app is running")
	}
	for attempt := 0; ; attempt++ {
		revocations := s.revocations.Load()
		tok, err := g.fetchOnce(ctx, key)
		if err != nil || attempt > 0 || s.revocations.Load() == revocations {
			return tok, err
		}
		if g.Shared != nil {
			g.Shared.Forget(ctx, key, tok.Value)
		}
	}
}

func (g *Generation) fetchOnce(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
	if g.Shared == nil {
		return g.Exchange(ctx, key)
	}
	tok, outcome, err := g.Shared.Fetch(ctx, key, g.Exchange)
	if g.SharedFetch != nil {
		g.SharedFetch(outcome)
	}
	return tok, err
}

func (s *Store) shared() *sharedtokens.Tier {
	if g := s.gen.Load(); g != nil {
		return g.Shared
	}
	return nil
}

func (s *Store) actionsKey(key tokencache.Key) (tokencache.Key, bool) {
	if g := s.gen.Load(); g != nil && g.ActionsKey != nil {
		return g.ActionsKey(key)
	}
	return key, false
}

// EvictToken drops key's token if it is still value, from Redis first (so
// that a concurrent miss here cannot bring it back) and then from this
// gateway's cache. Callers use it when Zapier refused the token.
func (s *Store) EvictToken(key tokencache.Key, value string) {
	if t := s.shared(); t != nil {
		t.Forget(context.Background(), key, value)
	}
	s.Cache.EvictToken(key, value)
}

// Evict drops key's tokens, its Actions token included, here and in Redis
// (offboarding, admin purge of one identity). Tokens of an earlier claim
// set are no longer used and expire.
func (s *Store) Evict(ctx context.Context, key tokencache.Key) bool {
	t := s.shared()
	evicted := false
	for _, k := range s.keysOf(key) {
		if t != nil {
			t.Evict(ctx, k)
		}
		evicted = s.Cache.Evict(k) || evicted
	}
	return evicted
}

// EvictLocal drops key's tokens from this gateway's cache only (an
// offboarding another gateway logged, which cleared Redis itself).
func (s *Store) EvictLocal(key tokencache.Key) bool {
	evicted := false
	for _, k := range s.keysOf(key) {
		evicted = s.Cache.Evict(k) || evicted
	}
	return evicted
}

func (s *Store) keysOf(key tokencache.Key) []tokencache.Key {
	if k, ok := s.actionsKey(key); ok {
		return []tokencache.Key{k, key}
	}
	return []tokencache.Key{key}
}

// Purge drops every token here and in Redis (admin purge of all) and
// returns how many this gateway held.
func (s *Store) Purge(ctx context.Context) int {
	if t := s.shared(); t != nil {
		if _, err := t.Purge(ctx); err != nil {
			if g := s.gen.Load(); g.PurgeFailed != nil {
				g.PurgeFailed(err)
			}
		}
	}
	n := s.Cache.Len()
	s.Cache.Purge()
	return n
}

// Revoked purges every token after a signing key was revoked; fetches in
// flight re-exchange.
func (s *Store) Revoked(ctx context.Context) int {
	s.revocations.Add(1)
	return s.Purge(ctx)
}
