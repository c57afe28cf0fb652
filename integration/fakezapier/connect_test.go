package fakezapier

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	slackID   = "SlackCLIAPI"
	slackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"
	partner   = "https://app.partner.example"
	callback  = "https://app.partner.example/zapier/connect/callback"
)

// connectEnv is an env with a registered partner and app, and an access
// token for org/alice.
type connectEnv struct {
	*env
	access string
}

func newConnectEnv(t *testing.T) *connectEnv {
	e := newEnv(t)
	e.fz.RegisterPartner(partner, callback)
	e.fz.RegisterApp(slackID, slackUUID)
	return &connectEnv{env: e, access: e.exchange(e.key("ES256"), "org", "alice")}
}

// connectToken mints a connect token for <fake>/to/<app>.
func (e *connectEnv) connectToken(app string) string {
	e.t.Helper()
	res := e.postToken(connectForm(e.access, e.srv.URL+"/to/"+app, "connection:write"), false)
	if res.status != http.StatusOK {
		e.t.Fatalf("connect token: HTTP %d %s", res.status, res.raw)
	}
	return res.str("access_token")
}

// noFollow never follows redirects, so the test sees Connect's answer.
var noFollow = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// open requests a Connect URL (as the popup or the redirected browser would,
// coming from the partner's page) and returns the status, Location and body.
func (e *connectEnv) open(rawURL string) (int, string, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Referer", partner+"/")
	resp, err := noFollow.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

func (e *connectEnv) popupURL(app, token string, extra url.Values) string {
	q := url.Values{"token": {token}}
	for k, v := range extra {
		q[k] = v
	}
	return e.srv.URL + "/to/" + app + "?" + q.Encode()
}

var postMessageRE = regexp.MustCompile(`var message = (\{.*?\}), target = ("[^"]*");`)

// posted extracts what the popup page posts to its opener, and to which
// target origin.
func posted(t *testing.T, body string) (map[string]any, string) {
	t.Helper()
	m := postMessageRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the page posts no message:\n%s", body)
	}
	var msg map[string]any
	var target string
	if err := json.Unmarshal([]byte(m[1]), &msg); err != nil {
		t.Fatalf("message %s: %v", m[1], err)
	}
	if err := json.Unmarshal([]byte(m[2]), &target); err != nil {
		t.Fatalf("target %s: %v", m[2], err)
	}
	return msg, target
}

func TestConnectPopupPostsSuccessToTheExactOrigin(t *testing.T) {
	e := newConnectEnv(t)
	e.fz.QueueConnectOutcomes(ConnectOutcome{Title: "Slack alice@acme"})
	status, _, body := e.open(e.popupURL(slackID, e.connectToken(slackID), nil))
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	msg, target := posted(t, body)
	if target != partner {
		t.Errorf("target origin = %q, want %q", target, partner)
	}
	if msg["type"] != "authenticationSuccess" {
		t.Fatalf("message = %v", msg)
	}
	id, isNumber := msg["authId"].(float64)
	if !isNumber {
		t.Fatalf("authId = %#v, want a number as Connect documents", msg["authId"])
	}
	conns := e.fz.Connections("org", "alice", slackUUID)
	if len(conns) != 1 || conns[0].ID != formatFloat(id) ||
		conns[0].Title != "Slack alice@acme" || conns[0].IsExpired {
		t.Errorf("connections = %+v, want one live connection with id %v under the app UUID", conns, id)
	}
	// /v2/authentications lists it for its owner only.
	res := e.api(http.MethodGet, "/v2/authentications?app="+slackUUID, e.access, "")
	if data, _ := res.body["data"].([]any); len(data) != 1 {
		t.Errorf("owner sees %s", res.raw)
	}
	bob := e.exchange(e.key("ES256"), "org", "bob")
	res = e.api(http.MethodGet, "/v2/authentications?app="+slackUUID, bob, "")
	if data, _ := res.body["data"].([]any); len(data) != 0 {
		t.Errorf("another user sees %s", res.raw)
	}
	if e.fz.ConnectSessions() != 1 {
		t.Errorf("sessions = %d", e.fz.ConnectSessions())
	}
}

