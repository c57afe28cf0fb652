package integration

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The apps of the Connect tests: Slack is mapped in the zapier_connect
// block (implementation id → UUID); the second app is only known by its
// UUID, which is then used for both.
const (
	slackApp      = "SlackCLIAPI"
	slackUUID     = "81f613aa-c98a-4383-a5fc-195e68647217"
	unmappedUUID  = "5f3e2d1c-0b9a-4876-8543-21fedcba9876"
	partnerOrigin = "https://app.partner.example"
)

type connectOptions struct {
	connectExtra string // lines inside the zapier_connect block
	callbackURL  string // default: the gateway's own /zapier/connect/callback
	returnOrigin string // default partnerOrigin
	storageDir   string // default a new one
	zapierExtra  string // extra lines inside the zapier global option
	globalExtra  string // extra lines in the global options block
	fake         fakezapier.Config
}

// startConnectGateway starts a gateway with zapier_connect mounted at
// /zapier/connect/, and registers the partner and the app with the fake's
// Connect UI.
func startConnectGateway(t *testing.T, o connectOptions) *gateway {
	t.Helper()
	callback := cmp.Or(o.callbackURL, gatewayURL+"/zapier/connect/callback")
	origin := cmp.Or(o.returnOrigin, partnerOrigin)
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s\n\t\treturn_origins %s\n\t\t%s", callback, origin, o.zapierExtra),
		siteExtra: fmt.Sprintf("handle_path /zapier/connect/* {\n\t\tzapier_connect {\n\t\t\tapp %s %s\n\t\t\t%s\n\t\t}\n\t}",
			slackApp, slackUUID, o.connectExtra),
		fake:        o.fake,
		storageDir:  o.storageDir,
		globalExtra: o.globalExtra,
	})
	g.fake.RegisterPartner(origin, callback)
	g.fake.RegisterApp(slackApp, slackUUID)
	return g
}

// httpBrowser is a browser seen from the gateway: a cookie jar, redirects
// not followed, and the identity the partner's ingress would add.
type httpBrowser struct {
	g            *gateway
	tenant, user string
	client       *http.Client
}

