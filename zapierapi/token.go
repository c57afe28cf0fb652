package zapierapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
)

// Token is an issued token (access token or connect token).
type Token struct {
	AccessToken     string
	IssuedTokenType string
	TokenType       string
	Scope           string
	ExpiresIn       time.Duration // as sent, or DefaultTTL when absent
	Expiry          time.Time     // request start + ExpiresIn (conservative)
}

// String never prints AccessToken, so a stray %v or log field cannot leak it.
func (t Token) String() string {
	return fmt.Sprintf("Token{AccessToken:[redacted] IssuedTokenType:%q TokenType:%q Scope:%q ExpiresIn:%s Expiry:%s}",
		t.IssuedTokenType, t.TokenType, t.Scope, t.ExpiresIn, t.Expiry.Format(time.RFC3339))
}

// GoString redacts like String (for %#v).
func (t Token) GoString() string { return t.String() }

// LogValue redacts for log/slog, whose JSON handler would otherwise marshal
// the fields.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// tokenResponse is decoded leniently: every field is raw so an unexpected
// type in a field we do not need cannot fail the whole response.
type tokenResponse struct {
	AccessToken      json.RawMessage `json:"access_token"`
	IssuedTokenType  json.RawMessage `json:"issued_token_type"`
	TokenType        json.RawMessage `json:"token_type"`
	Scope            json.RawMessage `json:"scope"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	Error            json.RawMessage `json:"error"`
	ErrorDescription json.RawMessage `json:"error_description"`
}

// ParseTokenResponse parses an RFC 8693 / RFC 6749 §5.1 token response.
// access_token is required; expires_in may be a number or a numeric string
// and defaults to defaultTTL (DefaultTTL if that is not positive). Failures
// are *Error of KindFailed whose text never includes the body.
func ParseTokenResponse(body []byte, now time.Time, defaultTTL time.Duration) (Token, error) {
	fail := func(msg string) (Token, error) {
		return Token{}, &Error{Kind: KindFailed, Err: errors.New("malformed token response: " + msg)}
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return fail("empty body")
	}
	if body[0] != '{' {
		return fail("not a JSON object")
	}
	var r tokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fail("invalid JSON") // the decoder's text could quote the body
	}
	tok, ok := jsonString(r.AccessToken)
	if !ok || tok == "" {
		if code, _ := jsonString(r.Error); code != "" {
			// An OAuth error with status 200: report it, still as malformed.
			desc, _ := jsonString(r.ErrorDescription)
			return Token{}, &Error{Kind: KindFailed, OAuthError: clean(code, maxCodeBytes, nil),
				Description: clean(desc, maxDescBytes, nil), Err: errors.New("malformed token response: no access_token")}
		}
		return fail("no access_token")
	}
	if !visibleASCII(tok) {
		// It goes into an Authorization header; refuse anything that could
		// break or inject into one.
		return fail("access_token has invalid characters")
	}
	ttl, err := parseExpiresIn(r.ExpiresIn)
	if err != nil {
		return fail(err.Error())
	}
	if ttl == 0 {
		ttl = defaultTTL
		if ttl <= 0 {
			ttl = DefaultTTL
		}
	}
	t := Token{AccessToken: tok, ExpiresIn: ttl, Expiry: now.Add(ttl)}
	t.IssuedTokenType, _ = jsonString(r.IssuedTokenType)
	t.TokenType, _ = jsonString(r.TokenType)
	t.Scope = scopeString(r.Scope)
	return t, nil
}

// parseExpiresIn returns 0 when expires_in is absent or null.
func parseExpiresIn(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var f float64
	if s, ok := jsonString(raw); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return 0, errors.New("expires_in is not a number")
		}
		f = v
	} else if err := json.Unmarshal(raw, &f); err != nil {
		return 0, errors.New("expires_in is not a number")
	}
	if math.IsNaN(f) || f <= 0 {
		return 0, errors.New("expires_in is not positive")
	}
	if f > maxTTL.Seconds() {
		return 0, errors.New("expires_in is longer than a year")
	}
	d := time.Duration(f * float64(time.Second))
	if d <= 0 {
		return 0, errors.New("expires_in is not positive")
	}
	return d, nil
}

// jsonString returns raw's value if raw is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// scopeString accepts the standard space-separated string and, leniently,
// an array of strings.
func scopeString(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	var list []string
	if len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, " ")
	}
	return ""
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
