package zapierapi

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// captured is what the fake token endpoint saw.
type captured struct {
	method, contentType, accept, userAgent, auth string
	form                                         url.Values
}

func capture(t *testing.T, got *captured) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("ParseForm: %v", err)
		}
		*got = captured{r.Method, r.Header.Get("Content-Type"), r.Header.Get("Accept"),
			r.Header.Get("User-Agent"), r.Header.Get("Authorization"), r.PostForm}
		okToken(w)
	}
}

func checkForm(t *testing.T, got url.Values, want map[string]string) {
	t.Helper()
	flat := map[string]string{}
	for k, v := range got {
		if len(v) != 1 {
			t.Errorf("form field %s sent %d times", k, len(v))
		}
		flat[k] = v[0]
	}
	if !reflect.DeepEqual(flat, want) {
		t.Errorf("form =\n %v\nwant\n %v", flat, want)
	}
}

func TestExchangeJWTDefaults(t *testing.T) {
	var got captured
	f := newFake(t, capture(t, &got))
	c := newTestClient(t, f.URL)

	tok, err := c.ExchangeJWT(context.Background(), testJWT)
	if err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodPost || got.contentType != "application/x-www-form-urlencoded" ||
		got.accept != "application/json" || got.userAgent != "caddy-zapier" {
		t.Errorf("request = %s ct=%q accept=%q ua=%q", got.method, got.contentType, got.accept, got.userAgent)
	}
	if got.auth != "" {
		t.Errorf("post client auth also sent Authorization %q", got.auth)
	}
	checkForm(t, got.form, map[string]string{
		"grant_type":           "urn:ietf:params:oauth:grant-type:token-exchange",
		"subject_token":        testJWT,
		"subject_token_type":   "urn:ietf:params:oauth:token-type:external-jwt",
		"requested_token_type": "urn:ietf:params:oauth:token-type:access-token",
		"scope":                "external connection:read connection:write zap zap:write action:run",
		"client_id":            testID,
		"client_secret":        testSecret,
	})
	want := Token{AccessToken: testAccess, IssuedTokenType: DefaultAccessTokenType, TokenType: "Bearer",
		Scope: "zap", ExpiresIn: time.Hour, Expiry: t0.Add(time.Hour)}
	if tok != want {
		t.Errorf("token = %#v, want %#v (AccessToken equal: %v)", tok, want, tok.AccessToken == want.AccessToken)
	}
}

func TestExchangeJWTConfigured(t *testing.T) {
	var got captured
	f := newFake(t, capture(t, &got))
	c := newTestClient(t, f.URL+"/oauth/token/", func(c *Config) {
		c.GrantType = "urn:test:grant"
		c.SubjectTokenType = "urn:ietf:params:oauth:token-type:jwt"
		c.AccessTokenType = "urn:ietf:params:oauth:token-type:access_token"
		c.Scopes = []string{"zap", "action:run"}
		c.UserAgent = "ua-test/1"
	})
	if _, err := c.ExchangeJWT(context.Background(), testJWT); err != nil {
		t.Fatal(err)
	}
	if got.userAgent != "ua-test/1" {
		t.Errorf("User-Agent = %q", got.userAgent)
	}
	checkForm(t, got.form, map[string]string{
		"grant_type":           "urn:test:grant",
		"subject_token":        testJWT,
		"subject_token_type":   "urn:ietf:params:oauth:token-type:jwt",
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"scope":                "zap action:run",
		"client_id":            testID,
		"client_secret":        testSecret,
	})
}

