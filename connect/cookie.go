package connect

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
	FlowCookieName = "zapier_connect"
	MaxCookieFlows = 4
)

// FlowCookieEntry is one flow in the browser's cookie: the id of its state
// and the nonce only this browser holds.
type FlowCookieEntry struct{ ID, Nonce string }

// FlowCookieEntries reads the browser's entries, skipping anything
// malformed.
func FlowCookieEntries(r *http.Request) []FlowCookieEntry {
	var out []FlowCookieEntry
	for _, c := range r.Cookies() {
		if c.Name != FlowCookieName {
			continue
		}
		for _, e := range strings.Split(c.Value, ".") {
			id, nonce, ok := strings.Cut(e, "~")
			if ok && IsStateID(id) && IsBase64URL(nonce) {
				out = append(out, FlowCookieEntry{id, nonce})
			}
		}
	}
	return out
}

// FlowNonce returns the nonce this browser holds for the flow whose state
// id is id.
func FlowNonce(r *http.Request, id string) (string, bool) {
	for _, e := range FlowCookieEntries(r) {
		if e.ID == id {
			return e.Nonce, true
		}
	}
	return "", false
}

// SetFlowCookie adds a flow to the browser's cookie, dropping the oldest
// beyond MaxCookieFlows. Path=/ because the gateway cannot know under which
// path the browser reaches it; the cookie holds only random nonces.
func SetFlowCookie(w http.ResponseWriter, r *http.Request, id, nonce string, ttl time.Duration, secure bool) {
	entries := append(removeEntry(FlowCookieEntries(r), id), FlowCookieEntry{id, nonce})
	if len(entries) > MaxCookieFlows {
		entries = entries[len(entries)-MaxCookieFlows:]
	}
	writeFlowCookie(w, entries, ttl, secure)
}

// ClearFlowCookie removes a finished flow from the browser's cookie.
func ClearFlowCookie(w http.ResponseWriter, r *http.Request, id string, ttl time.Duration, secure bool) {
	writeFlowCookie(w, removeEntry(FlowCookieEntries(r), id), ttl, secure)
}

func removeEntry(entries []FlowCookieEntry, id string) []FlowCookieEntry {
	out := entries[:0:0]
	for _, e := range entries {
		if e.ID != id {
			out = append(out, e)
		}
	}
	return out
}

func writeFlowCookie(w http.ResponseWriter, entries []FlowCookieEntry, ttl time.Duration, secure bool) {
	c := &http.Cookie{
		Name:     FlowCookieName,
		Path:     "/",
		MaxAge:   int(ttl / time.Second),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteLaxMode,
	}
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = e.ID + "~" + e.Nonce
	}
	c.Value = strings.Join(parts, ".")
	if c.Value == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// IsStateID accepts the 32 lower-case hex digits of a state id.
func IsStateID(s string) bool {
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

// IsBase64URL accepts a non-empty unpadded base64url string of at most 64
// characters, the form of a flow nonce.
func IsBase64URL(s string) bool {
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
