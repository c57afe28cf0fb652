// Package connect holds the logic of Zapier's Connect flows that does not
// depend on Caddy: the signed single-use state a flow carries (and its
// offboarding), the store of a user's connections (several accounts per
// app, under keyed storage names, owners sealed), checking a connection id
// against the user's authentications, where a finished flow may send the
// browser (return-to rules), the cookie binding flows to the browser that
// started them, reading what Connect sends back to the callback, and
// choosing which of the flows a browser has open that answer belongs to.
// The zapier_connect handler (caddymodule) is the glue around it.
package connect

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what Connect sends back.
const (
	MaxConnectionID = 256
	MaxErrorCode    = 64
	MaxErrorDesc    = 300
	// MaxService bounds the app key in service=.
	MaxService       = 128
	MaxCallbackQuery = 16 << 10
	UnknownErrorCode = "server_error"
)

// CallbackParams is the outcome Connect's redirect reports
// (zapier-api.md §3.3, §3.5). Zapier documents the success redirect as
// ?authentication_id=12345&service=SlackAPI, without state; state is
// documented as echoed on errors ("if provided"), so it may be absent
// either way.
type CallbackParams struct {
	AuthID string
	// Service is the app key Zapier names on success (empty when absent).
	Service  string
	State    string
	ErrCode  string
	ErrDesc  string
	HasError bool
}

var errCallbackQuery = errors.New("the callback needs exactly one authentication_id or error, at most one state, service and error_description")

// ParseCallback reads the callback's query strictly: each known parameter
// at most once, exactly one of authentication_id and error. The connection
// id must be a plain id and service an app key; Zapier's error text is
// sanitised (it is shown to the user), never refused. Unknown parameters
// are ignored: Zapier may add some.
func ParseCallback(raw string) (CallbackParams, error) {
	if len(raw) > MaxCallbackQuery {
		return CallbackParams{}, errCallbackQuery
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return CallbackParams{}, errCallbackQuery
	}
	one := func(name string) (string, bool, bool) {
		v, present := q[name]
		if !present {
			return "", false, true
		}
		return v[0], true, len(v) == 1
	}
	var p CallbackParams
	var hasAuth, hasService, ok bool
	if p.AuthID, hasAuth, ok = one("authentication_id"); !ok {
		return CallbackParams{}, errCallbackQuery
	}
	if p.ErrCode, p.HasError, ok = one("error"); !ok {
		return CallbackParams{}, errCallbackQuery
	}
	if p.State, _, ok = one("state"); !ok {
		return CallbackParams{}, errCallbackQuery
	}
	if p.Service, hasService, ok = one("service"); !ok {
		return CallbackParams{}, errCallbackQuery
	}
	if p.ErrDesc, _, ok = one("error_description"); !ok {
		return CallbackParams{}, errCallbackQuery
	}
	if hasAuth == p.HasError {
		return CallbackParams{}, errCallbackQuery
	}
	if hasAuth && !ValidConnectionID(p.AuthID) {
		return CallbackParams{}, errors.New("authentication_id is not a connection id")
	}
	if hasService && !validService(p.Service) {
		return CallbackParams{}, errors.New("service is not an app key")
	}
	if p.HasError {
		p.ErrCode = SanitizeErrorCode(p.ErrCode)
		p.ErrDesc = SanitizeText(p.ErrDesc, MaxErrorDesc)
	}
	return p, nil
}

// ValidConnectionID accepts 1-256 visible ASCII characters: Zapier's ids are
// numbers, UUIDs or short tokens like example_akLLd8kB.
func ValidConnectionID(id string) bool {
	if id == "" || len(id) > MaxConnectionID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// validService accepts an app key (SlackCLIAPI, SlackCLIAPI@1.0.0): the
// characters app keys and implementation ids are made of.
func validService(s string) bool {
	if s == "" || len(s) > MaxService {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("_-.@:", c) >= 0) {
			return false
		}
	}
	return true
}

// SanitizeErrorCode keeps an OAuth-style error code (invalid_request,
// access_denied, server_error) and replaces anything else.
func SanitizeErrorCode(code string) string {
	if code == "" || len(code) > MaxErrorCode {
		return UnknownErrorCode
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return UnknownErrorCode
		}
	}
	return code
}

// SanitizeText makes text from Zapier safe to pass on: valid UTF-8, no
// control characters, bounded.
func SanitizeText(s string, limit int) string {
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
