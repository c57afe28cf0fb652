package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The redirect flow's callback as Zapier documents it:
// callback?authentication_id=12345&service=SlackAPI, with no state. The
// flow is found from the browser's flow cookie.

// startRedirect starts a redirect flow and returns Connect's URL.
func (b *httpBrowser) startRedirect(app, returnTo string) *url.URL {
	b.g.t.Helper()
	status, hdr, raw := b.call(http.MethodGet, "start?"+url.Values{"app": {app}, "return_to": {returnTo}}.Encode(), nil)
	if status != http.StatusFound {
		b.g.t.Fatalf("start %s: %d %s", app, status, raw)
	}
	loc, err := url.Parse(hdr.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), b.g.fakeURL+"/to/") {
		b.g.t.Fatalf("start %s redirected to %q", app, hdr.Get("Location"))
	}
	return loc
}

// documentedCallback is the callback route Zapier's documented success
// redirect names.
func documentedCallback(id, service string) string {
	q := url.Values{"authentication_id": {id}}
	if service != "" {
		q.Set("service", service)
	}
	return "callback?" + q.Encode()
}

// backAt is where a callback answer sends the browser: path and outcome.
func backAt(t *testing.T, status int, hdr http.Header, raw []byte) (string, url.Values) {
	t.Helper()
	if status != http.StatusFound {
		t.Fatalf("callback: %d %s", status, raw)
	}
	u, err := url.Parse(hdr.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u.Path + "?" + u.Query().Get("tab"), u.Query()
}

func TestConnectDocumentedCallbackCompletesWithoutState(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	loc := alice.startRedirect(slackApp, "/settings?tab=slack")

	// The fake answers as Zapier documents it: no state.
	status, cbLoc, body := alice.open(loc.String())
	cb, _ := url.Parse(cbLoc)
	if status != http.StatusFound || cb.Query().Has("state") || cb.Query().Get("service") != slackApp || cb.Query().Get("authentication_id") == "" {
		t.Fatalf("Connect UI: %d %q %s", status, cbLoc, body)
	}
	status, hdr, raw := alice.call(http.MethodGet, strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/"), nil)
	where, q := backAt(t, status, hdr, raw)
	id := cb.Query().Get("authentication_id")
	if where != "/settings?slack" || q.Get("zapier_connect") != "success" || q.Get("zapier_connection_id") != id || q.Get("zapier_app") != slackApp {
		t.Fatalf("back at %s %v", where, q)
	}
	// The cookie entry went with it.
	if c := hdr.Values("Set-Cookie"); len(c) != 1 || !strings.Contains(c[0], "zapier_connect=;") {
		t.Errorf("Set-Cookie after the callback: %q", c)
	}
	status, _, raw = alice.call(http.MethodGet, "connections/"+slackApp, nil)
	if status != http.StatusOK || decodeConnection(t, raw).ConnectionID != id {
		t.Errorf("stored: %d %s", status, raw)
	}
	// Replayed, by the same browser or with a copy of its cookie taken
	// before: the flow is spent.
	copied := newHTTPBrowser(g, "org_1", "alice")
	loc = alice.startRedirect(unmappedUUID, "/settings?tab=again")
	gw, _ := url.Parse(gatewayURL)
	copied.client.Jar.SetCookies(gw, alice.client.Jar.Cookies(gw))
	_, cbLoc, _ = alice.open(loc.String())
	route := strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/")
	if status, hdr, raw := alice.call(http.MethodGet, route, nil); status != http.StatusFound {
		t.Fatalf("second flow: %d %v %s", status, hdr, raw)
	}
	for name, b := range map[string]*httpBrowser{"same browser": alice, "copied cookie": copied} {
		status, hdr, raw := b.call(http.MethodGet, route, nil)
		expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
		if t.Failed() {
			t.Fatalf("replay (%s): %s", name, raw)
		}
	}
}

func TestConnectStatelessCallbackRefusals(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	alices := g.fake.AddConnection("org_1", "alice", slackUUID, "alice's Slack")
	bobs := g.fake.AddConnection("org_1", "bob", slackUUID, "bob's Slack")
	alice.startRedirect(slackApp, "/settings?tab=slack")
	lookups := func() int { return g.fake.Stats().APIRequests }

	// Refused before any flow is spent: JSON, since there is no trusted
	// return_to.
	before := lookups()
	for name, tc := range map[string]struct {
		b      *httpBrowser
		route  string
		reason string
	}{
		"another browser":              {newHTTPBrowser(g, "org_1", "alice"), documentedCallback(alices, slackApp), "no connect flow was started in this browser"},
		"another user, same browser":   {alice.as("org_1", "bob"), documentedCallback(bobs, slackApp), "another user"},
		"another tenant, same browser": {alice.as("org_2", "alice"), documentedCallback(alices, slackApp), "another user"},
		"another app's service":        {alice, documentedCallback(alices, "GoogleSheetsV2API"), "no connect flow for app GoogleSheetsV2API"},
		"a forged state":               {alice, documentedCallback(alices, slackApp) + "&state=v1.e30.AAAA", "bad signature"},
	} {
		status, hdr, raw := tc.b.call(http.MethodGet, tc.route, nil)
		expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
		if !strings.Contains(string(raw), tc.reason) {
			t.Errorf("%s: %s, want the reason %q", name, raw, tc.reason)
		}
	}
	if n := lookups() - before; n != 0 {
		t.Errorf("refused callbacks made %d /v2/authentications lookups", n)
	}

	// A forged or another user's id finds the flow, and the server-side
	// check refuses it: back at return_to with connection_invalid, the
	// flow spent.
	for name, id := range map[string]string{"bob's id": bobs, "a forged id": "999999"} {
		status, hdr, raw := alice.call(http.MethodGet, documentedCallback(id, slackApp), nil)
		where, q := backAt(t, status, hdr, raw)
		if where != "/settings?slack" || q.Get("zapier_connect") != "error" || q.Get("zapier_error") != "connection_invalid" {
			t.Errorf("%s: back at %s %v", name, where, q)
		}
		status, hdr, raw = alice.call(http.MethodGet, documentedCallback(alices, slackApp), nil)
		expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
		alice.startRedirect(slackApp, "/settings?tab=slack")
	}
	// The flow open now completes with alice's own id, without service too.
	status, hdr, raw := alice.call(http.MethodGet, documentedCallback(alices, ""), nil)
	if where, q := backAt(t, status, hdr, raw); where != "/settings?slack" || q.Get("zapier_connection_id") != alices {
		t.Errorf("alice's own id: back at %s %v", where, q)
	}
	status, _, raw = alice.as("org_1", "bob").call(http.MethodGet, "connections", nil)
	if status != http.StatusOK || string(raw) != "{\"data\":[]}\n" {
		t.Errorf("bob's connections: %d %s", status, raw)
	}

	// An error callback without state goes back to the flow's return_to.
	alice.startRedirect(unmappedUUID, "/settings?tab=denied")
	status, hdr, raw = alice.call(http.MethodGet, "callback?error=access_denied&error_description=User+not+found", nil)
	if where, q := backAt(t, status, hdr, raw); where != "/settings?denied" || q.Get("zapier_error") != "access_denied" || q.Get("zapier_error_description") != "User not found" {
		t.Errorf("error without state: back at %s %v", where, q)
	}
}

func TestConnectStatelessCallbackExpires(t *testing.T) {
	g := startConnectGateway(t, connectOptions{connectExtra: "state_ttl 1s"})
	alice := newHTTPBrowser(g, "org_1", "alice")
	id := g.fake.AddConnection("org_1", "alice", slackUUID, "Slack")
	alice.startRedirect(slackApp, "/settings")
	// The browser drops the cookie when the flow expires; a copy kept
	// beyond that is refused by the gateway.
	gw, _ := url.Parse(gatewayURL)
	var kept []string
	for _, c := range alice.client.Jar.Cookies(gw) {
		kept = append(kept, c.Name+"="+c.Value)
	}
	time.Sleep(1100 * time.Millisecond) // past the flow's expiry, whatever the machine's speed
	status, hdr, raw := g.do(request{method: http.MethodGet, path: "/zapier/connect/" + documentedCallback(id, slackApp),
		tenant: "org_1", user: "alice", header: http.Header{"Cookie": {strings.Join(kept, "; ")}}})
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "expired") {
		t.Errorf("expired flow: %s", raw)
	}
}

func TestConnectEchoedStateIsStillAccepted(t *testing.T) {
	g := startConnectGateway(t, connectOptions{fake: fakezapier.Config{EchoStateOnSuccess: true}})
	alice := newHTTPBrowser(g, "org_1", "alice")
	loc := alice.startRedirect(slackApp, "/settings?tab=slack")
	_, cbLoc, _ := alice.open(loc.String())
	cb, _ := url.Parse(cbLoc)
	if cb.Query().Get("state") != loc.Query().Get("state") || cb.Query().Get("service") != slackApp {
		t.Fatalf("the fake did not echo the state: %s", cbLoc)
	}
	// A state for Slack with another app's service is refused, and does not
	// spend the flow.
	wrong := cb.Query()
	wrong.Set("service", "GoogleSheetsV2API")
	status, hdr, raw := alice.call(http.MethodGet, "callback?"+wrong.Encode(), nil)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "another app") {
		t.Errorf("state with another app's service: %s", raw)
	}
	status, hdr, raw = alice.call(http.MethodGet, strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/"), nil)
	if where, q := backAt(t, status, hdr, raw); where != "/settings?slack" || q.Get("zapier_connect") != "success" {
		t.Errorf("echoed state: back at %s %v", where, q)
	}
	// Spent: neither the state nor the cookie completes it again.
	status, hdr, raw = alice.call(http.MethodGet, strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/"), nil)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	status, hdr, raw = alice.call(http.MethodGet, documentedCallback(cb.Query().Get("authentication_id"), slackApp), nil)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
}

func TestConnectStatelessCallbacksOfConcurrentFlowsInOneBrowser(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	slack := alice.startRedirect(slackApp, "/settings?tab=slack")
	other := alice.startRedirect(unmappedUUID, "/settings?tab=other")
	slackAgain := alice.startRedirect(slackApp, "/settings?tab=slack2")

	// Zapier answers in another order than they started.
	finish := func(connectURL *url.URL) (string, url.Values, string) {
		t.Helper()
		_, cbLoc, _ := alice.open(connectURL.String())
		cb, _ := url.Parse(cbLoc)
		status, hdr, raw := alice.call(http.MethodGet, strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/"), nil)
		where, q := backAt(t, status, hdr, raw)
		return where, q, cb.Query().Get("authentication_id")
	}
	for _, f := range []struct {
		connectURL *url.URL
		app, where string
	}{
		{other, unmappedUUID, "/settings?other"},
		{slack, slackApp, "/settings?slack2"}, // the newest Slack flow: same app, either is this browser's
		{slackAgain, slackApp, "/settings?slack"},
	} {
		where, q, id := finish(f.connectURL)
		if where != f.where || q.Get("zapier_connect") != "success" || q.Get("zapier_app") != f.app || q.Get("zapier_connection_id") != id {
			t.Errorf("%s: back at %s %v (id %s), want %s", f.app, where, q, id, f.where)
		}
	}
	// Without service, two apps' flows are told apart by whose connection
	// the id is.
	carol := newHTTPBrowser(g, "org_1", "carol")
	carol.startRedirect(slackApp, "/settings?tab=slack")
	carol.startRedirect(unmappedUUID, "/settings?tab=other")
	slackID := g.fake.AddConnection("org_1", "carol", slackUUID, "Slack")
	otherID := g.fake.AddConnection("org_1", "carol", unmappedUUID, "Other")
	for id, want := range map[string]string{slackID: "/settings?slack", otherID: "/settings?other"} {
		status, hdr, raw := carol.call(http.MethodGet, documentedCallback(id, ""), nil)
		if where, q := backAt(t, status, hdr, raw); where != want || q.Get("zapier_connection_id") != id {
			t.Errorf("id %s without service: back at %s %v, want %s", id, where, q, want)
		}
	}
}
