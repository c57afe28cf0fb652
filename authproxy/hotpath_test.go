package authproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
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
	h := testProxy(t, c)

	for i := range 2 {
		var seen []string
		next := Next(func(w http.ResponseWriter, r *http.Request) error {
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

		if err := h.Serve(w, r, next); err != nil {
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

// TestHitPathAllocs keeps the proxied request with a cached token cheap:
// the Bearer header value and its slice, and the response wrappers.
func TestHitPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector instruments allocations")
	}
	keys := benchKeys(1)
	h := hitAuth(t, keys)
	r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/v2/echo", nil)
	r.RemoteAddr = "127.0.0.1:43210"
	w := &discardWriter{h: http.Header{"Server": {"Caddy"}}}
	user, tenant := []string{keys[0].User}, []string{keys[0].Tenant}
	allocs := testing.AllocsPerRun(1000, func() {
		r.Header["X-Zapier-User"], r.Header["X-Zapier-Tenant"] = user, tenant
		if err := h.Serve(w, r, okNext); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 4 {
		t.Fatalf("a cached-token request allocates %.1f times, want at most 4", allocs)
	}
}

// TestActionsCallsUseTheActionsTokens: a proxied call to the Actions API
// carries the token minted with the tenant's claims; other calls do not.
func TestActionsCallsUseTheActionsTokens(t *testing.T) {
	plain := newCache(t, 10, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "plain", Expiry: time.Now().Add(time.Hour)}, nil
	})
	withClaims := newCache(t, 10, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "claims", Expiry: time.Now().Add(time.Hour)}, nil
	})
	h := testProxy(t, plain)
	h.ActionsTokens = cacheTokens{withClaims}
	for path, want := range map[string]string{
		"/actions/v1/stored-actions/1/run": "Bearer claims",
		"/v2/action-runs":                  "Bearer claims",
		"/v2/actions/core:1/inputs":        "Bearer claims",
		"/v2/authentications":              "Bearer plain",
		"/v2/actionsx":                     "Bearer plain",
	} {
		r := identityRequest(http.MethodGet)
		r.URL.Path = path
		var got string
		if err := h.Serve(httptest.NewRecorder(), r, func(w http.ResponseWriter, r *http.Request) error {
			got = r.Header.Get("Authorization")
			return nil
		}); err != nil || got != want {
			t.Errorf("%s: Authorization %q (%v), want %q", path, got, err, want)
		}
	}
}
