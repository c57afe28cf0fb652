package caddymodule

import (
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
)

func testRules(t *testing.T, trusted ...string) gateway.IdentityRules {
	t.Helper()
	prefixes, err := gateway.ParseTrustedSources(trusted)
	if err != nil {
		t.Fatal(err)
	}
	return gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", prefixes)
}
