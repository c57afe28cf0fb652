package tokenstore

import (
	"context"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

func newStore(t *testing.T, g *Generation) *Store {
	t.Helper()
	s, err := New(tokencache.Config{Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Destruct() })
	if g.Exchange == nil {
		g.Exchange = func(_ context.Context, k tokencache.Key) (tokencache.Token, error) {
			return tokencache.Token{Value: "tok-" + k.User, Expiry: time.Now().Add(time.Hour)}, nil
		}
	}
	s.Use(g)
	return s
}

// TestHitRatioCountsLookupsServedAtOnce checks the hit ratio now that a hit
// costs one counter: a miss, then three hits, is 3/4.
func TestHitRatioCountsLookupsServedAtOnce(t *testing.T) {
	s := newStore(t, &Generation{})
	if got := s.HitRatio(); got != 0 {
		t.Errorf("hit ratio before any lookup = %v, want 0", got)
	}
	key := tokencache.Key{Tenant: "t", User: "u"}
	for i := range 4 {
		if _, res, err := s.Get(context.Background(), key); err != nil || (i > 0) != (res == tokencache.Hit) {
			t.Fatalf("lookup %d: %v, %v", i, res, err)
		}
	}
	if got := s.HitRatio(); got != 0.75 {
		t.Errorf("hit ratio = %v, want 0.75", got)
	}
}

// TestEvictionReachesTheActionsToken: evicting an identity (offboarding,
// DELETE /zapier/tokens, another gateway's forget log) drops its Actions
// token with its plain one.
func TestEvictionReachesTheActionsToken(t *testing.T) {
	actions := func(k tokencache.Key) tokencache.Key {
		return tokencache.Key{Tenant: k.Tenant, User: k.User + "\x00claims"}
	}
	s := newStore(t, &Generation{ActionsKey: func(k tokencache.Key) (tokencache.Key, bool) { return actions(k), true }})
	id := tokencache.Key{Tenant: "t", User: "u"}
	fill := func() {
		for _, k := range []tokencache.Key{id, actions(id)} {
			if _, _, err := s.Get(context.Background(), k); err != nil {
				t.Fatal(err)
			}
		}
		if s.Cache.Len() != 2 {
			t.Fatalf("%d tokens cached, want the plain and the Actions one", s.Cache.Len())
		}
	}
	fill()
	if !s.Evict(context.Background(), id) || s.Cache.Len() != 0 {
		t.Errorf("Evict left %d tokens", s.Cache.Len())
	}
	fill()
	if !s.EvictLocal(id) || s.Cache.Len() != 0 {
		t.Errorf("EvictLocal left %d tokens", s.Cache.Len())
	}
}

// TestFetchStraddlingARevocationExchangesAgain: a token obtained while a
// signing key was revoked (and every token purged) is not kept: the fetch
// exchanges once more.
func TestFetchStraddlingARevocationExchangesAgain(t *testing.T) {
	var s *Store
	exchanges := 0
	s = newStore(t, &Generation{Exchange: func(_ context.Context, k tokencache.Key) (tokencache.Token, error) {
		exchanges++
		if exchanges == 1 {
			s.Revoked(context.Background()) // revoked while this exchange ran
		}
		return tokencache.Token{Value: "tok", Expiry: time.Now().Add(time.Hour)}, nil
	}})
	if _, _, err := s.Get(context.Background(), tokencache.Key{Tenant: "t", User: "u"}); err != nil {
		t.Fatal(err)
	}
	if exchanges != 2 {
		t.Errorf("%d exchanges, want 2 (the one straddling the revocation is redone)", exchanges)
	}
}