func newHTTPBrowser(g *gateway, tenant, user string) *httpBrowser {
	jar, _ := cookiejar.New(nil)
	return &httpBrowser{g: g, tenant: tenant, user: user, client: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// as is the same browser (same cookies) with another identity.
func (b *httpBrowser) as(tenant, user string) *httpBrowser {
	c := *b
	c.tenant, c.user = tenant, user
	return &c
}

// call sends a request to a zapier_connect route; body, if not nil, is
// sent as JSON (a string is sent as is).
func (b *httpBrowser) call(method, route string, body any) (int, http.Header, []byte) {
	b.g.t.Helper()
	hdr := http.Header{}
	var text string
	switch v := body.(type) {
	case nil:
	case string:
		text = v
		hdr.Set("Content-Type", "application/json")
	default:
		data, err := json.Marshal(v)
		if err != nil {
			b.g.t.Fatal(err)
		}
		text = string(data)
		hdr.Set("Content-Type", "application/json")
	}
	return b.g.do(request{method: method, path: "/zapier/connect/" + route, tenant: b.tenant, user: b.user,
		header: hdr, body: text, client: b.client})
}

type connectToken struct {
	URL       string          `json:"url"`
	Token     string          `json:"token"`
	ExpiresIn int             `json:"expires_in"`
	State     string          `json:"state"`
	App       string          `json:"app"`
	Reused    json.RawMessage `json:"connection"`
}

// token starts a popup flow and returns the gateway's answer.
func (b *httpBrowser) token(body any) connectToken {
	b.g.t.Helper()
	status, _, raw := b.call(http.MethodPost, "token", body)
	if status != http.StatusOK {
		b.g.t.Fatalf("POST token: %d %s", status, raw)
	}
	var tok connectToken
	if err := json.Unmarshal(raw, &tok); err != nil {
		b.g.t.Fatalf("POST token: %s: %v", raw, err)
	}
	return tok
}

type storedConnection struct {
	ConnectionID string    `json:"connection_id"`
	App          string    `json:"app"`
	AppUUID      string    `json:"app_uuid"`
	Title        string    `json:"title"`
	Created      time.Time `json:"created"`
	LastVerified time.Time `json:"last_verified"`
}

func decodeConnection(t *testing.T, raw []byte) storedConnection {
	t.Helper()
	var c storedConnection
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("connection %s: %v", raw, err)
	}
	return c
}

func (b *httpBrowser) complete(app string, authID any, state string) (int, http.Header, []byte) {
	b.g.t.Helper()
	return b.call(http.MethodPost, "complete", map[string]any{"app": app, "auth_id": authID, "state": state})
}

// open requests a URL outside the gateway (the Connect UI) as this browser,
// coming from the partner's page.
func (b *httpBrowser) open(rawURL string) (int, string, string) {
	b.g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.g.t.Fatal(err)
	}
	req.Header.Set("Referer", partnerOrigin+"/")
	resp, err := b.client.Do(req)
	if err != nil {
		b.g.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

var popupMessageRE = regexp.MustCompile(`var message = (\{.*?\}), target = ("[^"]*");`)

// popupMessage opens the Connect URL as the popup would and returns what
// the page posts to its opener.
func (b *httpBrowser) popupMessage(connectURL string) map[string]any {
	b.g.t.Helper()
	status, _, body := b.open(connectURL)
	m := popupMessageRE.FindStringSubmatch(body)
	if status != http.StatusOK || m == nil {
		b.g.t.Fatalf("Connect UI: %d, no message posted:\n%s", status, body)
	}
	var msg map[string]any
	if err := json.Unmarshal([]byte(m[1]), &msg); err != nil {
		b.g.t.Fatal(err)
	}
	return msg
}

// connectPopup runs the whole popup flow over HTTP and returns the stored
// connection.
func (b *httpBrowser) connectPopup(app string) storedConnection {
	b.g.t.Helper()
	tok := b.token(map[string]any{"app": app})
	msg := b.popupMessage(tok.URL)
	if msg["type"] != "authenticationSuccess" {
		b.g.t.Fatalf("Connect posted %v", msg)
	}
	status, _, raw := b.complete(app, msg["authId"], tok.State)
	if status != http.StatusOK {
		b.g.t.Fatalf("POST complete: %d %s", status, raw)
	}
	return decodeConnection(b.g.t, raw)
}

func errorCode(raw []byte) string {
	var e errorBody
	_ = json.Unmarshal(raw, &e)
	return e.Error.Code
}

func TestConnectPopupFlowOverHTTP(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")

	status, hdr, raw := alice.call(http.MethodPost, "token", map[string]any{"app": slackApp})
	if status != http.StatusOK || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST token: %d %v %s", status, hdr, raw)
	}
	var tok connectToken
	_ = json.Unmarshal(raw, &tok)
	u, err := url.Parse(tok.URL)
	if err != nil || u.Scheme+"://"+u.Host+u.Path != g.fakeURL+"/to/"+slackApp || u.Query().Get("token") != tok.Token ||
		u.Query().Has("redirect_uri") || tok.ExpiresIn != 360 || tok.State == "" || tok.App != slackApp {
		t.Fatalf("token answer = %+v", tok)
	}
	// The browser binding: an HttpOnly, SameSite=Lax cookie (not Secure
	// over plain HTTP) holding the flow's nonce.
	cookies := (&http.Response{Header: hdr}).Cookies()
	if len(cookies) != 1 || cookies[0].Name != "zapier_connect" || !cookies[0].HttpOnly ||
		cookies[0].SameSite != http.SameSiteLaxMode || cookies[0].Secure || cookies[0].Path != "/" || cookies[0].MaxAge != 600 {
		t.Errorf("Set-Cookie = %q", hdr.Values("Set-Cookie"))
	}
	if st := g.fake.Stats(); st.ConnectExchanges != 1 {
		t.Errorf("connect exchanges = %d, want 1 (never cached)", st.ConnectExchanges)
	}

	msg := alice.popupMessage(tok.URL)
	authID, isNumber := msg["authId"].(float64)
	if msg["type"] != "authenticationSuccess" || !isNumber {
		t.Fatalf("Connect posted %v", msg)
	}
	g.fake.ResetRecorded()
	// authId is a number in postMessage; the gateway compares it as a
	// string with the API's ids.
	status, hdr, raw = alice.complete(slackApp, authID, tok.State)
	if status != http.StatusOK {
		t.Fatalf("POST complete: %d %s", status, raw)
	}
	conn := decodeConnection(t, raw)
	wantID := fmt.Sprint(int64(authID))
	if conn.ConnectionID != wantID || conn.App != slackApp || conn.AppUUID != slackUUID || conn.Title != fakezapier.AccountTitle("org_1", "alice") ||
		conn.Created.IsZero() || !conn.LastVerified.Equal(conn.Created) {
		t.Errorf("stored = %+v, want connection %s", conn, wantID)
	}
	if set := hdr.Get("Set-Cookie"); !strings.Contains(set, "Max-Age=0") {
		t.Errorf("the flow's cookie was not cleared: %q", set)
	}
	// Verified with alice's own token against the app's UUID.
	var checked bool
	for _, rr := range g.fake.Requests() {
		if rr.Path == "/v2/authentications" {
			q, _ := url.ParseQuery(rr.RawQuery)
			checked = q.Get("app") == slackUUID && rr.Tenant == "org_1" && rr.User == "alice"
		}
	}
	if !checked {
		t.Errorf("no /v2/authentications?app=%s call with alice's token: %+v", slackUUID, g.fake.Requests())
	}

	for _, route := range []string{"connections/" + slackApp, "connections/" + slackUUID} {
		status, _, raw = alice.call(http.MethodGet, route, nil)
		if got := decodeConnection(t, raw); status != http.StatusOK || got != conn {
			t.Errorf("GET %s: %d %+v, want %+v", route, status, got, conn)
		}
	}
	status, _, raw = alice.call(http.MethodGet, "connections", nil)
	var list struct{ Data []storedConnection }
	if err := json.Unmarshal(raw, &list); status != http.StatusOK || err != nil || len(list.Data) != 1 || list.Data[0] != conn {
		t.Errorf("GET connections: %d %s", status, raw)
	}
	if n := scrapeMetric(t, "caddy_zapier_connect_completions_total", `flow="popup",outcome="success"`); n < 1 {
		t.Errorf("connect completions (popup, success) = %v", n)
	}
}

func TestConnectStateRefusals(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	id := g.fake.AddConnection("org_1", "alice", slackUUID, "Slack")
	g.fake.AddConnection("org_1", "bob", slackUUID, "bob's Slack")

	tok := alice.token(map[string]any{"app": slackApp})
	parts := strings.Split(tok.State, ".")
	flip := func(s string) string {
		b := []byte(s)
		b[len(b)/2] ^= 0x01
		return string(b)
	}
	redirectState := func() string {
		status, hdr, raw := alice.call(http.MethodGet, "start?app="+slackApp+"&return_to=/done", nil)
		if status != http.StatusFound {
			t.Fatalf("start: %d %s", status, raw)
		}
		loc, _ := url.Parse(hdr.Get("Location"))
		return loc.Query().Get("state")
	}()
	noCookies := newHTTPBrowser(g, "org_1", "alice")

	for name, tc := range map[string]struct {
		b     *httpBrowser
		app   string
		state string
		want  string
	}{
		"forged payload":   {alice, slackApp, parts[0] + "." + flip(parts[1]) + "." + parts[2], "bad signature"},
		"forged signature": {alice, slackApp, parts[0] + "." + parts[1] + "." + flip(parts[2]), ""},
		"garbage":          {alice, slackApp, "garbage", "malformed"},
		"missing":          {alice, slackApp, "", "missing"},
		"other user":       {alice.as("org_1", "bob"), slackApp, tok.State, "another user"},
		"other tenant":     {alice.as("org_2", "alice"), slackApp, tok.State, "another user"},
		"other browser":    {noCookies, slackApp, tok.State, "not started in this browser"},
		"other app":        {alice, unmappedUUID, tok.State, "another app"},
		"redirect state":   {alice, slackApp, redirectState, "redirect flow"},
	} {
		status, hdr, raw := tc.b.complete(tc.app, id, tc.state)
		expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
		if !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s: %s, want the reason %q", name, raw, tc.want)
		}
	}
	// None of that spent the state; its owner completes once, never twice:
	// not from the browser (whose cookie the completion cleared), nor with
	// a copy of the cookie taken before.
	copied := newHTTPBrowser(g, "org_1", "alice")
	gw, _ := url.Parse(gatewayURL)
	copied.client.Jar.SetCookies(gw, alice.client.Jar.Cookies(gw))
	status, _, raw := alice.complete(slackApp, id, tok.State)
	if status != http.StatusOK || decodeConnection(t, raw).ConnectionID != id {
		t.Fatalf("the owner's completion: %d %s", status, raw)
	}
	status, hdr, raw := alice.complete(slackApp, id, tok.State)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	status, hdr, raw = copied.complete(slackApp, id, tok.State)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "already used") {
		t.Errorf("replay with the cookie: %s", raw)
	}
	// Bob never got a record out of any of it.
	status, _, raw = alice.as("org_1", "bob").call(http.MethodGet, "connections", nil)
	if status != http.StatusOK || string(raw) != "{\"data\":[]}\n" {
		t.Errorf("bob's connections: %d %s", status, raw)
	}
}

