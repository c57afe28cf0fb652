package authproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// countingCache is a token cache that counts fetches and gives each a new token.
func countingCache(t *testing.T, fetches *atomic.Int32) *tokencache.Cache {
	return newCache(t, 10, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		n := fetches.Add(1)
		return tokencache.Token{Value: "tok" + string(rune('0'+n)), Expiry: time.Now().Add(time.Hour)}, nil
	})
}

// A 401 whose body is larger than maxReplayBody (said by Content-Length, or
// found while reading one of unknown length) is not held in memory whole:
// it reaches the client (and the token is evicted) instead of being
// buffered for a retry; at most maxReplayBody bytes are ever held.
func TestHeldUnauthorizedBodyIsBounded(t *testing.T) {
	for name, setLength := range map[string]bool{"no Content-Length": false, "large Content-Length": true} {
		var fetches atomic.Int32
		c := countingCache(t, &fetches)
		h := testProxy(t, c)
		big := strings.Repeat("x", 4*maxReplayBody)
		attempts := 0
		next := Next(func(w http.ResponseWriter, r *http.Request) error {
			attempts++
			if setLength {
				w.Header().Set("Content-Length", "262144")
			}
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(big))
			return nil
		})
		w := httptest.NewRecorder()
		if err := h.Serve(w, identityRequest(http.MethodGet), next); err != nil {
			t.Fatal(err)
		}
		if attempts != 1 || w.Code != http.StatusUnauthorized || w.Body.Len() != len(big) {
			t.Errorf("%s: %d attempts, client got %d with %d bytes; want the 401 streamed once", name, attempts, w.Code, w.Body.Len())
		}
		if _, res, _ := c.Get(context.Background(), tokencache.Key{Tenant: "t", User: "u"}); res == tokencache.Hit {
			t.Errorf("%s: the refused token is still cached", name)
		}
	}
}

// zapier_auth serves backends; a browser request another site made (a
// form or fetch, with the partner's session cookie turned into identity
// headers by an ingress) is refused before any token is used.
func TestAuthRefusesCrossSiteBrowserRequests(t *testing.T) {
	var fetches atomic.Int32
	c := countingCache(t, &fetches)
	h := testProxy(t, c)
	called := false
	next := Next(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		return nil
	})
	r := identityRequest(http.MethodPost)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	w := httptest.NewRecorder()
	if err := h.Serve(w, r, next); err != nil {
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
		if err := h.Serve(w, r, Next(func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusOK)
			return nil
		})); err != nil || w.Code != http.StatusOK {
			t.Errorf("Sec-Fetch-Site %q: %d %v", site, w.Code, err)
		}
	}
}
