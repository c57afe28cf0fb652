package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Connect across sidecars: the state key, the spent states and the stored
// connections live in the shared storage.

// startConnectFleet starts sidecars with zapier_connect, all registered with
// callbackOn's callback URL, as one public callback behind a load balancer
// would reach any of them.
func startConnectFleet(t *testing.T, n, callbackOn int) (*fleet, string) {
	t.Helper()
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/connect/callback", sidecarPort(callbackOn))
	f := startFleet(t, fleetOptions{
		n:           n,
		zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s", callback, partnerOrigin),
		siteExtra:   fmt.Sprintf("handle_path /zapier/connect/* {\n\t\tzapier_connect {\n\t\t\tapp %s %s\n\t\t}\n\t}", slackApp, slackUUID),
	})
	f.fake.RegisterPartner(partnerOrigin, callback)
	f.fake.RegisterApp(slackApp, slackUUID)
	return f, callback
}

// fleetBrowser is one browser (one cookie jar, redirects not followed) of
// an end user whose requests the partner's ingress may send to any sidecar.
type fleetBrowser struct {
	t            *testing.T
	tenant, user string
	client       *http.Client
}

func newFleetBrowser(t *testing.T, tenant, user string) *fleetBrowser {
	jar, _ := cookiejar.New(nil)
	return &fleetBrowser{t: t, tenant: tenant, user: user, client: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// call sends a request to a zapier_connect route of sidecar s; body, if
// not nil, is sent as JSON.
func (b *fleetBrowser) call(s *sidecar, method, route string, body any) (int, http.Header, []byte) {
	b.t.Helper()
	hdr := http.Header{}
	var text string
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		text = string(data)
		hdr.Set("Content-Type", "application/json")
	}
	status, respHdr, raw, err := send(request{method: method, path: "/zapier/connect/" + route, tenant: b.tenant, user: b.user,
		header: hdr, body: text, client: b.client, base: s.port})
	if err != nil {
		b.t.Fatalf("%s %s on %s: %v", method, route, s.name, err)
	}
	return status, respHdr, raw
}

// open requests a URL of the fake's Connect UI, coming from the partner's page.
func (b *fleetBrowser) open(rawURL string) (int, http.Header, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Referer", partnerOrigin+"/")
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

// connectPopup runs the popup flow over HTTP: the connect token from one
// sidecar, the Connect UI, the completion on another. It returns the
// completion's state and the stored connection.
func (b *fleetBrowser) connectPopup(tokenOn, completeOn *sidecar) (string, storedConnection) {
	b.t.Helper()
	status, _, raw := b.call(tokenOn, http.MethodPost, "token", map[string]any{"app": slackApp})
	var tok connectToken
	if err := json.Unmarshal(raw, &tok); status != http.StatusOK || err != nil {
		b.t.Fatalf("POST token on %s: %d %s", tokenOn.name, status, raw)
	}
	status, _, page := b.open(tok.URL)
	m := popupMessageRE.FindSubmatch(page)
	if status != http.StatusOK || m == nil {
		b.t.Fatalf("Connect UI: %d, no message posted:\n%s", status, page)
	}
	var msg map[string]any
	if err := json.Unmarshal(m[1], &msg); err != nil || msg["type"] != "authenticationSuccess" {
		b.t.Fatalf("Connect posted %s (%v)", m[1], err)
	}
	status, _, raw = b.call(completeOn, http.MethodPost, "complete", map[string]any{"app": slackApp, "auth_id": msg["authId"], "state": tok.State})
	if status != http.StatusOK {
		b.t.Fatalf("POST complete on %s: %d %s", completeOn.name, status, raw)
	}
	return tok.State, decodeConnection(b.t, raw)
}

// A redirect flow started on one sidecar comes back to another (the one
// behind the callback URL) and completes there; so does a popup flow.
func TestConnectFlowStartedOnOneSidecarCompletesOnAnother(t *testing.T) {
	f, callback := startConnectFleet(t, 2, 1)
	a, b := f.sidecars[0], f.sidecars[1]
	alice := newFleetBrowser(t, "org_1", "alice")

	returnTo := partnerOrigin + "/settings"
	status, hdr, raw := alice.call(a, http.MethodGet, "start?"+url.Values{"app": {slackApp}, "return_to": {returnTo}}.Encode(), nil)
	if status != http.StatusFound {
		t.Fatalf("start on %s: %d %s", a.name, status, raw)
	}
	connectUI := hdr.Get("Location")
	if loc, _ := url.Parse(connectUI); loc.Query().Get("redirect_uri") != callback {
		t.Fatalf("start redirected to %s", connectUI)
	}
	status, hdr, raw = alice.open(connectUI)
	back := hdr.Get("Location")
	if status != http.StatusFound || !strings.HasPrefix(back, callback+"?") {
		t.Fatalf("Connect UI: %d %q %s", status, back, raw)
	}
	status, hdr, raw = alice.call(b, http.MethodGet, strings.TrimPrefix(back, strings.TrimSuffix(callback, "callback")), nil)
	conns := f.fake.Connections("org_1", "alice", slackUUID)
	if len(conns) != 1 {
		t.Fatalf("connections at the fake: %+v", conns)
	}
	done, _ := url.Parse(hdr.Get("Location"))
	if status != http.StatusFound || done.Query().Get("zapier_connect") != "success" || done.Query().Get("zapier_connection_id") != conns[0].ID {
		t.Fatalf("callback on %s: %d %q %s", b.name, status, hdr.Get("Location"), raw)
	}

	// The popup flow: a connect token from b, completed on a.
	bob := newFleetBrowser(t, "org_1", "bob")
	state, conn := bob.connectPopup(b, a)
	// Spent on every sidecar: the same completion replayed on b fails.
	status, _, raw = bob.call(b, http.MethodPost, "complete", map[string]any{"app": slackApp, "auth_id": conn.ConnectionID, "state": state})
	if status != http.StatusBadRequest || errorCode(raw) != "connect_state_invalid" {
		t.Errorf("replay on %s: %d %s", b.name, status, raw)
	}
}

// A connection stored through one sidecar is listed through the others,
// and deleting it through one removes it for all.
func TestConnectionStoredThroughOneSidecarIsListedThroughOthers(t *testing.T) {
	f, _ := startConnectFleet(t, 3, 0)
	alice := newFleetBrowser(t, "org_1", "alice")
	_, stored := alice.connectPopup(f.sidecars[0], f.sidecars[0])
	for _, s := range f.sidecars[1:] {
		status, _, raw := alice.call(s, http.MethodGet, "connections/"+slackApp, nil)
		if status != http.StatusOK || decodeConnection(t, raw) != stored {
			t.Errorf("%s: %d %s, want the connection stored through %s", s.name, status, raw, f.sidecars[0].name)
		}
		status, _, raw = alice.call(s, http.MethodGet, "connections", nil)
		if status != http.StatusOK || !strings.Contains(string(raw), stored.ConnectionID) {
			t.Errorf("%s lists %d %s", s.name, status, raw)
		}
	}
	// Someone else's listing stays empty everywhere.
	bob := newFleetBrowser(t, "org_1", "bob")
	if status, _, raw := bob.call(f.sidecars[1], http.MethodGet, "connections", nil); status != http.StatusOK || strings.Contains(string(raw), stored.ConnectionID) {
		t.Errorf("bob sees %d %s", status, raw)
	}

	if status, _, raw := alice.call(f.sidecars[2], http.MethodDelete, "connections/"+slackApp, nil); status/100 != 2 {
		t.Fatalf("DELETE on %s: %d %s", f.sidecars[2].name, status, raw)
	}
	for _, s := range f.sidecars {
		if status, _, raw := alice.call(s, http.MethodGet, "connections/"+slackApp, nil); status != http.StatusNotFound {
			t.Errorf("%s after the delete: %d %s", s.name, status, raw)
		}
	}
}