func TestConnectExpiredState(t *testing.T) {
	g := startConnectGateway(t, connectOptions{connectExtra: "state_ttl 1s"})
	alice := newHTTPBrowser(g, "org_1", "alice")
	id := g.fake.AddConnection("org_1", "alice", slackUUID, "Slack")
	tok := alice.token(map[string]any{"app": slackApp})
	time.Sleep(1100 * time.Millisecond) // past the state's expiry, whatever the machine's speed
	status, hdr, raw := alice.complete(slackApp, id, tok.State)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "expired") {
		t.Errorf("expired state: %s", raw)
	}
}

func TestConnectRefusesConnectionsThatAreNotTheUsers(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	bobs := g.fake.AddConnection("org_1", "bob", slackUUID, "bob's Slack")
	otherTenants := g.fake.AddConnection("org_2", "alice", slackUUID, "org_2 alice's Slack")
	expired := g.fake.AddConnection("org_1", "alice", slackUUID, "old Slack")
	g.fake.SetConnectionExpired(expired, true)
	otherApp := g.fake.AddConnection("org_1", "alice", unmappedUUID, "another app")

	for name, id := range map[string]any{
		"another user's":         bobs,
		"another tenant's":       otherTenants,
		"expired":                expired,
		"another app's":          otherApp,
		"unknown":                "999999999",
		"another user's, number": json.Number(bobs),
	} {
		tok := alice.token(map[string]any{"app": slackApp})
		status, hdr, raw := alice.complete(slackApp, id, tok.State)
		expectError(t, status, hdr, raw, http.StatusBadRequest, "connection_invalid")
		if t.Failed() {
			t.Fatalf("%s connection", name)
		}
	}
	// The redirect flow says the same, back at return_to.
	status, hdr, _ := alice.call(http.MethodGet, "start?app="+slackApp+"&return_to=/settings", nil)
	loc, _ := url.Parse(hdr.Get("Location"))
	if status != http.StatusFound {
		t.Fatalf("start: %d", status)
	}
	cb := "callback?" + url.Values{"authentication_id": {bobs}, "state": {loc.Query().Get("state")}}.Encode()
	status, hdr, raw := alice.call(http.MethodGet, cb, nil)
	if status != http.StatusFound || hdr.Get("Location") != "/settings?zapier_app="+slackApp+"&zapier_connect=error&zapier_error=connection_invalid" {
		t.Errorf("callback with bob's id: %d %q %s", status, hdr.Get("Location"), raw)
	}
	status, _, raw = alice.call(http.MethodGet, "connections", nil)
	if status != http.StatusOK || string(raw) != "{\"data\":[]}\n" {
		t.Errorf("alice's connections after refusals: %s", raw)
	}

	// A connection on the second page of /v2/authentications is found.
	var last string
	for i := range 150 {
		last = g.fake.AddConnection("org_1", "alice", slackUUID, fmt.Sprint("Slack ", i))
	}
	tok := alice.token(map[string]any{"app": slackApp})
	status, _, raw = alice.complete(slackApp, last, tok.State)
	if status != http.StatusOK || decodeConnection(t, raw).ConnectionID != last {
		t.Errorf("connection 150 of 151: %d %s", status, raw)
	}
}

