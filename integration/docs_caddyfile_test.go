package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// caddyfileBlock returns the first ```caddyfile block after heading in a
// documentation file.
func caddyfileBlock(t *testing.T, file, heading string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, heading)
	if i < 0 {
		t.Fatalf("%s has no %q", file, heading)
	}
	m := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindStringSubmatch(s[i:])
	if m == nil {
		t.Fatalf("%s has no caddyfile block after %q", file, heading)
	}
	return m[1]
}

// checkCaddyfileClean writes config to a file and checks that `caddy fmt`
// leaves it as it is and that `caddy validate` accepts it without a
// warning (Caddy warns, for example, of a needless header_up Host or an
// unformatted file).
func checkCaddyfileClean(t *testing.T, name, config string, env []string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	formatted, err := runCaddy(t, env, "fmt", file)
	if err != nil || formatted != config {
		t.Errorf("%s is not as `caddy fmt` writes it (%v):\n%s", name, err, formatted)
	}
	out, err := runCaddy(t, env, "validate", "--config", file, "--adapter", "caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("%s does not validate: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			t.Errorf("%s: caddy validate says %s", name, line)
		}
	}
}

// TestReadmeCaddyfileIsCleanAndQuiet: the README's minimal Caddyfile is
// `caddy fmt`-clean and draws no warning from Caddy.
func TestReadmeCaddyfileIsCleanAndQuiet(t *testing.T) {
	config := caddyfileBlock(t, "../README.md", "## A minimal Caddyfile")
	checkCaddyfileClean(t, "README's minimal Caddyfile", config,
		[]string{"ZAPIER_CLIENT_ID=readme-id", "ZAPIER_CLIENT_SECRET=readme-secret"})
}

// TestExampleOpenAPIDocumentNamesTheGatewayPort: the document
// Caddyfile.example serves names the gateway's own listener as its server
// (so after `make -f xcaddy.mk demo`, :8081, not the demo app's :8080).
func TestExampleOpenAPIDocumentNamesTheGatewayPort(t *testing.T) {
	example, err := filepath.Abs("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCaddy(t, []string{"ZAPIER_GATEWAY_PORT=8081", "ZAPIER_CLIENT_ID=id", "ZAPIER_CLIENT_SECRET=secret",
		"XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()}, "adapt", "--config", example)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"handler":"zapier_openapi","server_url":"http://localhost:8081"`) {
		t.Errorf("Caddyfile.example's zapier_openapi does not name http://localhost:8081:\n%s", out)
	}
}
