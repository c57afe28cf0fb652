package caddymodule

import (
	"net/http"
	"strings"
	"time"
)

// The cookie binding connect flows to the browser that started them. It
// holds "<state id>~<nonce>" entries joined by ".", for the last few flows,
// so flows started in two tabs do not undo each other and a user who
// starts many flows does not pile up cookies.
const (
	nonceCookieName = "zapier_connect"
	maxCookieFlows  = 4
)

type nonceEntry struct{ id, nonce string }

// nonceEntries reads the browser's entries, skipping anything malformed.
func nonceEntries(r *http.Request) []nonceEntry {
	var out []nonceEntry
	for _, c := range r.Cookies() {
		if c.Name != nonceCookieName {
			continue
		}
		for _, e := range strings.Split(c.Value, ".") {
			id, nonce, ok := strings.Cut(e, "~")
			if ok && isStateID(id) && isBase64URL(nonce) {
				out = append(out, nonceEntry{id, nonce})
			}
		}
	}
	return out
}

// flowNonce returns the nonce this browser holds for a flow.
func flowNonce(r *http.Request, id string) (string, bool) {
	for _, e := range nonceEntries(r) {
		if e.id == id {
			return e.nonce, true
		}
	}
	return "", false
}

// setNonceCookie adds a flow to the browser's cookie, dropping the oldest
// beyond maxCookieFlows. Path=/ because the gateway cannot know under which
// path the browser reaches it; the cookie holds only random nonces.
func setNonceCookie(w http.ResponseWriter, r *http.Request, st *connectState, nonce string, ttl time.Duration, secure bool) {
	entries := append(removeEntry(nonceEntries(r), st.ID), nonceEntry{st.ID, nonce})
	if len(entries) > maxCookieFlows {
		entries = entries[len(entries)-maxCookieFlows:]
	}
	writeNonceCookie(w, entries, ttl, secure)
}

// clearNonceCookie removes a finished flow from the browser's cookie.
func clearNonceCookie(w http.ResponseWriter, r *http.Request, st *connectState, ttl time.Duration, secure bool) {
	writeNonceCookie(w, removeEntry(nonceEntries(r), st.ID), ttl, secure)
}

func removeEntry(entries []nonceEntry, id string) []nonceEntry {
	out := entries[:0:0]
	for _, e := range entries {
		if e.id != id {
			out = append(out, e)
		}
	}
	return out
}

func writeNonceCookie(w http.ResponseWriter, entries []nonceEntry, ttl time.Duration, secure bool) {
	c := &http.Cookie{
		Name:     nonceCookieName,
		Path:     "/",
		MaxAge:   int(ttl / time.Second),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteLaxMode,
	}
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = e.id + "~" + e.nonce
	}
	c.Value = strings.Join(parts, ".")
	if c.Value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// isStateID accepts the 32 lower-case hex digits of a state id.
func isStateID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isBase64URL(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