func TestExchangeConnectToken(t *testing.T) {
	const resource = "https://connect.zapier.com/to/SlackCLIAPI"
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want map[string]string
	}{
		{"defaults", nil, map[string]string{
			"grant_type":           DefaultGrantType,
			"subject_token":        testAccess,
			"subject_token_type":   "urn:ietf:params:oauth:token-type:access-token",
			"requested_token_type": "urn:ietf:params:oauth:token-type:connect-token",
			"scope":                "connection:write",
			"resource":             resource,
			"client_id":            testID,
			"client_secret":        testSecret,
		}},
		{"configured", func(c *Config) {
			c.GrantType = "urn:g"
			c.AccessTokenType = "urn:at"
			c.ConnectTokenType = "urn:ct"
			c.ConnectScopes = []string{"connection:write", "mcp:run"}
		}, map[string]string{
			"grant_type":           "urn:g",
			"subject_token":        testAccess,
			"subject_token_type":   "urn:at",
			"requested_token_type": "urn:ct",
			"scope":                "connection:write mcp:run",
			"resource":             resource,
			"client_id":            testID,
			"client_secret":        testSecret,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got captured
			f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
				_ = r.ParseForm()
				got.form = r.PostForm
				writeJSON(w, 200, map[string]any{"access_token": "ct_123", "expires_in": 360,
					"issued_token_type": DefaultConnectTokenType, "token_type": "N_A"})
			})
			var mods []func(*Config)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			c := newTestClient(t, f.URL, mods...)
			tok, err := c.ExchangeConnectToken(context.Background(), testAccess, resource)
			if err != nil {
				t.Fatal(err)
			}
			checkForm(t, got.form, tc.want)
			if tok.AccessToken != "ct_123" || tok.ExpiresIn != 6*time.Minute || !tok.Expiry.Equal(t0.Add(6*time.Minute)) ||
				tok.IssuedTokenType != DefaultConnectTokenType {
				t.Errorf("token = %v", tok)
			}
		})
	}
}

func TestExchangeInvalidInput(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { okToken(w) })
	c := newTestClient(t, f.URL)
	ctx := context.Background()
	_, err1 := c.ExchangeJWT(ctx, "")
	_, err2 := c.ExchangeConnectToken(ctx, "", "https://connect.zapier.com/to/x")
	_, err3 := c.ExchangeConnectToken(ctx, testAccess, "")
	_, err4 := c.ExchangeConnectToken(ctx, testAccess, "/to/x")
	_, err5 := c.ExchangeConnectToken(ctx, testAccess, "javascript:alert(1)")
	for i, err := range []error{err1, err2, err3, err4, err5} {
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("case %d: err = %v, want ErrInvalidInput", i+1, err)
		}
		checkNoSecrets(t, err)
	}
	f.waitHits(t, 0)
}

func TestBasicAuth(t *testing.T) {
	for _, tc := range []struct{ id, secret string }{
		{testID, testSecret},
		{"id:with space/ü+&=%", "p@ss:w0rd %+&=/€\"'" + testSecret},
	} {
		t.Run(tc.id, func(t *testing.T) {
			var got captured
			f := newFake(t, capture(t, &got))
			c := newTestClient(t, f.URL, func(c *Config) {
				c.ClientAuth = "basic"
				c.ClientID, c.ClientSecret = tc.id, tc.secret
			})
			if _, err := c.ExchangeJWT(context.Background(), testJWT); err != nil {
				t.Fatal(err)
			}
			if _, ok := got.form["client_id"]; ok {
				t.Error("basic auth also sent client_id in the form")
			}
			if _, ok := got.form["client_secret"]; ok {
				t.Error("basic auth also sent client_secret in the form")
			}
			// Decode by hand the way RFC 6749 §2.3.1 specifies.
			raw, ok := strings.CutPrefix(got.auth, "Basic ")
			if !ok {
				t.Fatalf("Authorization = %q", got.auth)
			}
			dec, err := base64.StdEncoding.DecodeString(raw)
			if err != nil {
				t.Fatal(err)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				t.Fatal("no colon in Basic credentials")
			}
			if u, _ := url.QueryUnescape(user); u != tc.id {
				t.Errorf("client id = %q (raw %q), want %q", u, user, tc.id)
			}
			if p, _ := url.QueryUnescape(pass); p != tc.secret {
				t.Errorf("client secret did not round-trip (raw %q)", pass)
			}
			if strings.ContainsAny(user+pass, " :/&") {
				t.Errorf("credentials not form-urlencoded: %q", dec)
			}
		})
	}
}

