package zapierapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzParseTokenResponse: the parser never panics, a success always carries a
// usable token, and a failure is always a KindFailed *Error.
func FuzzParseTokenResponse(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParseTokenResponse.
	f.Add([]byte(`{"access_token":"a","expires_in":60}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		const ttl = 5 * time.Minute
		tok, err := ParseTokenResponse(body, t0, ttl)
		if err != nil {
			if e, ok := AsError(err); !ok || e.Kind != KindFailed {
				t.Fatalf("error %v (%T) is not a KindFailed *Error", err, err)
			}
			if tok != (Token{}) {
				t.Fatal("non-zero token with an error")
			}
			return
		}
		if tok.AccessToken == "" || !visibleASCII(tok.AccessToken) {
			t.Fatalf("unusable access token %q", tok.AccessToken)
		}
		if tok.ExpiresIn <= 0 || tok.ExpiresIn > maxTTL {
			t.Fatalf("ExpiresIn = %v", tok.ExpiresIn)
		}
		if !tok.Expiry.Equal(t0.Add(tok.ExpiresIn)) {
			t.Fatalf("Expiry = %v, want now + %v", tok.Expiry, tok.ExpiresIn)
		}
	})
}

// fuzzPages serves whatever body the current fuzz input holds, to every
// /v2 request: the page parsers are fuzzed through the client as it runs.
func fuzzPages(f *testing.F) (*Client, string, *atomic.Pointer[[]byte]) {
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*body.Load())
	}))
	f.Cleanup(srv.Close)
	c, err := New(Config{TokenURL: srv.URL + "/oauth/token", ClientID: testID, ClientSecret: testSecret, Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	c.backoffBase, c.backoffCap = time.Microsecond, time.Microsecond
	return c, srv.URL, &body
}

// FuzzPageParsers: the /v2 authentications, actions and action-run parsers
// never panic, return either data or a *Error, and what they return is
// well formed (ids non-empty, a run has a status).
func FuzzPageParsers(f *testing.F) {
	for _, s := range []string{
		`{"links":{"next":null},"data":[{"id":1,"app":"app-uuid","is_expired":false,"title":"t"}]}`,
		`{"data":[{"id":"a","key":"k","app":{"id":"u"},"action_type":"WRITE","is_instant":true}]}`,
		`{"data":{"status":"success","results":[{"x":1}],"errors":null}}`,
		`{"meta":{"count":5},"data":[]}`, `{"data":[{"id":null}]}`, `[]`, `null`, `{"data":{"status":7}}`,
	} {
		f.Add([]byte(s))
	}
	c, base, body := fuzzPages(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		body.Store(&b)
		ctx := context.Background()
		auths, err := c.ListAuthentications(ctx, base, testAccess, "app-uuid")
		checkErr(t, err)
		for _, a := range auths {
			if a.ID == "" {
				t.Fatalf("authentication without id from %q", b)
			}
		}
		actions, err := c.ListActions(ctx, base, testAccess, "app-uuid", "")
		checkErr(t, err)
		for _, a := range actions {
			if a.ID == "" || a.Key == "" {
				t.Fatalf("action %+v from %q", a, b)
			}
		}
		run, err := c.GetActionRun(ctx, base, testAccess, "run-1")
		checkErr(t, err)
		if err == nil && (run.Status == "" || !json.Valid(run.Results) || !json.Valid(run.Errors)) {
			t.Fatalf("run %+v from %q", run, b)
		}
	})
}

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := AsError(err); !ok {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
}

// FuzzRetryAfter: a Retry-After is never negative and never beyond the cap.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"60", "0", "-1", "86400000", "Wed, 21 Oct 2026 07:28:00 GMT", "", " 5 ", "1e3", "9223372036854775807"} {
		f.Add(s)
	}
	c, _, _ := fuzzPages(f)
	f.Fuzz(func(t *testing.T, v string) {
		if d := c.RetryAfter(v); d < 0 || d > 24*time.Hour {
			t.Fatalf("retryAfter(%q) = %v", v, d)
		}
	})
}

// FuzzRedact: no secret of credential length survives clean, wherever it
// sits in the text (except as part of the marker itself).
func FuzzRedact(f *testing.F) {
	f.Add("error: client_secret=s3cr3t-value was wrong", "s3cr3t-value")
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln and more", "abcd")
	f.Add("s3c\x00r3t", "s3cr3t")
	f.Add("a%2Fb%3D", "a/b=")
	f.Fuzz(func(t *testing.T, text, secret string) {
		out := clean(text, 300, []string{secret})
		if len(secret) < 4 || strings.Contains("[redacted]...", secret) {
			return
		}
		if strings.Contains(out, secret) {
			t.Fatalf("clean(%q, secret %q) = %q", text, secret, out)
		}
	})
}
