package authproxy

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// benchIdentities is how many distinct identities the hot-path benchmarks
// cycle through, as the end-to-end bench (bench/) does.
const benchIdentities = 10_000

// hitAuth returns a zapier_auth handler whose cache already holds a token for
// every identity in keys, so each ServeHTTP is a cache hit.
func hitAuth(tb testing.TB, keys []tokencache.Key) *Proxy {
	tb.Helper()
	c := newCache(tb, len(keys), func(_ context.Context, k tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "zap_at_" + k.User + "-0123456789abcdef", Expiry: time.Now().Add(24 * time.Hour)}, nil
	})
	for _, k := range keys {
		if _, _, err := c.Get(context.Background(), k); err != nil {
			tb.Fatal(err)
		}
	}
	return testProxy(tb, c)
}

func benchKeys(n int) []tokencache.Key {
	keys := make([]tokencache.Key, n)
	for i := range keys {
		keys[i] = tokencache.Key{Tenant: fmt.Sprintf("tenant-%03d", i%100), User: fmt.Sprintf("user-%05d", i)}
	}
	return keys
}

// discardWriter is a ResponseWriter that keeps nothing but its header map,
// preset the way Caddy's server leaves it before the route runs.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// okNext stands in for reverse_proxy: it answers 200 without a body.
var okNext = Next(func(w http.ResponseWriter, _ *http.Request) error {
	w.WriteHeader(http.StatusOK)
	return nil
})

// BenchmarkAuthServeHTTPHit is the zapier_auth hot path: a GET whose
// identity's token is cached, next handler a no-op. It includes resetting
// the request's headers each iteration (the handler consumes them), which is
// a few map writes.
func BenchmarkAuthServeHTTPHit(b *testing.B) {
	keys := benchKeys(benchIdentities)
	h := hitAuth(b, keys)
	users := make([][]string, len(keys))
	tenants := make([][]string, len(keys))
	for i, k := range keys {
		users[i], tenants[i] = []string{k.User}, []string{k.Tenant}
	}
	r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1/v2/echo", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.RemoteAddr = "127.0.0.1:43210"
	r.Header = http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}}
	w := &discardWriter{h: http.Header{"Server": {"Caddy"}}}

	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Header["X-Zapier-User"] = users[i]
		r.Header["X-Zapier-Tenant"] = tenants[i]
		if err := h.Serve(w, r, okNext); err != nil {
			b.Fatal(err)
		}
		if i++; i == len(keys) {
			i = 0
		}
	}
	if got := r.Header.Get("Authorization"); got != "Bearer zap_at_"+keys[(i+len(keys)-1)%len(keys)].User+"-0123456789abcdef" {
		b.Fatalf("Authorization = %q", got)
	}
}

// BenchmarkAuthServeHTTPHitParallel is the same hot path from every P at
// once, so the cache's mutex and the counters' atomics are contended.
func BenchmarkAuthServeHTTPHitParallel(b *testing.B) {
	keys := benchKeys(benchIdentities)
	h := hitAuth(b, keys)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/v2/echo", nil)
		r.RemoteAddr = "127.0.0.1:43210"
		r.Header = http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}}
		w := &discardWriter{h: http.Header{"Server": {"Caddy"}}}
		users := make([][]string, len(keys))
		tenants := make([][]string, len(keys))
		for i, k := range keys {
			users[i], tenants[i] = []string{k.User}, []string{k.Tenant}
		}
		i := int(time.Now().UnixNano() % int64(len(keys)))
		for pb.Next() {
			r.Header["X-Zapier-User"] = users[i]
			r.Header["X-Zapier-Tenant"] = tenants[i]
			if err := h.Serve(w, r, okNext); err != nil {
				b.Error(err)
				return
			}
			if i++; i == len(keys) {
				i = 0
			}
		}
	})
}
