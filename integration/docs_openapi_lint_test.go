package integration

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServedOpenAPIDocumentLints runs Redocly CLI's recommended rules
// (openapi/redocly.yaml) on the document a gateway serves, in both
// encodings. OPENAPI_LINT is the redocly command; `make test` installs it
// with npm when missing and sets it. Without it the test skips (and `make
// test` fails on any skip).
func TestServedOpenAPIDocumentLints(t *testing.T) {
	lint := os.Getenv("OPENAPI_LINT")
	if lint == "" {
		t.Skip("OPENAPI_LINT is not set (make -f xcaddy.mk test sets it to Redocly CLI)")
	}
	config, err := filepath.Abs("../openapi/redocly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{siteExtra: `
	handle /zapier/openapi.* {
		zapier_openapi {
			server_url http://localhost:8081
		}
	}`})
	dir := t.TempDir()
	for _, name := range []string{"openapi.yaml", "openapi.json"} {
		status, _, body := g.do(request{path: "/zapier/" + name})
		if status != http.StatusOK {
			t.Fatalf("/zapier/%s: %d %s", name, status, body)
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(lint, "lint", "--config", config, "--format", "stylish", file)
		cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Your API description is valid") {
			t.Errorf("redocly lint of the served %s: %v\n%s", name, err, out)
		}
	}
}
