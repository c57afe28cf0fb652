package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// HostRules refuse DNS rebinding. A page whose name an attacker rebinds to
// 127.0.0.1 makes the victim's browser a loopback source, and loopback is
// trusted to assert identities: so a request from a loopback source must
// name the gateway itself in Host (a loopback name or address, or one of
// the gateway's names: configured, or the names of the site serving the
// request). Browser-facing routes also refuse an Origin that is not one of
// those, from any source. Sources that are not loopback (an ingress on the
// network) are not Host-checked: a rebound name cannot make a browser one.
type HostRules struct {
	names map[string]bool // lower-case host names, no port
	// SiteNames, when set, reports whether host is a name of the site that
	// serves r (Caddy's host matchers); the site's own names count.
	SiteNames func(r *http.Request, host string) bool
}

// NewHostRules returns rules accepting names besides loopback ones. A name
// may be a URL or an origin; its host part is taken.
func NewHostRules(names ...string) *HostRules {
	h := &HostRules{names: map[string]bool{}}
	for _, n := range names {
		if u, err := url.Parse(n); err == nil && u.Host != "" {
			n = u.Hostname()
		}
		if n = hostOnly(n); n != "" {
			h.names[n] = true
		}
	}
	return h
}

var (
	errHostRefused   = &Error{Status: http.StatusForbidden, Code: "host_refused", Message: "the Host header does not name this gateway (DNS rebinding is refused)"}
	errOriginRefused = &Error{Status: http.StatusForbidden, Code: "origin_refused", Message: "requests from this Origin are refused"}
)

// Check returns the refusal for r, or nil. browser says the route is one a
// browser calls, where a foreign Origin is refused too.
func (h *HostRules) Check(r *http.Request, browser bool) *Error {
	if h == nil {
		return nil
	}
	if isLoopbackPeer(r.RemoteAddr) && !h.allowed(r, hostOnly(r.Host)) {
		return errHostRefused
	}
	if browser {
		if o := r.Header.Get("Origin"); o != "" && !h.allowedOrigin(r, o) {
			return errOriginRefused
		}
	}
	return nil
}

func (h *HostRules) allowedOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" (sandboxed, file:) and the like
	}
	host := hostOnly(u.Host)
	return host == hostOnly(r.Host) || h.allowed(r, host)
}

func (h *HostRules) allowed(r *http.Request, host string) bool {
	switch {
	case host == "":
		return false
	case host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return true
	case h.names[host]:
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
		return true
	}
	return h.SiteNames != nil && h.SiteNames(r, host)
}

// hostOnly lower-cases a Host header value and drops its port and the
// brackets of an IPv6 literal.
func hostOnly(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

func isLoopbackPeer(remoteAddr string) bool {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().Unmap().IsLoopback()
	}
	a, err := peerAddr(remoteAddr)
	return err == nil && a.Unmap().IsLoopback()
}

// MatchHostName reports whether host matches a Caddy host matcher pattern
// (exact, or one leading "*." label).
func MatchHostName(pattern, host string) bool {
	pattern = strings.ToLower(pattern)
	if pattern == host {
		return true
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		i := strings.IndexByte(host, '.')
		return i > 0 && host[i+1:] == rest
	}
	return false
}
