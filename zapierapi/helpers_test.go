package zapierapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Credentials and tokens the tests watch for in every error they see.
const (
	testID     = "gateway-client"
	testSecret = "cs_live_9f8e7d6c5b4a"
	testJWT    = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyXzEyMyIsIm9yZ19pZCI6Im9yZ180NTYifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
	testAccess = "zat_4b1c9e2f7a3d"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// secretNeedles are substrings that must never appear in an error.
func secretNeedles() []string {
	n := []string{testSecret, url.QueryEscape(testSecret), testJWT, testAccess}
	n = append(n, strings.Split(testJWT, ".")...) // no fragment of the JWT either
	return n
}

// checkNoSecrets fails if err, in any format, or its fields contain a secret.
func checkNoSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	texts := []string{err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)}
	if e, ok := AsError(err); ok {
		texts = append(texts, e.OAuthError, e.Description)
		if e.Err != nil {
			texts = append(texts, e.Err.Error())
		}
	}
	for _, txt := range texts {
		for _, needle := range secretNeedles() {
			if strings.Contains(txt, needle) {
				t.Errorf("error leaks a secret (%.8s…): %s", needle, txt)
			}
		}
	}
}

// wantError asserts err is an *Error of kind k (and leaks nothing).
func wantError(t *testing.T, err error, k Kind) *Error {
	t.Helper()
	checkNoSecrets(t, err)
	e, ok := AsError(err)
	if !ok {
		t.Fatalf("error = %v (%T), want *Error of kind %v", err, err, k)
	}
	if e.Kind != k {
		t.Fatalf("kind = %v, want %v (error: %v)", e.Kind, k, err)
	}
	return e
}

type fakeServer struct {
	*httptest.Server
	hits atomic.Int32
}

// newFake starts a token endpoint; h gets the 1-based hit number.
func newFake(t *testing.T, h func(w http.ResponseWriter, r *http.Request, n int)) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(w, r, int(f.hits.Add(1)))
	}))
	t.Cleanup(func() {
		f.CloseClientConnections() // ends hanging handlers
		f.Close()
	})
	return f
}

// waitHits waits for the server to have seen want requests (the server may
// lag the client by a moment) and then checks it saw exactly that many.
func (f *fakeServer) waitHits(t *testing.T, want int) {
	t.Helper()
	for i := 0; i < 200 && int(f.hits.Load()) < want; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := int(f.hits.Load()); got != want {
		t.Errorf("server hits = %d, want %d", got, want)
	}
}

// hang blocks a handler until the client goes away (or the server closes).
func hang(_ http.ResponseWriter, r *http.Request, _ int) {
	// Consuming the body lets the server notice a closed connection.
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func okToken(w http.ResponseWriter) {
	writeJSON(w, 200, map[string]any{
		"access_token": testAccess, "issued_token_type": DefaultAccessTokenType,
		"token_type": "Bearer", "expires_in": 3600, "scope": "zap",
	})
}

// newTestClient builds a client for url with fast retries and a fixed clock.
func newTestClient(t *testing.T, url string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{TokenURL: url, ClientID: testID, ClientSecret: testSecret, Now: func() time.Time { return t0 }}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.backoffBase, c.backoffCap = time.Millisecond, 4*time.Millisecond
	return c
}