// hostileReturnTos are open-redirect attempts GET start must refuse (the
// unit tests of connect.CheckReturnTo have more).
var hostileReturnTos = []string{
	"//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "https:evil.example",
	"https:/evil.example", "https://evil.example/", "javascript:alert(1)", "/%2F%2Fevil.example",
	"/%2f%2fevil.example", "/%5Cevil.example", "/%5cevil.example", "/%252F%252Fevil.example",
	"/\t/evil.example", "/%09/evil.example", "/x\x00", "HTTPS://APP.PARTNER.EXAMPLE/",
	partnerOrigin + ".evil.example/", partnerOrigin + "@evil.example/", partnerOrigin + "//evil.example",
	"http://app.partner.example/", "evil.example", " /x",
}

func TestConnectOpenRedirectVariantsAreRefused(t *testing.T) {
	// 27 starts from one user in a burst: more than the default rate limit.
	g := startConnectGateway(t, connectOptions{zapierExtra: "rate_limit {\n\t\t\tidentity off\n\t\t}"})
	alice := newHTTPBrowser(g, "org_1", "alice")
	before := g.fake.Stats().ConnectExchanges
	for _, rt := range hostileReturnTos {
		status, hdr, raw := alice.call(http.MethodGet, "start?"+url.Values{"app": {slackApp}, "return_to": {rt}}.Encode(), nil)
		if status != http.StatusBadRequest || errorCode(raw) != "bad_request" || hdr.Get("Location") != "" || hdr.Get("Set-Cookie") != "" {
			t.Errorf("return_to %q: %d Location %q: %s", rt, status, hdr.Get("Location"), raw)
		}
	}
	if n := g.fake.Stats().ConnectExchanges; n != before {
		t.Errorf("refused starts minted %d connect tokens", n-before)
	}
	// The same checks hold for a return_to smuggled in raw (not encoded).
	status, _, raw := alice.call(http.MethodGet, "start?app="+slackApp+"&return_to=//evil.example", nil)
	if status != http.StatusBadRequest {
		t.Errorf("raw //evil.example: %d %s", status, raw)
	}
	for _, rt := range []string{"/settings?tab=apps", partnerOrigin + "/settings", partnerOrigin} {
		status, hdr, raw := alice.call(http.MethodGet, "start?"+url.Values{"app": {slackApp}, "return_to": {rt}}.Encode(), nil)
		if status != http.StatusFound || !strings.HasPrefix(hdr.Get("Location"), g.fakeURL+"/to/"+slackApp+"?") {
			t.Errorf("return_to %q: %d %q %s", rt, status, hdr.Get("Location"), raw)
		}
	}
}

