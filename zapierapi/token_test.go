package zapierapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseTokenResponse(t *testing.T) {
	const ttl = 7 * time.Minute
	type parseCase struct {
		body string
		want *Token // nil: must fail
	}
	ok := func(body string, want Token) parseCase { return parseCase{body, &want} }
	bad := func(body string) parseCase { return parseCase{body, nil} }
	for _, tc := range []parseCase{
		ok(`{"access_token":"a1","issued_token_type":"urn:x","token_type":"Bearer","expires_in":360,"scope":"connection:write"}`,
			Token{AccessToken: "a1", IssuedTokenType: "urn:x", TokenType: "Bearer", Scope: "connection:write", ExpiresIn: 6 * time.Minute}),
		ok(`{"access_token":"a1"}`, Token{AccessToken: "a1", ExpiresIn: ttl}),
		ok(`  {"access_token":"a1","expires_in":null}  `, Token{AccessToken: "a1", ExpiresIn: ttl}),
		ok(`{"access_token":"a1","expires_in":"3600"}`, Token{AccessToken: "a1", ExpiresIn: time.Hour}),
		ok(`{"access_token":"a1","expires_in":" 60 "}`, Token{AccessToken: "a1", ExpiresIn: time.Minute}),
		ok(`{"access_token":"a1","expires_in":1.5}`, Token{AccessToken: "a1", ExpiresIn: 1500 * time.Millisecond}),
		ok(`{"access_token":"a1","expires_in":31536000}`, Token{AccessToken: "a1", ExpiresIn: maxTTL}),
		ok(`{"access_token":"a1","scope":["zap","action:run"],"token_type":5,"unknown":{"nested":[1,2,{"x":null}]}}`,
			Token{AccessToken: "a1", Scope: "zap action:run", ExpiresIn: ttl}),
		ok(`{"access_token":"x","access_token":"last-wins"}`, Token{AccessToken: "last-wins", ExpiresIn: ttl}),
		bad(``),
		bad(`   `),
		bad(`null`),
		bad(`[]`),
		bad(`"a1"`),
		bad(`{}`),
		bad(`{"access_token":""}`),
		bad(`{"access_token":null}`),
		bad(`{"access_token":42}`),
		bad(`{"access_token":"has space"}`),
		bad(`{"access_token":"caf\u00e9"}`),
		bad(`{"access_token":"a1"} trailing`),
		bad(`{"access_token":"a1"`),
		bad(`{"access_token":"a1","expires_in":0}`),
		bad(`{"access_token":"a1","expires_in":-1}`),
		bad(`{"access_token":"a1","expires_in":"-60"}`),
		bad(`{"access_token":"a1","expires_in":31536001}`),
		bad(`{"access_token":"a1","expires_in":1e308}`),
		bad(`{"access_token":"a1","expires_in":1e999}`),
		bad(`{"access_token":"a1","expires_in":"NaN"}`),
		bad(`{"access_token":"a1","expires_in":"Inf"}`),
		bad(`{"access_token":"a1","expires_in":"soon"}`),
		bad(`{"access_token":"a1","expires_in":true}`),
		bad(`{"access_token":"a1","expires_in":{}}`),
		bad(`{"access_token":"a1","expires_in":1e-12}`),
		bad(`{"error":"invalid_grant","error_description":"nope"}`),
		bad(`<html>502 Bad Gateway</html>`),
	} {
		got, err := ParseTokenResponse([]byte(tc.body), t0, ttl)
		if tc.want == nil {
			e := wantError(t, err, KindFailed)
			if e.Err == nil || strings.Contains(err.Error(), "a1") {
				t.Errorf("%s: error %q", tc.body, err)
			}
			if got != (Token{}) {
				t.Errorf("%s: non-zero token on error", tc.body)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		tc.want.Expiry = t0.Add(tc.want.ExpiresIn)
		if got != *tc.want {
			t.Errorf("%s:\n got %#v\nwant %#v", tc.body, got, *tc.want)
		}
	}
}

func TestParseTokenResponseOAuthErrorIn200(t *testing.T) {
	_, err := ParseTokenResponse([]byte(`{"error":"invalid_grant","error_description":"bad `+testJWT+`"}`), t0, 0)
	e := wantError(t, err, KindFailed)
	if e.OAuthError != "invalid_grant" || e.Description != "bad [redacted]" {
		t.Errorf("error = %+v", *e)
	}
}

func TestParseTokenResponseDefaultTTLFallback(t *testing.T) {
	tok, err := ParseTokenResponse([]byte(`{"access_token":"a"}`), t0, 0)
	if err != nil || tok.ExpiresIn != DefaultTTL {
		t.Errorf("tok %v err %v", tok, err)
	}
}

func TestTokenRedacted(t *testing.T) {
	tok := Token{AccessToken: testAccess, IssuedTokenType: DefaultAccessTokenType, TokenType: "Bearer",
		Scope: "zap", ExpiresIn: time.Hour, Expiry: t0.Add(time.Hour)}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("got", "token", tok, "ptr", &tok)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("got", "token", tok)
	for _, s := range []string{
		tok.String(), fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok),
		fmt.Sprintf("%v %+v %#v", &tok, &tok, &tok), fmt.Sprintf("%v", []Token{tok}),
		fmt.Sprintf("%+v", struct{ T Token }{tok}), logged.String(),
	} {
		if strings.Contains(s, testAccess) {
			t.Errorf("access token printed: %s", s)
		}
		if !strings.Contains(s, "redacted") {
			t.Errorf("no redaction marker: %s", s)
		}
	}
	if !strings.Contains(tok.String(), "zap") || !strings.Contains(tok.String(), "1h0m0s") {
		t.Errorf("String lost the useful fields: %s", tok)
	}
}

func TestConfigAndClientRedacted(t *testing.T) {
	cfg := Config{ClientID: testID, ClientSecret: testSecret}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), fmt.Sprintf("%v %+v %#v", c, c, c),
		fmt.Sprintf("%+v", struct{ C *Client }{c}),
	} {
		if strings.Contains(s, testSecret) {
			t.Errorf("secret printed: %s", s)
		}
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{Kind: KindRejected, StatusCode: 400, OAuthError: "invalid_grant", Description: "expired JWT", Attempts: 1},
			"token exchange rejected: 400 invalid_grant: expired JWT"},
		{Error{Kind: KindFailed, Op: "connect token exchange", StatusCode: 503, Attempts: 3},
			"connect token exchange failed: 503 (after 3 attempts)"},
		{Error{Kind: KindTimeout, Err: context.DeadlineExceeded, Attempts: 2},
			"token exchange timed out: context deadline exceeded (after 2 attempts)"},
		{Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 30 * time.Second, Attempts: 1},
			"token exchange rate limited: 429 (retry after 30s)"},
		{Error{Kind: KindFailed, Err: context.Canceled}, "token exchange failed: context canceled"},
		{Error{Kind: Kind(42)}, "token exchange Kind(42)"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	for k, want := range map[Kind]string{KindRejected: "rejected", KindFailed: "failed", KindTimeout: "timeout", KindRateLimited: "rate_limited"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", int(k), k.String())
		}
	}
	inner := &Error{Kind: KindRejected, Err: errors.New("x")}
	wrapped := fmt.Errorf("exchange: %w", inner)
	if e, ok := AsError(wrapped); !ok || e != inner || !IsPermanent(wrapped) {
		t.Error("AsError/IsPermanent do not see through wrapping")
	}
	if IsPermanent(errors.New("plain")) || IsPermanent(nil) || IsPermanent(&Error{Kind: KindRateLimited}) {
		t.Error("IsPermanent true for a non-rejection")
	}
	if _, ok := AsError(nil); ok {
		t.Error("AsError(nil) ok")
	}
}

