package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleLogBlock returns the `log { … }` block of Caddyfile.example's site,
// so the test runs exactly what the docs tell users to write, writing to
// path instead of stdout.
func exampleLogBlock(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case block == nil && line == "\tlog {":
			block = []string{line, "\t\toutput file " + path}
		case block != nil && strings.HasPrefix(strings.TrimSpace(line), "output "):
			// replaced above
		case block != nil:
			block = append(block, line)
			if line == "\t}" {
				return strings.Join(block, "\n")
			}
		}
	}
	t.Fatal("Caddyfile.example has no site-level `\tlog {` block")
	return ""
}

// With Caddy's access log on, configured as Caddyfile.example does, no line
// holds a connect token (the redirect flow's Location carries one) or a raw
// identity (the identity headers of every zapier route). The same requests
// with a bare `log` do write them: the test would see a leak.
func TestAccessLogHoldsNoTokenAndNoRawIdentity(t *testing.T) {
	const tenant, user = "tenant-LOGSECRET-t", "user-LOGSECRET-u"
	for _, filtered := range []bool{true, false} {
		t.Run(fmt.Sprintf("filtered=%v", filtered), func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "access.log")
			logBlock := "log {\n\t\toutput file " + logPath + "\n\t\tformat json\n\t}"
			if filtered {
				logBlock = exampleLogBlock(t, logPath)
			}
			callback := gatewayURL + "/zapier/connect/callback"
			g := startGateway(t, gatewayOptions{
				zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s", callback, partnerOrigin),
				siteExtra: fmt.Sprintf("%s\n\thandle_path /zapier/connect/* {\n\t\tzapier_connect {\n\t\t\tapp %s %s\n\t\t}\n\t}\n\thandle_path /zapier/actions/* {\n\t\tzapier_actions\n\t}\n\thandle_path /zapier/mcp/* {\n\t\tzapier_mcp {\n\t\t\tcallback_url %s\n\t\t}\n\t}",
					logBlock, slackApp, slackUUID, mcpCallbackURL),
			})
			g.fake.RegisterMCPApp(mcpSlack, "Slack")
			g.fake.SetMCPRedirectURIs(mcpCallbackURL)
			g.fake.RegisterPartner(partnerOrigin, callback)
			g.fake.RegisterApp(slackApp, slackUUID)
			b := newHTTPBrowser(g, tenant, user)

			status, hdr, raw := b.call(http.MethodGet, "start?app="+slackApp+"&return_to=/done", nil)
			if status != http.StatusFound {
				t.Fatalf("start: %d %s", status, raw)
			}
			loc, err := url.Parse(hdr.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			connectToken := loc.Query().Get("token")
			if connectToken == "" {
				t.Fatalf("Location %s has no token", loc)
			}
			tok := b.token(map[string]any{"app": slackApp})
			b.call(http.MethodGet, "connections", nil)
			g.do(request{path: "/zapier/actions/actions?app=" + slackUUID, tenant: tenant, user: user})
			g.echoAs(tenant, user)
			// The MCP authorize flow: the callback's URI carries the
			// authorization code and the state.
			mb := g.mcpBrowser(tenant, user)
			_, mcpCallback := mb.startAuthorize(mcpSlack)
			cb, err := url.Parse(mcpCallback)
			if err != nil || cb.Query().Get("code") == "" || cb.Query().Get("state") == "" {
				t.Fatalf("MCP callback %s has no code and state", mcpCallback)
			}
			mb.mustRedirect(mcpCallback)

			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Count(string(data), "\n")
			if lines < 7 {
				t.Fatalf("the access log has %d lines, want one per request (7):\n%s", lines, data)
			}
			secrets := map[string]string{"connect token (redirect)": connectToken, "connect token (popup)": tok.Token, "tenant": "LOGSECRET",
				"MCP authorization code": cb.Query().Get("code"), "MCP state": cb.Query().Get("state")}
			leaked := false
			for what, s := range secrets {
				if strings.Contains(string(data), s) {
					leaked = true
					if filtered {
						t.Errorf("the access log holds the %s:\n%s", what, data)
					}
				}
			}
			if !filtered && !leaked {
				t.Errorf("a bare `log` wrote no token or identity: the test cannot see a leak\n%s", data)
			}
			if filtered && !strings.Contains(string(data), `"Location":["`+gatewayURL) && !strings.Contains(string(data), `"Location":["http`) {
				t.Errorf("the filtered log lost the Location header altogether:\n%s", data)
			}
		})
	}
}