func TestConnectRedirectFlowOverHTTP(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	returnTo := partnerOrigin + "/settings?tab=apps#integrations"

	status, hdr, raw := alice.call(http.MethodGet, "start?"+url.Values{"app": {slackApp}, "return_to": {returnTo}}.Encode(), nil)
	if status != http.StatusFound || hdr.Get("Referrer-Policy") != "no-referrer" || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("start: %d %v %s", status, hdr, raw)
	}
	loc, _ := url.Parse(hdr.Get("Location"))
	q := loc.Query()
	if loc.Path != "/to/"+slackApp || q.Get("redirect_uri") != gatewayURL+"/zapier/connect/callback" || q.Get("token") == "" || q.Get("state") == "" {
		t.Fatalf("start redirected to %s", loc)
	}
	// Connect redirects back to the callback with the connection id.
	status, cbLoc, body := alice.open(loc.String())
	if status != http.StatusFound || !strings.HasPrefix(cbLoc, gatewayURL+"/zapier/connect/callback?") {
		t.Fatalf("Connect UI: %d %q %s", status, cbLoc, body)
	}
	callback := strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/")
	status, hdr, raw = alice.call(http.MethodGet, callback, nil)
	conns := g.fake.Connections("org_1", "alice", slackUUID)
	if len(conns) != 1 {
		t.Fatalf("connections at the fake: %+v", conns)
	}
	want := partnerOrigin + "/settings?tab=apps&zapier_app=" + slackApp + "&zapier_connect=success&zapier_connection_id=" + conns[0].ID + "#integrations"
	if status != http.StatusFound || hdr.Get("Location") != want {
		t.Fatalf("callback: %d %q %s, want Location %q", status, hdr.Get("Location"), raw, want)
	}
	status, _, raw = alice.call(http.MethodGet, "connections/"+slackApp, nil)
	if status != http.StatusOK || decodeConnection(t, raw).ConnectionID != conns[0].ID {
		t.Errorf("stored: %d %s", status, raw)
	}
	// The callback is single-use.
	status, hdr, raw = alice.call(http.MethodGet, callback, nil)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")

	// A denial comes back to return_to as an error, with Zapier's words.
	g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectDeny})
	_, hdr, _ = alice.call(http.MethodGet, "start?app="+slackApp+"&reconnect=1&return_to=/settings", nil)
	loc, _ = url.Parse(hdr.Get("Location"))
	if loc.Query().Get("reconnect_id") != conns[0].ID {
		t.Errorf("reconnect=1 did not re-authorize the stored connection: %s", loc)
	}
	_, cbLoc, _ = alice.open(loc.String())
	_, hdr, _ = alice.call(http.MethodGet, strings.TrimPrefix(cbLoc, gatewayURL+"/zapier/connect/"), nil)
	back, _ := url.Parse(hdr.Get("Location"))
	if back.Path != "/settings" || back.Query().Get("zapier_connect") != "error" || back.Query().Get("zapier_error") != "access_denied" ||
		!strings.HasPrefix(back.Query().Get("zapier_error_description"), "OAuth Failed") {
		t.Errorf("denied: back at %s", back)
	}
	if n := scrapeMetric(t, "caddy_zapier_connect_completions_total", `flow="redirect",outcome="success"`); n < 1 {
		t.Errorf("connect completions (redirect, success) = %v", n)
	}
}

