package caddymodule

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what Connect sends back.
const (
	maxConnectionID   = 256
	maxErrorCode      = 64
	maxErrorDesc      = 300
	maxCallbackQuery  = 16 << 10
	unknownErrorCode  = "server_error"
	callbackParamAuth = "authentication_id"
)

// callbackParams is the outcome Connect's redirect reports
// (zapier-api.md §3.3, §3.5): a connection id, or an error code with an
// optional description; the state either way.
type callbackParams struct {
	authID   string
	state    string
	errCode  string
	errDesc  string
	hasError bool
}

var errCallbackQuery = errors.New("the callback needs exactly one authentication_id or error, at most one state and error_description")

// parseCallbackQuery reads the callback's query strictly: each known
// parameter at most once, exactly one of authentication_id and error. The
// connection id must be a plain id; Zapier's error text is sanitised (it is
// shown to the user), never refused. Unknown parameters are ignored: Zapier
// may add some.
func parseCallbackQuery(raw string) (callbackParams, error) {
	if len(raw) > maxCallbackQuery {
		return callbackParams{}, errCallbackQuery
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return callbackParams{}, errCallbackQuery
	}
	one := func(name string) (string, bool, bool) {
		v, present := q[name]
		if !present {
			return "", false, true
		}
		return v[0], true, len(v) == 1
	}
	var p callbackParams
	var hasAuth, ok bool
	if p.authID, hasAuth, ok = one(callbackParamAuth); !ok {
		return callbackParams{}, errCallbackQuery
	}
	if p.errCode, p.hasError, ok = one("error"); !ok {
		return callbackParams{}, errCallbackQuery
	}
	if p.state, _, ok = one("state"); !ok {
		return callbackParams{}, errCallbackQuery
	}
	if p.errDesc, _, ok = one("error_description"); !ok {
		return callbackParams{}, errCallbackQuery
	}
	if hasAuth == p.hasError {
		return callbackParams{}, errCallbackQuery
	}
	if hasAuth && !validConnectionID(p.authID) {
		return callbackParams{}, errors.New("authentication_id is not a connection id")
	}
	if p.hasError {
		p.errCode = sanitizeErrorCode(p.errCode)
		p.errDesc = sanitizeZapierText(p.errDesc, maxErrorDesc)
	}
	return p, nil
}

// validConnectionID accepts 1-256 visible ASCII characters: Zapier's ids are
// numbers or short tokens like example_akLLd8kB.
func validConnectionID(id string) bool {
	if id == "" || len(id) > maxConnectionID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// sanitizeErrorCode keeps an OAuth-style error code (invalid_request,
// access_denied, server_error) and replaces anything else.
func sanitizeErrorCode(code string) string {
	if code == "" || len(code) > maxErrorCode {
		return unknownErrorCode
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return unknownErrorCode
		}
	}
	return code
}

// sanitizeZapierText makes text from Zapier safe to pass on: valid UTF-8, no
// control characters, bounded.
func sanitizeZapierText(s string, limit int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