func TestExpiresInOverHTTP(t *testing.T) {
	for _, tc := range []struct {
		name string
		body map[string]any
		ttl  time.Duration
	}{
		{"missing uses DefaultTTL", map[string]any{"access_token": testAccess}, 7 * time.Minute},
		{"null uses DefaultTTL", map[string]any{"access_token": testAccess, "expires_in": nil}, 7 * time.Minute},
		{"string", map[string]any{"access_token": testAccess, "expires_in": "120"}, 2 * time.Minute},
		{"number", map[string]any{"access_token": testAccess, "expires_in": 90}, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { writeJSON(w, 200, tc.body) })
			c := newTestClient(t, f.URL, func(c *Config) { c.DefaultTTL = 7 * time.Minute })
			tok, err := c.ExchangeJWT(context.Background(), testJWT)
			if err != nil {
				t.Fatal(err)
			}
			if tok.ExpiresIn != tc.ttl || !tok.Expiry.Equal(t0.Add(tc.ttl)) {
				t.Errorf("ExpiresIn %v Expiry %v, want %v", tok.ExpiresIn, tok.Expiry, tc.ttl)
			}
		})
	}
}

// The clock is read before the request is sent, so time spent at Zapier
// shortens the token's life in our books rather than lengthening it.
func TestExpiryFromRequestStart(t *testing.T) {
	var now atomic.Int64
	now.Store(t0.UnixNano())
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		now.Add(int64(time.Hour)) // Zapier takes "an hour"
		okToken(w)
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.Now = func() time.Time { return time.Unix(0, now.Load()).UTC() } })
	tok, err := c.ExchangeJWT(context.Background(), testJWT)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expiry.Equal(t0.Add(time.Hour)) {
		t.Errorf("Expiry = %v, want %v", tok.Expiry, t0.Add(time.Hour))
	}
}

func TestRejectedNotRetried(t *testing.T) {
	for _, tc := range []struct {
		status         int
		body           string
		code, desc     string
		wantInErrorMsg string
	}{
		{400, `{"error":"invalid_grant","error_description":"JWT signature invalid"}`, "invalid_grant", "JWT signature invalid",
			"token exchange rejected: 400 invalid_grant: JWT signature invalid"},
		{401, `{"error":"invalid_client"}`, "invalid_client", "", "token exchange rejected: 401 invalid_client"},
		{403, `<html>forbidden</html>`, "", "", "token exchange rejected: 403"},
		{404, ``, "", "", "token exchange rejected: 404"},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			c := newTestClient(t, f.URL)
			_, err := c.ExchangeJWT(context.Background(), testJWT)
			e := wantError(t, err, KindRejected)
			f.waitHits(t, 1)
			if !IsPermanent(err) || e.StatusCode != tc.status || e.OAuthError != tc.code || e.Description != tc.desc ||
				e.Attempts != 1 || e.RetryAfter != 0 {
				t.Errorf("error = %+v", *e)
			}
			if err.Error() != tc.wantInErrorMsg {
				t.Errorf("Error() = %q, want %q", err.Error(), tc.wantInErrorMsg)
			}
		})
	}
}

func TestServerErrorRetried(t *testing.T) {
	for _, attempts := range []int{1, 3, 5} {
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
			writeJSON(w, 503, map[string]string{"error": "temporarily_unavailable"})
		})
		c := newTestClient(t, f.URL, func(c *Config) { c.MaxAttempts = attempts })
		_, err := c.ExchangeJWT(context.Background(), testJWT)
		e := wantError(t, err, KindFailed)
		f.waitHits(t, attempts)
		if IsPermanent(err) || e.StatusCode != 503 || e.Attempts != attempts || e.OAuthError != "temporarily_unavailable" {
			t.Errorf("MaxAttempts %d: error = %+v", attempts, *e)
		}
	}
}

func TestRetryThenSuccess(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n < 3 {
			w.WriteHeader(500 + n) // 501, 502
			return
		}
		okToken(w)
	})
	c := newTestClient(t, f.URL)
	tok, err := c.ExchangeJWT(context.Background(), testJWT)
	if err != nil || tok.AccessToken != testAccess {
		t.Fatalf("tok %v err %v", tok, err)
	}
	f.waitHits(t, 3)
}

