package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/internal/version"
)

// TestStatusReportsTheVersion: GET /zapier/status names the release
// (internal/version, the same as CHANGELOG.md's newest).
func TestStatusReportsTheVersion(t *testing.T) {
	startGateway(t, gatewayOptions{})
	status, body := admin(t, http.MethodGet, "/zapier/status")
	var got struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &got); status != http.StatusOK || err != nil {
		t.Fatalf("/zapier/status: %d %s (%v)", status, body, err)
	}
	if got.Version != version.Version {
		t.Errorf("/zapier/status version %q, want %q", got.Version, version.Version)
	}
}

// TestListModulesShowsTheVersion: a Caddy built by xcaddy.mk (CADDY_BIN, as
// in `make test`) has the plugin as a dependency required at this version,
// so `caddy list-modules --versions` shows v<Version> for its modules, not
// "(devel)". A Caddy built from this module's own go.mod (the tests run
// alone) has the plugin as its main module, for which Caddy prints no
// version; then only the absence of "(devel)" is checked.
func TestListModulesShowsTheVersion(t *testing.T) {
	out, err := runCaddy(t, nil, "list-modules", "--versions", "--skip-standard")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	var lines int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != "zapier" && !strings.HasPrefix(f[0], "http.handlers.zapier_") && !strings.HasPrefix(f[0], "admin.api.zapier")) {
			continue
		}
		lines++
		switch {
		case len(f) == 1:
		case f[1] != "v"+version.Version:
			t.Errorf("list-modules --versions: %q, want version v%s", line, version.Version)
		}
	}
	if lines == 0 {
		t.Errorf("list-modules --versions shows no zapier module:\n%s", out)
	}
}
