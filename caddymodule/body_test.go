package caddymodule

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// A transport may still read (and close) the request body after the handler
// chain returned. zapier_auth's pooled body buffer must stay this request's
// until the body is closed: here the release hook scribbles over the buffer,
// as the next request reusing it would, and the late reader must still read
// its own bytes. Both the replayable (≤ 64 KiB) and the oversized path.
func TestPooledBodyIsReleasedOnCloseNotWhenServeHTTPReturns(t *testing.T) {
	var released int
	orig := releaseBodyBuffer
	releaseBodyBuffer = func(b *bytes.Buffer) {
		released++
		b.Reset()
		b.WriteString(strings.Repeat("N", 100)) // the next request's bytes
	}
	t.Cleanup(func() { releaseBodyBuffer = orig })

	c, err := tokencache.New(tokencache.Config{Size: 10}, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "tok", Expiry: time.Now().Add(time.Hour)}, nil
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
	for _, size := range []int{10, maxReplayBody + 10} {
		released = 0
		want := strings.Repeat("a", size)
		var late io.ReadCloser
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			late = r.Body // the transport reads it later
			w.WriteHeader(http.StatusOK)
			return nil
		})
		r := httptest.NewRequest(http.MethodPost, "/v2/echo", io.NopCloser(strings.NewReader(want)))
		r.ContentLength = -1 // unknown length: the body is read into the pooled buffer
		r.RemoteAddr = "127.0.0.1:1234"
		r.Header.Set("X-Zapier-User", "u")
		r.Header.Set("X-Zapier-Tenant", "t")
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
		if released != 0 {
			t.Fatalf("size %d: buffer released %d times before the body was closed", size, released)
		}
		got, err := io.ReadAll(late)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("size %d: the late reader read %d bytes starting %q, want its own %d bytes", size, len(got), got[:min(len(got), 8)], size)
		}
		_ = late.Close()
		_ = late.Close()
		if released != 1 {
			t.Fatalf("size %d: released %d times after Close, want 1", size, released)
		}
		if n, err := late.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("size %d: read after Close gave %d, %v", size, n, err)
		}
	}
}
