package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHostRulesRefuseRebindingFromLoopbackOnly(t *testing.T) {
	h := NewHostRules("https://app.example.com/zapier/connect/callback", "sidecar.internal")
	h.SiteNames = func(_ *http.Request, host string) bool { return MatchHostName("*.site.example", host) }
	for _, tc := range []struct {
		remote, host string
		ok           bool
	}{
		{"127.0.0.1:5000", "localhost:8081", true},
		{"127.0.0.1:5000", "LOCALHOST", true},
		{"127.0.0.1:5000", "gw.localhost:8081", true},
		{"127.0.0.1:5000", "127.0.0.1:8081", true},
		{"127.0.0.1:5000", "127.9.9.9", true},
		{"[::1]:5000", "[::1]:8081", true},
		{"127.0.0.1:5000", "app.example.com", true},
		{"127.0.0.1:5000", "sidecar.internal:8081", true},
		{"127.0.0.1:5000", "a.site.example", true},
		{"127.0.0.1:5000", "rebind.attacker.example", false},
		{"127.0.0.1:5000", "rebind.attacker.example:8081", false},
		{"127.0.0.1:5000", "site.example", false},
		{"127.0.0.1:5000", "", false},
		{"[::ffff:127.0.0.1]:5000", "attacker.example", false},
		{"10.0.0.7:5000", "attacker.example", true}, // an ingress on the network: not Host-checked
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Host = tc.remote, tc.host
		if got := h.Check(r, false) == nil; got != tc.ok {
			t.Errorf("%s Host %q: allowed %v, want %v", tc.remote, tc.host, got, tc.ok)
		}
	}
}

func TestHostRulesRefuseAForeignOriginOnBrowserRoutes(t *testing.T) {
	h := NewHostRules("https://app.example.com")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://localhost:8080", true},
		{"https://app.example.com", true},
		{"https://gw.example.net", true}, // the request's own Host
		{"https://evil.example", false},
		{"null", false},
		{"file://", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr, r.Host = "10.0.0.7:5000", "gw.example.net"
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := h.Check(r, true) == nil; got != tc.ok {
			t.Errorf("Origin %q: allowed %v, want %v", tc.origin, got, tc.ok)
		}
		if tc.origin != "" && h.Check(r, false) != nil {
			t.Errorf("Origin %q refused on a route browsers do not call", tc.origin)
		}
	}
}
