package caddymodule

import (
	"context"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// TestHitRatioCountsLookupsServedAtOnce checks the hit ratio now that a hit
// costs one counter: a miss, then three hits, is 3/4.
func TestHitRatioCountsLookupsServedAtOnce(t *testing.T) {
	c, err := tokencache.New(tokencache.Config{Size: 10}, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "tok", Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := &pooledCache{cache: c, apiBreaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{})}
	if got := pc.hitRatio(); got != 0 {
		t.Errorf("hit ratio before any lookup = %v, want 0", got)
	}
	key := tokencache.Key{Tenant: "t", User: "u"}
	for i := range 4 {
		if _, res, err := pc.get(context.Background(), key); err != nil || (i > 0) != (res == tokencache.Hit) {
			t.Fatalf("lookup %d: %v, %v", i, res, err)
		}
	}
	if got := pc.hitRatio(); got != 0.75 {
		t.Errorf("hit ratio = %v, want 0.75", got)
	}
}

func testRules(t *testing.T, trusted ...string) gateway.IdentityRules {
	t.Helper()
	prefixes, err := gateway.ParseTrustedSources(trusted)
	if err != nil {
		t.Fatal(err)
	}
	return gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", prefixes)
}
