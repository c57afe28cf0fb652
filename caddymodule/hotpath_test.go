package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// TestHeldUnauthorizedIsRetriedWithTheHeaderRestored checks the pooled
// hold-back path: a 401 is never seen by the client, what it wrote into the
// header map is undone (nil and empty values kept as they were), and the
// retry carries a fresh token. It runs twice so the second request reuses
// pooled state.
func TestHeldUnauthorizedIsRetriedWithTheHeaderRestored(t *testing.T) {
	var fetches atomic.Int32
	c, err := tokencache.New(tokencache.Config{Size: 10}, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		n := fetches.Add(1)
		return tokencache.Token{Value: "tok" + strconv.Itoa(int(n)), Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &Auth{
		app:    &App{tokens: &pooledCache{cache: c, apiBreaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{})}, metrics: sharedMetrics},
		rules:  testRules(t, "127.0.0.0/8"),
		logger: zap.NewNop(),
	}

	for i := range 2 {
		var seen []string
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			seen = append(seen, r.Header.Get("Authorization"))
			if len(seen) == 1 {
				w.Header().Set("Www-Authenticate", "Bearer")
				w.Header().Add("Server", "upstream")
				w.Header()["X-Empty"] = append(w.Header()["X-Empty"], "from the 401")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte("stale token"))
				return nil
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("ok"))
			return nil
		})
		r := httptest.NewRequest(http.MethodGet, "/v2/echo", nil)
		r.RemoteAddr = "127.0.0.1:1234"
		r.Header.Set("X-Zapier-User", "u")
		r.Header.Set("X-Zapier-Tenant", "t")
		w := httptest.NewRecorder()
		w.Header()["Server"] = []string{"Caddy"}
		w.Header()["X-Nil"] = nil
		w.Header()["X-Empty"] = []string{}

		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusOK || w.Body.String() != "ok" {
			t.Fatalf("request %d: got %d %q, want the retry's 200 \"ok\"", i, w.Code, w.Body.String())
		}
		if len(seen) != 2 || seen[0] == seen[1] {
			t.Fatalf("request %d: Authorization per attempt %q, want two different bearer tokens", i, seen)
		}
		hdr := w.Result().Header
		if got := hdr.Values("Server"); len(got) != 1 || got[0] != "Caddy" {
			t.Errorf("request %d: Server = %q, want the header as it was before the 401", i, got)
		}
		if hdr.Get("Www-Authenticate") != "" {
			t.Errorf("request %d: the held 401's Www-Authenticate leaked", i)
		}
		if v, ok := w.Header()["X-Nil"]; !ok || v != nil {
			t.Errorf("request %d: X-Nil = %#v (present %v), want a nil value", i, v, ok)
		}
		if v, ok := w.Header()["X-Empty"]; !ok || v == nil || len(v) != 0 {
			t.Errorf("request %d: X-Empty = %#v (present %v), want an empty non-nil value", i, v, ok)
		}
	}
	if got := fetches.Load(); got != 3 {
		t.Errorf("token fetches = %d, want 3 (first token, then a fresh one after each 401)", got)
	}
}

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