func TestConnectDeleteRemovesOnlyTheCallersRecord(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	bob := newHTTPBrowser(g, "org_1", "bob")
	aliceOrg2 := newHTTPBrowser(g, "org_2", "alice")
	alice.connectPopup(slackApp)
	bobsConn := bob.connectPopup(slackApp)
	aliceOrg2.connectPopup(slackApp)
	alice.connectPopup(unmappedUUID)

	status, _, raw := alice.call(http.MethodDelete, "connections/"+slackApp, nil)
	if status != http.StatusOK || !strings.Contains(string(raw), `"upstream":"deleted"`) {
		t.Fatalf("DELETE: %d %s", status, raw)
	}
	status, hdr, raw := alice.call(http.MethodGet, "connections/"+slackApp, nil)
	expectError(t, status, hdr, raw, http.StatusNotFound, "connection_missing")
	status, hdr, raw = alice.call(http.MethodDelete, "connections/"+slackApp, nil)
	expectError(t, status, hdr, raw, http.StatusNotFound, "connection_missing")

	status, _, raw = bob.call(http.MethodGet, "connections/"+slackApp, nil)
	if status != http.StatusOK || decodeConnection(t, raw) != bobsConn {
		t.Errorf("bob's record after alice's DELETE: %d %s", status, raw)
	}
	if status, _, _ := aliceOrg2.call(http.MethodGet, "connections/"+slackApp, nil); status != http.StatusOK {
		t.Errorf("alice in org_2 lost her record: %d", status)
	}
	status, _, raw = alice.call(http.MethodGet, "connections", nil)
	var list struct{ Data []storedConnection }
	_ = json.Unmarshal(raw, &list)
	if status != http.StatusOK || len(list.Data) != 1 || list.Data[0].AppUUID != unmappedUUID {
		t.Errorf("alice's remaining connections: %s", raw)
	}
	// Zapier deleted alice's, and only hers.
	if n := len(g.fake.Connections("org_1", "alice", slackUUID)); n != 0 || g.fake.AuthenticationDeletes() != 1 ||
		len(g.fake.Connections("org_1", "bob", slackUUID)) != 1 || len(g.fake.Connections("org_2", "alice", slackUUID)) != 1 {
		t.Errorf("connections at the fake = %d, deletes %d", n, g.fake.AuthenticationDeletes())
	}
}

func TestConnectReusesAndReconnects(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	first := alice.connectPopup(slackApp)
	exchanges := g.fake.Stats().ConnectExchanges

	// A valid stored connection is reused: no connect token, no duplicate.
	tok := alice.token(map[string]any{"app": slackApp})
	reused := decodeConnection(t, tok.Reused)
	if tok.URL != "" || reused.ConnectionID != first.ConnectionID || !reused.Created.Equal(first.Created) ||
		g.fake.Stats().ConnectExchanges != exchanges {
		t.Errorf("second connect: %+v (reused %+v)", tok, reused)
	}
	status, hdr, _ := alice.call(http.MethodGet, "start?app="+slackApp+"&return_to=/s", nil)
	if status != http.StatusFound || hdr.Get("Location") != "/s?zapier_app="+slackApp+"&zapier_connect=success&zapier_connection_id="+first.ConnectionID {
		t.Errorf("start with a valid connection: %d %q", status, hdr.Get("Location"))
	}

	// Zapier says it expired: the flow re-authorizes the same connection.
	g.fake.SetConnectionExpired(first.ConnectionID, true)
	tok = alice.token(map[string]any{"app": slackApp})
	u, _ := url.Parse(tok.URL)
	if u.Query().Get("reconnect_id") != first.ConnectionID {
		t.Fatalf("expired connection: Connect URL %s has no reconnect_id", tok.URL)
	}
	msg := alice.popupMessage(tok.URL)
	status, _, raw := alice.complete(slackApp, msg["authId"], tok.State)
	again := decodeConnection(t, raw)
	if status != http.StatusOK || again.ConnectionID != first.ConnectionID || !again.Created.Equal(first.Created) ||
		!again.LastVerified.After(first.LastVerified) {
		t.Errorf("after reconnect: %d %+v, first %+v", status, again, first)
	}
	if conns := g.fake.Connections("org_1", "alice", slackUUID); len(conns) != 1 || conns[0].IsExpired {
		t.Errorf("connections at the fake: %+v, want the one, live", conns)
	}

	// Explicitly: reconnect re-authorizes the stored one, reconnect_id a
	// given one.
	if u, _ := url.Parse(alice.token(map[string]any{"app": slackApp, "reconnect": true}).URL); u.Query().Get("reconnect_id") != first.ConnectionID {
		t.Errorf("reconnect: true: %s", u)
	}
	if u, _ := url.Parse(alice.token(map[string]any{"app": slackApp, "reconnect_id": "4242"}).URL); u.Query().Get("reconnect_id") != "4242" {
		t.Errorf("reconnect_id: %s", u)
	}
	status, hdr, raw = alice.call(http.MethodPost, "token", map[string]any{"app": slackApp, "reconnect_id": "a b"})
	expectError(t, status, hdr, raw, http.StatusBadRequest, "bad_request")
}