// formatFloat renders a JSON number as JSON does (100001, not 1.00001e+05).
func formatFloat(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

func TestConnectTokenIsSingleUseAndBoundToItsResource(t *testing.T) {
	e := newConnectEnv(t)
	tok := e.connectToken(slackID)
	// The token is bound to /to/SlackCLIAPI: another app's URL refuses it,
	// without spending it.
	_, _, body := e.open(e.popupURL("GoogleSheetsV2API", tok, nil))
	if msg, _ := posted(t, body); msg["type"] != "authenticationError" || !strings.Contains(msg["error"].(string), "different resource") {
		t.Errorf("other resource: %v", msg)
	}
	_, _, body = e.open(e.popupURL(slackID, tok, nil))
	if msg, _ := posted(t, body); msg["type"] != "authenticationSuccess" {
		t.Fatalf("first use: %v", msg)
	}
	_, _, body = e.open(e.popupURL(slackID, tok, nil))
	if msg, _ := posted(t, body); msg["type"] != "authenticationError" || !strings.Contains(msg["error"].(string), "already used") {
		t.Errorf("second use: %v", msg)
	}
	_, _, body = e.open(e.popupURL(slackID, "fzct_forged", nil))
	if msg, _ := posted(t, body); msg["error"] != "Invalid token" {
		t.Errorf("forged token: %v", msg)
	}
	expiring := e.connectToken(slackID)
	e.advance(361 * time.Second)
	_, _, body = e.open(e.popupURL(slackID, expiring, nil))
	if msg, _ := posted(t, body); msg["error"] != "Token expired" {
		t.Errorf("expired token: %v", msg)
	}
	if n := len(e.fz.Connections("org", "alice", slackUUID)); n != 1 {
		t.Errorf("connections = %d, want 1", n)
	}
}

func TestConnectRedirectPattern(t *testing.T) {
	e := newConnectEnv(t)

	status, loc, _ := e.open(e.popupURL(slackID, e.connectToken(slackID), url.Values{"redirect_uri": {callback}, "state": {"st-1"}}))
	if status != http.StatusFound {
		t.Fatalf("status %d", status)
	}
	u, _ := url.Parse(loc)
	conns := e.fz.Connections("org", "alice", slackUUID)
	// As Zapier documents it: authentication_id and service, no state.
	if u.Scheme+"://"+u.Host+u.Path != callback || len(conns) != 1 || len(u.Query()) != 2 ||
		u.Query().Get("authentication_id") != conns[0].ID || u.Query().Get("service") != slackID {
		t.Errorf("redirected to %s; connections %+v", loc, conns)
	}
	// Asked to, the fake echoes state on success too; the service is the
	// app's key also when the Connect URL named the app by its UUID.
	e.fz.cfg.EchoStateOnSuccess = true
	_, loc, _ = e.open(e.popupURL(slackID, e.connectToken(slackID), url.Values{"redirect_uri": {callback}, "state": {"st-2"}}))
	u, _ = url.Parse(loc)
	if q := u.Query(); q.Get("state") != "st-2" || q.Get("service") != slackID || q.Get("authentication_id") == "" {
		t.Errorf("echoing state: redirected to %s", loc)
	}
	e.fz.cfg.EchoStateOnSuccess = false
	e.fz.QueueConnectOutcomes(ConnectOutcome{Kind: ConnectDeny})

	// Denied, and without state: error and description, no state.
	_, loc, _ = e.open(e.popupURL(slackID, e.connectToken(slackID), url.Values{"redirect_uri": {callback}}))
	u, _ = url.Parse(loc)
	q := u.Query()
	if q.Get("error") != "access_denied" || !strings.HasPrefix(q.Get("error_description"), "OAuth Failed") || q.Has("state") || q.Has("authentication_id") {
		t.Errorf("denied: redirected to %s", loc)
	}

	// A bad token in redirect mode comes back as invalid_request.
	_, loc, _ = e.open(e.popupURL(slackID, "fzct_nope", url.Values{"redirect_uri": {callback}, "state": {"s"}}))
	u, _ = url.Parse(loc)
	if q := u.Query(); q.Get("error") != "invalid_request" || q.Get("error_description") != "Invalid token" || q.Get("state") != "s" {
		t.Errorf("bad token: redirected to %s", loc)
	}

	// An unregistered redirect_uri is never redirected to, and the token
	// stays unspent.
	tok := e.connectToken(slackID)
	status, loc, _ = e.open(e.popupURL(slackID, tok, url.Values{"redirect_uri": {"https://evil.example/cb"}}))
	if status != http.StatusBadRequest || loc != "" {
		t.Errorf("unregistered redirect_uri: status %d, Location %q", status, loc)
	}
	if status, _, _ := e.open(e.popupURL(slackID, tok, url.Values{"redirect_uri": {callback}})); status != http.StatusFound {
		t.Errorf("the token was spent by a refused request")
	}
}

func TestConnectReconnectAndOtherOutcomes(t *testing.T) {
	e := newConnectEnv(t)
	id := e.fz.AddConnection("org", "alice", slackUUID, "old")
	e.fz.SetConnectionExpired(id, true)
	other := e.fz.AddConnection("org", "bob", slackUUID, "bob's")

	_, _, body := e.open(e.popupURL(slackID, e.connectToken(slackID), url.Values{"reconnect_id": {id}}))
	msg, _ := posted(t, body)
	if msg["type"] != "authenticationSuccess" || formatFloat(msg["authId"].(float64)) != id {
		t.Errorf("reconnect: %v, want the same id %s", msg, id)
	}
	if conns := e.fz.Connections("org", "alice", slackUUID); len(conns) != 1 || conns[0].IsExpired {
		t.Errorf("after reconnect: %+v, want the one connection, live again", conns)
	}
	// Someone else's connection cannot be re-authorized.
	_, _, body = e.open(e.popupURL(slackID, e.connectToken(slackID), url.Values{"reconnect_id": {other}}))
	if msg, _ := posted(t, body); msg["error"] != "Invalid reconnect_id" {
		t.Errorf("reconnect of bob's connection: %v", msg)
	}

	e.fz.QueueConnectOutcomes(
		ConnectOutcome{Kind: ConnectDeny, Error: "server_error", Description: "OAuth Failed: nope"},
		ConnectOutcome{Kind: ConnectHold},
		ConnectOutcome{Kind: ConnectThirdParty, URL: "https://slack.example/oauth"},
	)
	_, _, body = e.open(e.popupURL(slackID, e.connectToken(slackID), nil))
	if msg, target := posted(t, body); msg["type"] != "authenticationError" || msg["error"] != "OAuth Failed: nope" || target != partner {
		t.Errorf("deny: %v to %q", msg, target)
	}
	status, _, body := e.open(e.popupURL(slackID, e.connectToken(slackID), nil))
	if status != http.StatusOK || postMessageRE.MatchString(body) {
		t.Errorf("hold: status %d, page posts a message:\n%s", status, body)
	}
	status, loc, _ := e.open(e.popupURL(slackID, e.connectToken(slackID), nil))
	if status != http.StatusFound || loc != "https://slack.example/oauth" {
		t.Errorf("third party: status %d, Location %q", status, loc)
	}
	if _, _, body := e.open(e.srv.URL + "/to/bad%20app?token=x"); !strings.Contains(body, "Invalid app") {
		t.Errorf("invalid app: %s", body)
	}
}

func TestConnectTargetOriginWithoutRegistration(t *testing.T) {
	e := newEnv(t)
	access := e.exchange(e.key("ES256"), "org", "alice")
	res := e.postToken(connectForm(access, e.srv.URL+"/to/"+slackUUID, "connection:write"), false)
	ce := &connectEnv{env: e, access: access}
	// With nothing registered, the opener page's origin (its Referer) is the
	// target, and an unmapped app id is its own app id.
	_, _, body := ce.open(ce.popupURL(slackUUID, res.str("access_token"), nil))
	if msg, target := posted(t, body); msg["type"] != "authenticationSuccess" || target != partner {
		t.Errorf("message %v to %q", msg, target)
	}
	if n := len(e.fz.Connections("org", "alice", slackUUID)); n != 1 {
		t.Errorf("connections under the UUID = %d", n)
	}
}

func TestAuthIDValue(t *testing.T) {
	for id, want := range map[string]string{"100001": "100001", "example_akLLd8kB": `"example_akLLd8kB"`, "1e3": `"1e3"`, "-1": `"-1"`, "+1": `"+1"`} {
		b, _ := json.Marshal(authIDValue(id))
		if string(b) != want {
			t.Errorf("authIDValue(%q) = %s, want %s", id, b, want)
		}
	}
}