func TestMalformedSuccessRetried(t *testing.T) {
	for name, body := range map[string]string{
		"empty":            "",
		"garbage":          "<html>Service Unavailable</html>",
		"truncated":        `{"access_token":"` + testAccess,
		"no access_token":  `{"token_type":"Bearer","expires_in":3600}`,
		"empty token":      `{"access_token":"","expires_in":3600}`,
		"bad expires_in":   `{"access_token":"` + testAccess + `","expires_in":"soon"}`,
		"token with CRLF":  `{"access_token":"` + testAccess + `\r\nX-Evil: 1"}`,
		"array":            `[{"access_token":"` + testAccess + `"}]`,
		"200 oauth error":  `{"error":"server_error","error_description":"try later"}`,
		"negative expires": `{"access_token":"` + testAccess + `","expires_in":-5}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { _, _ = w.Write([]byte(body)) })
			c := newTestClient(t, f.URL)
			_, err := c.ExchangeJWT(context.Background(), testJWT)
			e := wantError(t, err, KindFailed)
			f.waitHits(t, 3)
			if e.StatusCode != 200 || e.Attempts != 3 {
				t.Errorf("error = %+v", *e)
			}
		})
	}
	t.Run("then success", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, n int) {
			if n == 1 {
				return // empty 200
			}
			okToken(w)
		})
		if _, err := newTestClient(t, f.URL).ExchangeJWT(context.Background(), testJWT); err != nil {
			t.Fatal(err)
		}
		f.waitHits(t, 2)
	})
}

func TestBodyTooLarge(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		_, _ = w.Write([]byte(`{"access_token":"` + testAccess + `","pad":"`))
		_, _ = w.Write([]byte(strings.Repeat("x", maxBodyBytes)))
		_, _ = w.Write([]byte(`"}`))
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.MaxAttempts = 1 })
	_, err := c.ExchangeJWT(context.Background(), testJWT)
	wantError(t, err, KindFailed)
}

func TestRateLimited(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		want         time.Duration
	}{
		{"seconds", "7", 7 * time.Second},
		{"http-date", t0.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{"absent", "", 0},
		{"date in the past", t0.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"garbage", "soon", 0},
		{"negative", "-3", 0},
		{"huge", "99999999999999", MaxRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				writeJSON(w, 429, map[string]string{"error": "slow_down"})
			})
			c := newTestClient(t, f.URL)
			_, err := c.ExchangeJWT(context.Background(), testJWT)
			e := wantError(t, err, KindRateLimited)
			f.waitHits(t, 1)
			if e.RetryAfter != tc.want || e.StatusCode != 429 || e.Attempts != 1 || IsPermanent(err) {
				t.Errorf("error = %+v, want RetryAfter %v", *e, tc.want)
			}
		})
	}
}

// A 5xx with a long Retry-After is not hammered with quick retries.
func TestServerErrorRetryAfter(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(503)
	})
	c := newTestClient(t, f.URL)
	done := make(chan error, 1)
	go func() { _, err := c.ExchangeJWT(context.Background(), testJWT); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second): // far below the 120s asked for
		t.Fatal("slept for the 5xx Retry-After instead of giving up")
	}
	e := wantError(t, err, KindFailed)
	f.waitHits(t, 1)
	if e.RetryAfter != 2*time.Minute {
		t.Errorf("RetryAfter = %v", e.RetryAfter)
	}
}

func TestPerAttemptTimeout(t *testing.T) {
	f := newFake(t, hang)
	c := newTestClient(t, f.URL, func(c *Config) {
		c.Timeout = 50 * time.Millisecond
		c.MaxAttempts = 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.ExchangeJWT(ctx, testJWT)
	e := wantError(t, err, KindTimeout)
	if ctx.Err() != nil {
		t.Fatal("the caller's deadline expired; the per-attempt timeout should have ended the call")
	}
	if e.Attempts != 2 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %+v", *e)
	}
	f.waitHits(t, 2)
}

// A body that stalls after the headers is a timeout too.
func TestSlowBodyTimeout(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Length", "100")
		_, _ = w.Write([]byte(`{"access_token":`))
		w.(http.Flusher).Flush()
		hang(w, r, n)
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.MaxAttempts = 2 })
	_, err := c.ExchangeJWT(context.Background(), testJWT)
	if e := wantError(t, err, KindTimeout); e.Attempts != 2 || e.StatusCode != 0 {
		t.Errorf("error = %+v", *e)
	}
	f.waitHits(t, 2)
}

