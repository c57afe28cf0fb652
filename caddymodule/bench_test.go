package caddymodule

import (
	"net/http"
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
)

// BenchmarkExtractIdentity is the identity part of the hot path alone.
func BenchmarkExtractIdentity(b *testing.B) {
	trusted, _ := gateway.ParseTrustedSources(defaultTrustedSources)
	rules := gateway.NewIdentityRules(defaultUserHeader, defaultTenantHeader, trusted)
	r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/v2/echo", nil)
	r.RemoteAddr = "127.0.0.1:43210"
	r.Header = http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}}
	user, tenant := []string{"user-00001"}, []string{"tenant-001"}
	b.ReportAllocs()
	for b.Loop() {
		r.Header[defaultUserHeader] = user
		r.Header[defaultTenantHeader] = tenant
		if _, _, ierr := rules.Extract(r); ierr != nil {
			b.Fatal(ierr.Code)
		}
	}
}