func TestCleanTruncates(t *testing.T) {
	long := strings.Repeat("é", 300) // 2 bytes each: the cut must respect runes
	got := clean(long, maxDescBytes, nil)
	if len(got) > maxDescBytes+3 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("clean = %q (%d bytes)", got, len(got))
	}
	if got := clean("a\tb\nc\x00d\x7fe\u200bf\xff", 100, nil); got != "a b cdef?" {
		// Whitespace becomes a space, invalid UTF-8 '?', other non-printables
		// (NUL, DEL, U+200B) are dropped.
		t.Errorf("clean = %q", got)
	}
	if got := clean("sec\x00ret-value here", 100, []string{"secret-value"}); got != "[redacted] here" {
		t.Errorf("a secret split by a control character survived: %q", got)
	}
}

func TestNewValidation(t *testing.T) {
	base := func() Config { return Config{ClientID: testID, ClientSecret: testSecret} }
	for name, mod := range map[string]func(*Config){
		"no client id":         func(c *Config) { c.ClientID = "" },
		"no client secret":     func(c *Config) { c.ClientSecret = "" },
		"control char in id":   func(c *Config) { c.ClientID = "a\nb" },
		"relative token url":   func(c *Config) { c.TokenURL = "/oauth/token" },
		"schemeless token url": func(c *Config) { c.TokenURL = "zapier.com/oauth/token" },
		"ftp token url":        func(c *Config) { c.TokenURL = "ftp://zapier.com/oauth/token" },
		"no host":              func(c *Config) { c.TokenURL = "https:///oauth/token" },
		"userinfo":             func(c *Config) { c.TokenURL = "https://u:p@zapier.com/oauth/token" },
		"unparsable":           func(c *Config) { c.TokenURL = "https://zapier.com/%zz" },
		"client auth":          func(c *Config) { c.ClientAuth = "jwt" },
		"negative timeout":     func(c *Config) { c.Timeout = -time.Second },
		"negative ttl":         func(c *Config) { c.DefaultTTL = -time.Second },
		"absurd ttl":           func(c *Config) { c.DefaultTTL = 2 * maxTTL },
		"negative attempts":    func(c *Config) { c.MaxAttempts = -1 },
		"scope with space":     func(c *Config) { c.Scopes = []string{"zap action:run"} },
		"empty scope":          func(c *Config) { c.Scopes = []string{"zap", ""} },
		"bad connect scope":    func(c *Config) { c.ConnectScopes = []string{`a"b`} },
	} {
		cfg := base()
		mod(&cfg)
		c, err := New(cfg)
		if err == nil || c != nil {
			t.Errorf("%s: New succeeded", name)
			continue
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Errorf("%s: error leaks the secret: %v", name, err)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	hc := &http.Client{Timeout: time.Minute}
	c, err := New(Config{ClientID: testID, ClientSecret: testSecret, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.cfg
	if cfg.TokenURL != DefaultTokenURL || cfg.GrantType != DefaultGrantType || cfg.SubjectTokenType != DefaultSubjectTokenType ||
		cfg.AccessTokenType != DefaultAccessTokenType || cfg.ConnectTokenType != DefaultConnectTokenType ||
		cfg.ClientAuth != "post" || cfg.Timeout != 10*time.Second || cfg.DefaultTTL != 10*time.Minute ||
		cfg.MaxAttempts != 3 || cfg.Now == nil || cfg.UserAgent != "caddy-zapier" ||
		c.scope != "external connection:read connection:write zap zap:write action:run" || c.connScope != "connection:write" {
		t.Errorf("defaults not filled: %v", cfg)
	}
	if c.hc == hc || c.hc.Timeout != time.Minute || c.hc.CheckRedirect == nil || hc.CheckRedirect != nil {
		t.Error("the caller's client must be copied (not modified) and refuse redirects")
	}
	d, err := New(Config{ClientID: testID, ClientSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if tr, ok := d.hc.Transport.(*http.Transport); !ok || tr.MaxIdleConnsPerHost < 32 {
		t.Errorf("default transport not tuned: %T", d.hc.Transport)
	}
	// The caller's scope slice is copied.
	scopes := []string{"zap"}
	e, _ := New(Config{ClientID: testID, ClientSecret: testSecret, Scopes: scopes})
	scopes[0] = "changed"
	if e.cfg.Scopes[0] != "zap" {
		t.Error("Scopes aliased")
	}
}