// A timeout on the last attempt makes the outcome a timeout even after 5xx.
func TestTimeoutAfterServerError(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(502)
			return
		}
		hang(w, r, n)
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.Timeout = 50 * time.Millisecond; c.MaxAttempts = 2 })
	_, err := c.ExchangeJWT(context.Background(), testJWT)
	if e := wantError(t, err, KindTimeout); e.Attempts != 2 {
		t.Errorf("Attempts = %d", e.Attempts)
	}
}

func TestCallerDeadline(t *testing.T) {
	f := newFake(t, hang)
	c := newTestClient(t, f.URL, func(c *Config) { c.Timeout = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.ExchangeJWT(ctx, testJWT); done <- err }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second): // far below Timeout: the deadline must end the call
		t.Fatal("ExchangeJWT outlived the caller's deadline")
	}
	e := wantError(t, err, KindTimeout)
	if ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) || e.Attempts != 1 {
		t.Errorf("error = %+v (ctx.Err %v)", *e, ctx.Err())
	}
	f.waitHits(t, 1)
}

// With less time left than the next backoff, the last real failure is
// reported at once instead of sleeping into the deadline.
func TestBackoffStopsBeforeDeadline(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(503) })
	c := newTestClient(t, f.URL)
	c.backoffBase, c.backoffCap = time.Hour, time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.ExchangeJWT(ctx, testJWT)
	e := wantError(t, err, KindFailed)
	if ctx.Err() != nil {
		t.Fatal("slept into the caller's deadline")
	}
	if e.StatusCode != 503 || e.Attempts != 1 {
		t.Errorf("error = %+v", *e)
	}
	f.waitHits(t, 1)
}

func TestCancelled(t *testing.T) {
	t.Run("during attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) { cancel(); hang(w, r, n) })
		c := newTestClient(t, f.URL)
		_, err := c.ExchangeJWT(ctx, testJWT)
		e := wantError(t, err, KindFailed)
		if !errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || e.Attempts != 1 {
			t.Errorf("error = %+v", *e)
		}
		f.waitHits(t, 1)
	})
	t.Run("during backoff", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(503) })
		// Cancel once the response is in hand, so the cancellation lands
		// in the backoff sleep (an hour long: the test hangs if it is ignored).
		hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			cancel()
			return resp, err
		})}
		c := newTestClient(t, f.URL, func(c *Config) { c.HTTPClient = hc })
		c.backoffBase, c.backoffCap = time.Hour, time.Hour
		_, err := c.ExchangeJWT(ctx, testJWT)
		e := wantError(t, err, KindFailed)
		if !errors.Is(err, context.Canceled) || e.Attempts != 1 {
			t.Errorf("error = %+v", *e)
		}
		f.waitHits(t, 1)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// reset answers a request by resetting the TCP connection.
func reset(t *testing.T, w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	_ = conn.(*net.TCPConn).SetLinger(0) // RST instead of FIN
	_ = conn.Close()
}