func TestConnectAppIdentifiersAndRequests(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")

	// An app neither configured nor in Zapier's catalog is not found.
	status, hdr, raw := alice.call(http.MethodPost, "token", map[string]any{"app": "GoogleSheetsV2API"})
	expectError(t, status, hdr, raw, http.StatusNotFound, "app_not_found")
	// The mapped app named by its UUID still goes to Connect by its
	// implementation id; an unmapped UUID is used in both places.
	if tok := alice.token(map[string]any{"app": slackUUID}); !strings.HasPrefix(tok.URL, g.fakeURL+"/to/"+slackApp+"?") {
		t.Errorf("by UUID: %s", tok.URL)
	}
	conn := alice.connectPopup(unmappedUUID)
	if conn.App != unmappedUUID || conn.AppUUID != unmappedUUID {
		t.Errorf("unmapped UUID app: %+v", conn)
	}

	for name, tc := range map[string]struct {
		method, route string
		body          any
		status        int
		code          string
	}{
		"not JSON":          {http.MethodPost, "token", "app=x", http.StatusBadRequest, "bad_request"},
		"unknown field":     {http.MethodPost, "token", `{"app":"SlackCLIAPI","colour":"dark"}`, http.StatusBadRequest, "bad_request"},
		"two objects":       {http.MethodPost, "token", `{"app":"SlackCLIAPI"}{}`, http.StatusBadRequest, "bad_request"},
		"float auth_id":     {http.MethodPost, "complete", `{"app":"SlackCLIAPI","auth_id":1.5,"state":"x"}`, http.StatusBadRequest, "bad_request"},
		"GET token":         {http.MethodGet, "token", nil, http.StatusMethodNotAllowed, "method_not_allowed"},
		"POST start":        {http.MethodPost, "start", `{}`, http.StatusMethodNotAllowed, "method_not_allowed"},
		"unknown route":     {http.MethodGet, "nope", nil, http.StatusNotFound, "not_found"},
		"slash in app":      {http.MethodGet, "connections/a%2Fb", nil, http.StatusBadRequest, "bad_request"},
		"callback no state": {http.MethodGet, "callback?authentication_id=1", nil, http.StatusBadRequest, "connect_state_invalid"},
		"callback both":     {http.MethodGet, "callback?authentication_id=1&error=x", nil, http.StatusBadRequest, "bad_request"},
	} {
		status, hdr, raw := alice.call(tc.method, tc.route, tc.body)
		if status != tc.status || errorCode(raw) != tc.code || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s, want %d %s", name, status, raw, tc.status, tc.code)
		}
	}
	// Not JSON by Content-Type either.
	status, _, raw = g.do(request{method: http.MethodPost, path: "/zapier/connect/token", tenant: "org_1", user: "alice",
		header: http.Header{"Content-Type": {"text/plain"}}, body: `{"app":"SlackCLIAPI"}`})
	if status != http.StatusBadRequest {
		t.Errorf("text/plain body: %d %s", status, raw)
	}
}

func TestConnectConcurrentFlowsInOneBrowser(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	slack := alice.token(map[string]any{"app": slackApp})
	other := alice.token(map[string]any{"app": unmappedUUID})
	// Finished in the other order, each with its own state and nonce.
	for _, f := range []struct {
		app string
		tok connectToken
	}{{unmappedUUID, other}, {slackApp, slack}} {
		msg := alice.popupMessage(f.tok.URL)
		if status, _, raw := alice.complete(f.app, msg["authId"], f.tok.State); status != http.StatusOK {
			t.Errorf("completing %s: %d %s", f.app, status, raw)
		}
	}
}

