package gateway

import (
	"go/build"
	"strings"
	"testing"
)

// The core imports no Caddy package, directly or through the packages it
// builds on: capabilities and their tests use it without Caddy.
func TestCoreImportsNoCaddy(t *testing.T) {
	seen := map[string]bool{}
	var walk func(path string)
	walk = func(path string) {
		if seen[path] || !strings.HasPrefix(path, "github.com/") {
			return
		}
		seen[path] = true
		if strings.HasPrefix(path, "github.com/caddyserver/") {
			t.Errorf("the core depends on %s", path)
			return
		}
		if !strings.HasPrefix(path, "github.com/zapgate/caddy-zapier/") {
			return
		}
		pkg, err := build.Import(path, ".", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range pkg.Imports {
			walk(imp)
		}
	}
	walk("github.com/zapgate/caddy-zapier/gateway")
}