func TestConnectionReset(t *testing.T) {
	t.Run("then success", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, n int) {
			if n == 1 {
				reset(t, w)
				return
			}
			okToken(w)
		})
		tok, err := newTestClient(t, f.URL).ExchangeJWT(context.Background(), testJWT)
		if err != nil || tok.AccessToken != testAccess {
			t.Fatalf("tok %v err %v", tok, err)
		}
		f.waitHits(t, 2)
	})
	t.Run("mid-body", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, n int) {
			if n == 1 {
				conn, buf, _ := w.(http.Hijacker).Hijack()
				_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access_token\":\"" + testAccess)
				_ = buf.Flush()
				_ = conn.Close()
				return
			}
			okToken(w)
		})
		tok, err := newTestClient(t, f.URL).ExchangeJWT(context.Background(), testJWT)
		if err != nil || tok.AccessToken != testAccess {
			t.Fatalf("tok %v err %v", tok, err)
		}
		f.waitHits(t, 2)
	})
	t.Run("always", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { reset(t, w) })
		_, err := newTestClient(t, f.URL).ExchangeJWT(context.Background(), testJWT)
		e := wantError(t, err, KindFailed)
		if e.Attempts != 3 || e.StatusCode != 0 || e.Err == nil {
			t.Errorf("error = %+v", *e)
		}
		f.waitHits(t, 3)
	})
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = newTestClient(t, "http://"+addr+"/oauth/token").ExchangeJWT(context.Background(), testJWT)
	if e := wantError(t, err, KindFailed); e.Attempts != 3 {
		t.Errorf("error = %+v", *e)
	}
}

// Redirects are not followed: a 307 would re-send the client secret.
func TestRedirectNotFollowed(t *testing.T) {
	other := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) { okToken(w) })
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		http.Redirect(w, r, other.URL, http.StatusTemporaryRedirect)
	})
	_, err := newTestClient(t, f.URL).ExchangeJWT(context.Background(), testJWT)
	if e := wantError(t, err, KindFailed); e.StatusCode != 307 || e.Attempts != 1 {
		t.Errorf("error = %+v", *e)
	}
	other.waitHits(t, 0)
}

// Zapier echoing credentials back must not put them into our errors.
func TestNoSecretsInErrors(t *testing.T) {
	var errs []error
	for _, status := range []int{400, 401, 429, 500} {
		f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			_ = r.ParseForm()
			sub, sec := r.PostForm.Get("subject_token"), r.PostForm.Get("client_secret")
			echo := "bad subject_token " + sub + " for client " + testID + ":" + sec + " (" + url.QueryEscape(sec) +
				") header " + strings.Split(testJWT, ".")[0] + "\x00\x1b[31m"
			writeJSON(w, status, map[string]string{"error": "invalid_grant " + sec, "error_description": echo})
		})
		c := newTestClient(t, f.URL, func(c *Config) { c.MaxAttempts = 1 })
		_, err := c.ExchangeJWT(context.Background(), testJWT)
		errs = append(errs, err)
		_, err = c.ExchangeConnectToken(context.Background(), testAccess, "https://connect.zapier.com/to/x")
		errs = append(errs, err)
		if e, ok := AsError(err); !ok {
			t.Errorf("%d: error = %v", status, err)
		} else if !strings.Contains(e.Description, "[redacted]") || strings.ContainsAny(e.Description, "\x00\x1b") {
			t.Errorf("description not cleaned: %q", e.Description)
		}
	}
	// A malformed success body holding the token, API errors, bad URLs.
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		_, _ = w.Write([]byte(`{"access_token":"` + testAccess + `","expires_in":{"x":"` + testSecret + `"}}`))
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.MaxAttempts = 1 })
	_, err := c.ExchangeJWT(context.Background(), testJWT)
	errs = append(errs, err)
	err = c.doJSON(context.Background(), "list authentications", http.MethodGet, f.URL+"/v2/authentications", testAccess, nil, &struct {
		X int `json:"access_token"`
	}{})
	errs = append(errs, err)
	_, err = New(Config{TokenURL: "https://" + testID + ":" + testSecret + "@zapier.com/oauth/token", ClientID: testID, ClientSecret: testSecret})
	errs = append(errs, err)
	_, err = New(Config{ClientID: testID, ClientSecret: testSecret, ClientAuth: testSecret})
	if err == nil || !strings.Contains(err.Error(), "client_auth") {
		t.Errorf("New: %v", err)
	}
	// (a secret pasted into the wrong option may be echoed by New; not checked)
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
		}
		checkNoSecrets(t, err)
	}
}