// TestConnectStateWorksAcrossGatewaysSharingStorage starts a flow on the
// in-process gateway and finishes it on a second Caddy (the built binary
// running Caddyfile.example) that shares its storage: the state verifies
// there, is spent for both, and both see the stored connection.
func TestConnectStateWorksAcrossGatewaysSharingStorage(t *testing.T) {
	dataDir := t.TempDir()
	g := startConnectGateway(t, connectOptions{storageDir: filepath.Join(dataDir, "caddy")})
	// Ports of their own (clear of another run's gateway port
	// when offsets differ by 100).
	port := 9050 + portOffset
	startCaddyProcess(t, []string{
		"ZAPIER_CLIENT_ID=" + testClientID, "ZAPIER_CLIENT_SECRET=" + testSecret, "ZAPIER_ISSUER=" + testIssuer,
		"ZAPIER_TOKEN_URL=" + g.fakeURL + "/oauth/token", "ZAPIER_API_URL=" + g.fakeURL, "ZAPIER_CONNECT_URL=" + g.fakeURL,
		fmt.Sprintf("ZAPIER_GATEWAY_PORT=%d", port), fmt.Sprintf("ZAPIER_ADMIN=localhost:%d", 2950+portOffset),
	}, dataDir)
	alice := newHTTPBrowser(g, "org_1", "alice")
	onB := func(method, route string, body string) (int, []byte) {
		hdr := http.Header{}
		if body != "" {
			hdr.Set("Content-Type", "application/json")
		}
		status, _, raw, err := send(request{method: method, path: "/zapier/connect/" + route, tenant: "org_1", user: "alice",
			header: hdr, body: body, client: alice.client, base: port})
		if err != nil {
			return 0, []byte(err.Error())
		}
		return status, raw
	}
	eventually(t, 30*time.Second, "the second gateway to serve connect.js", func() bool {
		status, _ := onB(http.MethodGet, "connect.js", "")
		return status == http.StatusOK
	})

	tok := alice.token(map[string]any{"app": unmappedUUID})
	msg := alice.popupMessage(tok.URL)
	gw, _ := url.Parse(gatewayURL)
	saved := alice.client.Jar.Cookies(gw) // a copy of the cookie, before the flow ends
	body, _ := json.Marshal(map[string]any{"app": unmappedUUID, "auth_id": msg["authId"], "state": tok.State})
	status, raw := onB(http.MethodPost, "complete", string(body))
	if status != http.StatusOK {
		t.Fatalf("completing on the other gateway: %d %s", status, raw)
	}
	conn := decodeConnection(t, raw)
	status, _, raw = alice.call(http.MethodGet, "connections/"+unmappedUUID, nil)
	if status != http.StatusOK || decodeConnection(t, raw) != conn {
		t.Errorf("the first gateway does not see the connection: %d %s", status, raw)
	}
	// The state and a copy of the cookie, replayed on the first gateway:
	// spent there too.
	copied := newHTTPBrowser(g, "org_1", "alice")
	copied.client.Jar.SetCookies(gw, saved)
	status, hdr, raw := copied.complete(unmappedUUID, msg["authId"], tok.State)
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "already used") {
		t.Errorf("replay: %s", raw)
	}
}

// TestConnectRecoversFromARevokedAccessToken: when Zapier no longer accepts
// the cached access token, the connect-token exchange and the verification
// each evict it and succeed with a fresh one.
func TestConnectRecoversFromARevokedAccessToken(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	id := g.fake.AddConnection("org_1", "alice", slackUUID, "Slack")
	g.echoAs("org_1", "alice") // cache an access token

	g.fake.Revoke("org_1", "alice")
	tok := alice.token(map[string]any{"app": slackApp})
	if n := g.fake.ExchangesFor("org_1", "alice"); n != 2 {
		t.Errorf("access-token exchanges = %d, want 2 (the revoked token replaced once)", n)
	}
	g.fake.Revoke("org_1", "alice")
	status, _, raw := alice.complete(slackApp, id, tok.State)
	if status != http.StatusOK || decodeConnection(t, raw).ConnectionID != id {
		t.Errorf("complete after a revocation: %d %s", status, raw)
	}
	if n := g.fake.ExchangesFor("org_1", "alice"); n != 3 {
		t.Errorf("access-token exchanges = %d, want 3", n)
	}
}

func TestConnectIdentityIsRequiredLikeZapierAuth(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	_, _, want := g.do(request{path: "/zapier/api/v2/echo"})
	for _, route := range []string{"connections", "token", "start?app=" + slackApp, "callback?authentication_id=1&state=x", "complete"} {
		method := http.MethodGet
		if route == "token" || route == "complete" {
			method = http.MethodPost
		}
		status, hdr, raw := g.do(request{method: method, path: "/zapier/connect/" + route})
		expectError(t, status, hdr, raw, http.StatusUnauthorized, "identity_missing")
		if string(raw) != string(want) {
			t.Errorf("%s: %s, want the same refusal as zapier_auth: %s", route, raw, want)
		}
	}
	status, hdr, raw := g.do(request{path: "/zapier/connect/connections", tenant: "org_1", user: strings.Repeat("a", 257)})
	expectError(t, status, hdr, raw, http.StatusBadRequest, "identity_invalid")

	// connect.js needs no identity.
	status, hdr, raw = g.do(request{path: "/zapier/connect/connect.js"})
	if status != http.StatusOK || hdr.Get("Content-Type") != "text/javascript; charset=utf-8" || !strings.Contains(string(raw), "window.ZapierConnect") {
		t.Errorf("connect.js: %d %v", status, hdr)
	}
}
