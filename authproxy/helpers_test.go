package authproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// cacheTokens is a token cache as the proxy's token source.
type cacheTokens struct{ c *tokencache.Cache }

func (t cacheTokens) Token(ctx context.Context, id gateway.Identity) (string, error) {
	tok, _, err := t.c.Get(ctx, id)
	return tok.Value, err
}
func (t cacheTokens) Evict(id gateway.Identity, token string) { t.c.EvictToken(id, token) }

// testProxy is a Proxy over cache that trusts loopback, with no budget.
func testProxy(tb testing.TB, c *tokencache.Cache) *Proxy {
	tb.Helper()
	trusted, err := gateway.ParseTrustedSources([]string{"127.0.0.0/8"})
	if err != nil {
		tb.Fatal(err)
	}
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	return &Proxy{
		Policy: &gateway.Policy{Identity: &rules},
		Tokens: cacheTokens{c},
		Gate:   &gateway.APIGate{Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{})},
		Logger: zap.NewNop(),
	}
}

// newCache is a token cache whose fetch is fetch.
func newCache(tb testing.TB, size int, fetch tokencache.FetchFunc) *tokencache.Cache {
	tb.Helper()
	c, err := tokencache.New(tokencache.Config{Size: size}, fetch)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

func identityRequest(method string) *http.Request {
	r := httptest.NewRequest(method, "/v2/echo", nil)
	r.RemoteAddr = "127.0.0.1:1234"
	r.Header.Set("X-Zapier-User", "u")
	r.Header.Set("X-Zapier-Tenant", "t")
	return r
}

var _ = fmt.Sprint
var _ = time.Second
