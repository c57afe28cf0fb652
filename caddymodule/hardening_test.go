package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// A Retry-After Zapier sends is passed on only up to gateway.MaxRetryAfter: a day
// would make clients give up on the gateway for a day.
func TestRetryAfterIsCapped(t *testing.T) {
	for _, kind := range []zapierapi.Kind{zapierapi.KindRateLimited, zapierapi.KindUnavailable} {
		e := gateway.UnavailableError(&zapierapi.Error{Kind: kind, RetryAfter: 24 * time.Hour}, "calls")
		if e == nil || e.RetryAfter != gateway.MaxRetryAfter {
			t.Errorf("kind %v: Retry-After %v, want %v", kind, e.RetryAfter, gateway.MaxRetryAfter)
		}
		e = gateway.UnavailableError(&zapierapi.Error{Kind: kind, RetryAfter: 90 * time.Second}, "calls")
		if e.RetryAfter != 90*time.Second {
			t.Errorf("kind %v: a sane Retry-After became %v", kind, e.RetryAfter)
		}
	}
}

func authForTest(t *testing.T, fetches *atomic.Int32) *Auth {
	t.Helper()
	c, err := tokencache.New(tokencache.Config{Size: 10}, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		n := fetches.Add(1)
		return tokencache.Token{Value: "tok" + string(rune('0'+n)), Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &Auth{
		app:    &App{tokens: &pooledCache{cache: c, apiBreaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{})}, metrics: sharedMetrics},
		rules:  testRules(t, "127.0.0.0/8"),
		logger: zap.NewNop(),
	}
}

func identityRequest(method string) *http.Request {
	r := httptest.NewRequest(method, "/v2/echo", nil)
	r.RemoteAddr = "127.0.0.1:1234"
	r.Header.Set("X-Zapier-User", "u")
	r.Header.Set("X-Zapier-Tenant", "t")
	return r
}

// A 401 whose body is larger than maxReplayBody (said by Content-Length, or
// found while reading one of unknown length) is not held in memory whole:
// it reaches the client (and the token is evicted) instead of being
// buffered for a retry; at most maxReplayBody bytes are ever held.
func TestHeldUnauthorizedBodyIsBounded(t *testing.T) {
	for name, setLength := range map[string]bool{"no Content-Length": false, "large Content-Length": true} {
		var fetches atomic.Int32
		h := authForTest(t, &fetches)
		big := strings.Repeat("x", 4*maxReplayBody)
		attempts := 0
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			attempts++
			if setLength {
				w.Header().Set("Content-Length", "262144")
			}
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(big))
			return nil
		})
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, identityRequest(http.MethodGet), next); err != nil {
			t.Fatal(err)
		}
		if attempts != 1 || w.Code != http.StatusUnauthorized || w.Body.Len() != len(big) {
			t.Errorf("%s: %d attempts, client got %d with %d bytes; want the 401 streamed once", name, attempts, w.Code, w.Body.Len())
		}
		if _, res, _ := h.app.tokens.cache.Get(context.Background(), tokencache.Key{Tenant: "t", User: "u"}); res == tokencache.Hit {
			t.Errorf("%s: the refused token is still cached", name)
		}
	}
}

// zapier_auth serves backends; a browser request another site made (a
// form or fetch, with the partner's session cookie turned into identity
// headers by an ingress) is refused before any token is used.
func TestAuthRefusesCrossSiteBrowserRequests(t *testing.T) {
	var fetches atomic.Int32
	h := authForTest(t, &fetches)
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		return nil
	})
	r := identityRequest(http.MethodPost)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"cross_site_refused"`) || called || fetches.Load() != 0 {
		t.Fatalf("cross-site: %d %s (next called %v, %d token fetches)", w.Code, w.Body, called, fetches.Load())
	}
	for _, site := range []string{"", "same-origin", "none"} {
		r := identityRequest(http.MethodGet)
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusOK)
			return nil
		})); err != nil || w.Code != http.StatusOK {
			t.Errorf("Sec-Fetch-Site %q: %d %v", site, w.Code, err)
		}
	}
}
