package integration

import (
	"net/http"
	"strings"
	"testing"
)

// TestConnectResolvesAppsFromZapiersCatalog: an app without an `app` line
// is found by its key or its UUID in GET /v2/apps, once, and then from the
// cache; an `app` line still overrides the catalog; an unknown key is 404.
func TestConnectResolvesAppsFromZapiersCatalog(t *testing.T) {
	const sheetsKey, sheetsUUID = "GoogleSheetsV2API", "0f2e6c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
	g := startConnectGateway(t, connectOptions{})
	g.fake.RegisterApp(sheetsKey, sheetsUUID)
	g.fake.SetAppTitle(sheetsKey, "Google Sheets")
	alice := newHTTPBrowser(g, "org_1", "alice")

	conn := alice.connectPopup(sheetsKey)
	if conn.App != sheetsKey || conn.AppUUID != sheetsUUID {
		t.Fatalf("by key: %+v", conn)
	}
	listings := g.fake.AppListings()
	if listings != 1 {
		t.Errorf("%d GET /v2/apps for the first use, want 1", listings)
	}
	// By UUID, the Connect URL names the key; the catalog is not asked again.
	tok := alice.token(map[string]any{"app": sheetsUUID, "new_account": true})
	if !strings.HasPrefix(tok.URL, g.fakeURL+"/to/"+sheetsKey+"?") || tok.App != sheetsKey {
		t.Errorf("by UUID: %+v", tok)
	}
	for _, route := range []string{"connections/" + sheetsKey, "connections/" + sheetsUUID, "connections/" + sheetsKey + "@2.1.0"} {
		if status, _, raw := alice.call(http.MethodGet, route, nil); status != http.StatusOK || decodeConnection(t, raw).ConnectionID != conn.ConnectionID {
			t.Errorf("GET %s: %d %s", route, status, raw)
		}
	}
	if n := g.fake.AppListings(); n != listings {
		t.Errorf("the catalog was asked %d more times", n-listings)
	}
	// The configured line for Slack wins without asking Zapier.
	if tok := alice.token(map[string]any{"app": slackApp}); !strings.HasPrefix(tok.URL, g.fakeURL+"/to/"+slackApp+"?") || g.fake.AppListings() != listings {
		t.Errorf("configured app: %+v, %d listings", tok, g.fake.AppListings())
	}
	// An unknown key is 404, and asks the catalog at most once more (not
	// once per request).
	for range 3 {
		status, hdr, raw := alice.call(http.MethodPost, "token", map[string]any{"app": "NoSuchAppAPI"})
		expectError(t, status, hdr, raw, http.StatusNotFound, "app_not_found")
	}
	if n := g.fake.AppListings() - listings; n > 1 {
		t.Errorf("unknown keys asked the catalog %d times", n)
	}
}