// Error bodies are drained so one keep-alive connection serves every call.
func TestConnectionReuse(t *testing.T) {
	var conns atomic.Int32
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) % 3 {
		case 0:
			okToken(w)
		case 1:
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","pad":"` + strings.Repeat("p", 3*maxErrorBytes) + `"}`))
		default:
			w.WriteHeader(503)
			_, _ = w.Write([]byte(strings.Repeat("x", 100<<10)))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newTestClient(t, srv.URL)
	for i := 0; i < 6; i++ {
		_, err := c.ExchangeJWT(context.Background(), testJWT)
		checkNoSecrets(t, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for %d requests, want 1", n, hits.Load())
	}
}

func TestConcurrentExchanges(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n%4 == 0 {
			w.WriteHeader(502)
			return
		}
		okToken(w)
	})
	c := newTestClient(t, f.URL, func(c *Config) { c.MaxAttempts = 5 })
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.ExchangeJWT(context.Background(), testJWT); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestDoJSON(t *testing.T) {
	type authList struct {
		Data []struct {
			ID        string `json:"id"`
			IsExpired bool   `json:"is_expired"`
		} `json:"data"`
	}
	var gotAuth, gotCT, gotBody string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		gotAuth, gotCT = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b := make([]byte, 512)
		k, _ := r.Body.Read(b)
		gotBody = string(b[:k])
		switch r.URL.Path {
		case "/v2/authentications":
			writeJSON(w, 200, map[string]any{"data": []map[string]any{{"id": "49509", "is_expired": false}}})
		case "/v2/action-runs":
			writeJSON(w, 503, map[string]any{"errors": []map[string]any{{"status": 503, "code": "error", "detail": "busy"}}})
		case "/v2/flaky":
			w.WriteHeader(502)
		default:
			writeJSON(w, 404, map[string]any{"errors": []map[string]any{{"status": 404, "code": "not_found", "title": "NotFound"}}})
		}
	})
	c := newTestClient(t, f.URL)
	ctx := context.Background()

	var out authList
	if err := c.doJSON(ctx, "list authentications", http.MethodGet, f.URL+"/v2/authentications?app=x", testAccess, nil, &out); err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer "+testAccess || len(out.Data) != 1 || out.Data[0].ID != "49509" {
		t.Errorf("auth %q out %+v", gotAuth, out)
	}

	// POST is not idempotent: one attempt only.
	err := c.doJSON(ctx, "create action run", http.MethodPost, f.URL+"/v2/action-runs", testAccess, map[string]any{"data": map[string]string{"action": "a"}}, nil)
	e := wantError(t, err, KindFailed)
	if e.Attempts != 1 || e.OAuthError != "error" || e.Description != "busy" || gotCT != "application/json" || gotBody != `{"data":{"action":"a"}}` {
		t.Errorf("error = %+v ct %q body %q", *e, gotCT, gotBody)
	}
	if !strings.HasPrefix(err.Error(), "create action run failed: 503 error: busy") {
		t.Errorf("Error() = %q", err)
	}

	before := f.hits.Load()
	err = c.doJSON(ctx, "get", http.MethodGet, f.URL+"/v2/flaky", testAccess, nil, nil)
	if e := wantError(t, err, KindFailed); e.Attempts != 3 || f.hits.Load()-before != 3 {
		t.Errorf("GET not retried: %+v", *e)
	}

	err = c.doJSON(ctx, "get", http.MethodGet, f.URL+"/nope", testAccess, nil, nil)
	if e := wantError(t, err, KindRejected); e.StatusCode != 404 || e.OAuthError != "not_found" || e.Description != "NotFound" {
		t.Errorf("error = %+v", *e)
	}

	for _, err := range []error{
		c.doJSON(ctx, "x", http.MethodGet, "relative/path", testAccess, nil, nil),
		c.doJSON(ctx, "x", http.MethodGet, f.URL, "", nil, nil),
		c.doJSON(ctx, "x", http.MethodGet, f.URL, "tok\r\nX: y", nil, nil),
		c.doJSON(ctx, "x", http.MethodPost, f.URL, testAccess, func() {}, nil),
	} {
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("err = %v, want ErrInvalidInput", err)
		}
	}
}
