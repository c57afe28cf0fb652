package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The browser tests run the Connect flows in a real headless Chromium. The
// partner's page is served by partnerSite, on http://localhost:<port>; the
// fake's Connect UI is on http://127.0.0.1:<other port>, another origin, so
// origin checks mean something.

// ingressPrefix is where the partner's ingress mounts the gateway's
// zapier_connect routes (the gateway has them at /zapier/connect/).
const ingressPrefix = "/apps/zapier/"

// partnerSite is the partner's web app and ingress: it keeps a session
// cookie, serves the pages under testdata/connect, and proxies
// /apps/zapier/* to the gateway's /zapier/connect/* with the identity
// headers of the session, the way a partner's backend would.
type partnerSite struct {
	srv    *httptest.Server
	origin string

	mu       sync.Mutex
	sessions map[string][2]string // session id → tenant, user
}

func startPartnerSite(t *testing.T) *partnerSite {
	t.Helper()
	p := &partnerSite{sessions: map[string][2]string{}}
	gw, _ := url.Parse(gatewayURL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(gw)
		pr.Out.URL.Path = "/zapier/connect/" + strings.TrimPrefix(pr.In.URL.Path, ingressPrefix)
		pr.Out.URL.RawPath = ""
		for name := range pr.Out.Header { // the browser never asserts an identity
			if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(name, "_", "-")), "x-zapier-") {
				pr.Out.Header.Del(name)
			}
		}
		if tenant, user, ok := p.identity(pr.In); ok {
			pr.Out.Header.Set("X-Zapier-Tenant", tenant)
			pr.Out.Header.Set("X-Zapier-User", user)
		}
	}}
	mux := http.NewServeMux()
	mux.Handle(ingressPrefix, proxy)
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		sid := hex.EncodeToString(b)
		p.mu.Lock()
		p.sessions[sid] = [2]string{r.URL.Query().Get("tenant"), r.URL.Query().Get("user")}
		p.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "partner_session", Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/", http.StatusFound)
	})
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFile(w, r, filepath.Join("testdata", "connect", name))
		}
	}
	mux.HandleFunc("GET /{$}", page("partner.html"))
	mux.HandleFunc("GET /done", page("done.html"))
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.origin = "http://localhost:" + p.srv.URL[strings.LastIndex(p.srv.URL, ":")+1:]
	return p
}

func (p *partnerSite) identity(r *http.Request) (string, string, bool) {
	c, err := r.Cookie("partner_session")
	if err != nil {
		return "", "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.sessions[c.Value]
	return id[0], id[1], ok
}

// thirdPartySite serves testdata/connect/thirdparty.html on a third origin:
// a page that the Connect popup may show during an app's OAuth step.
func thirdPartySite(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join("testdata", "connect", "thirdparty.html"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// chromiumPath finds Debian's chromium; `make -f xcaddy.mk test-deps`
// installs it.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found (set CHROMIUM, or run `make -f xcaddy.mk test-deps`, which installs Debian's chromium)")
	return ""
}

// newChromium starts a headless Chromium with a fresh profile and returns
// a context for its first tab. The popup blocker stays on.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	profile, err := os.MkdirTemp("", "caddy-zapier-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// connect.js polls popup.closed from the opener while the popup
		// has the focus: keep its timers running at full speed.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
		_ = os.RemoveAll(profile)
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// browserEnv is a gateway, the partner's site in front of it, and a
// Chromium logged in to the partner's site as org_1/alice.
type browserEnv struct {
	t       *testing.T
	g       *gateway
	partner *partnerSite
	ctx     context.Context
}

func newBrowserEnv(t *testing.T, fake fakezapier.Config) *browserEnv {
	t.Helper()
	partner := startPartnerSite(t)
	g := startConnectGateway(t, connectOptions{
		callbackURL:  partner.origin + ingressPrefix + "callback",
		returnOrigin: partner.origin,
		fake:         fake,
	})
	e := &browserEnv{t: t, g: g, partner: partner, ctx: newChromium(t)}
	e.do(chromedp.Navigate(partner.origin + "/login?tenant=org_1&user=alice"))
	e.do(chromedp.WaitReady(chromedp.CSS("#connect")))
	if !strings.HasPrefix(g.fakeURL, "http://127.0.0.1:") || strings.HasPrefix(partner.origin, g.fakeURL) {
		t.Fatalf("the Connect UI (%s) must be on another origin than the partner (%s)", g.fakeURL, partner.origin)
	}
	return e
}

func (e *browserEnv) do(actions ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	if err := chromedp.Do(e.ctx, actions...); err != nil {
		e.t.Fatalf("browser: %v", err)
	}
}

// connectResult is window.result on the partner page.
type connectResult struct {
	OK          bool              `json:"ok"`
	Connection  *storedConnection `json:"connection"`
	Reason      string            `json:"reason"`
	Message     string            `json:"message"`
	Code        string            `json:"code"`
	ZapierError string            `json:"zapierError"`
}

// result waits for ZapierConnect.connect's promise to settle.
func (e *browserEnv) result() connectResult {
	e.t.Helper()
	res, err := chromedp.Run(e.ctx, chromedp.Poll[connectResult]("window.result", chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		e.t.Fatalf("waiting for connect()'s outcome: %v", err)
	}
	return res
}

// pending reports whether connect()'s promise is still unsettled.
func (e *browserEnv) pending() bool {
	e.t.Helper()
	settled, err := chromedp.Run(e.ctx, chromedp.Evaluate[bool]("window.result !== null"))
	if err != nil {
		e.t.Fatal(err)
	}
	return !settled
}

// waitForWindow waits for a page target whose URL starts with prefix.
func (e *browserEnv) waitForWindow(prefix string) target.ID {
	e.t.Helper()
	var id target.ID
	eventually(e.t, 30*time.Second, "a window at "+prefix, func() bool {
		infos, err := chromedp.Targets(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, info := range infos {
			if info.Type == "page" && strings.HasPrefix(info.URL, prefix) {
				id = info.TargetID
				return true
			}
		}
		return false
	})
	return id
}

// pages counts the open page targets (tabs and popups).
func (e *browserEnv) pages() int {
	e.t.Helper()
	infos, err := chromedp.Targets(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, info := range infos {
		if info.Type == "page" {
			n++
		}
	}
	return n
}

// closeWindow closes a window the way its user would.
func (e *browserEnv) closeWindow(id target.ID) {
	e.t.Helper()
	if _, err := chromedp.CallBrowser(e.ctx, target.CloseTarget, target.CloseTargetParams{TargetID: id}); err != nil {
		e.t.Fatalf("closing window: %v", err)
	}
}

// waitForMessages waits until the partner page has received n messages
// from origin.
func (e *browserEnv) waitForMessages(origin string, n int) {
	e.t.Helper()
	expr := fmt.Sprintf("window.seen.filter(function (m) { return m.origin === %q; }).length >= %d", origin, n)
	if _, err := chromedp.Run(e.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		e.t.Fatalf("waiting for %d messages from %s: %v", n, origin, err)
	}
}

// storedConnections lists alice's connections, asked of the gateway
// directly.
func (e *browserEnv) storedConnections() []storedConnection {
	e.t.Helper()
	status, _, raw := newHTTPBrowser(e.g, "org_1", "alice").call(http.MethodGet, "connections", nil)
	var list struct{ Data []storedConnection }
	if err := json.Unmarshal(raw, &list); status != http.StatusOK || err != nil {
		e.t.Fatalf("GET connections: %d %s", status, raw)
	}
	return list.Data
}

func TestBrowserPopupFlowStoresTheConnection(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Title: "Slack alice@acme"})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	res := e.result()
	conns := e.g.fake.Connections("org_1", "alice", slackUUID)
	if !res.OK || len(conns) != 1 || res.Connection.ConnectionID != conns[0].ID || res.Connection.App != slackApp ||
		res.Connection.Title != "Slack alice@acme" {
		t.Fatalf("connect() = %+v; connections at Zapier: %+v", res, conns)
	}
	if stored := e.storedConnections(); len(stored) != 1 || stored[0] != *res.Connection {
		t.Errorf("stored = %+v, want %+v", stored, *res.Connection)
	}
	// connect.js closed the popup itself.
	eventually(t, 10*time.Second, "the popup to close", func() bool { return e.pages() == 1 })

	// Connecting again reuses the stored connection: the popup opens and
	// closes, no connect token is minted, nothing new at Zapier.
	exchanges := e.g.fake.Stats().ConnectExchanges
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	again := e.result()
	if !again.OK || again.Connection.ConnectionID != res.Connection.ConnectionID ||
		e.g.fake.Stats().ConnectExchanges != exchanges || len(e.g.fake.Connections("org_1", "alice", slackUUID)) != 1 {
		t.Errorf("second connect() = %+v", again)
	}
}

func TestBrowserAuthenticationErrorReachesThePage(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectDeny, Description: "OAuth Failed: user denied access"})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	res := e.result()
	if res.OK || res.Reason != "authentication_error" || res.ZapierError != "OAuth Failed: user denied access" {
		t.Errorf("connect() = %+v, want authentication_error with Zapier's error", res)
	}
	if stored := e.storedConnections(); len(stored) != 0 {
		t.Errorf("stored = %+v", stored)
	}
	eventually(t, 10*time.Second, "the popup to close", func() bool { return e.pages() == 1 })
}

func TestBrowserClosedPopupRejects(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectHold})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	popup := e.waitForWindow(e.g.fakeURL + "/to/" + slackApp)
	if !e.pending() {
		t.Fatalf("connect() settled before the user did anything: %+v", e.result())
	}
	e.closeWindow(popup)
	if res := e.result(); res.OK || res.Reason != "popup_closed" {
		t.Errorf("connect() = %+v, want popup_closed", res)
	}
}

func TestBrowserIgnoresMessagesFromAnotherWindow(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	// The popup waits; a second Connect window, opened by the page itself,
	// approves: its authenticationSuccess comes from the Connect origin,
	// with a valid connection id of this very user, but not from the popup.
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectHold})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	popup := e.waitForWindow(e.g.fakeURL + "/to/" + slackApp)
	e.do(chromedp.Click(chromedp.CSS("#rogue")))
	e.waitForMessages(e.g.fakeURL, 1)
	if n := len(e.g.fake.Connections("org_1", "alice", slackUUID)); n != 1 {
		t.Fatalf("the other window made %d connections, want 1", n)
	}
	if !e.pending() {
		t.Fatalf("connect() took another window's message: %+v", e.result())
	}
	e.closeWindow(popup)
	if res := e.result(); res.OK || res.Reason != "popup_closed" {
		t.Errorf("connect() = %+v, want popup_closed", res)
	}
	if stored := e.storedConnections(); len(stored) != 0 {
		t.Errorf("stored = %+v", stored)
	}
}

func TestBrowserIgnoresMessagesFromAnotherOrigin(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	third := thirdPartySite(t)
	// The popup goes on to a page of another origin (as during an app's
	// OAuth step), which posts success with a valid connection id of this
	// user, from the popup itself.
	id := e.g.fake.AddConnection("org_1", "alice", slackUUID, "Slack")
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectThirdParty, URL: third.URL + "/oauth?authId=" + id})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	e.waitForMessages(third.URL, 2)
	if !e.pending() {
		t.Fatalf("connect() took a message from %s: %+v", third.URL, e.result())
	}
	e.closeWindow(e.waitForWindow(third.URL))
	if res := e.result(); res.OK || res.Reason != "popup_closed" {
		t.Errorf("connect() = %+v, want popup_closed", res)
	}
	if stored := e.storedConnections(); len(stored) != 0 {
		t.Errorf("stored = %+v", stored)
	}
}

func TestBrowserPopupTimesOutWithTheConnectToken(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{ConnectTokenTTL: 2 * time.Second})
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectHold})
	e.do(chromedp.Click(chromedp.CSS("#connect")))
	if res := e.result(); res.OK || res.Reason != "timeout" {
		t.Errorf("connect() = %+v, want timeout", res)
	}
	eventually(t, 10*time.Second, "the popup to close", func() bool { return e.pages() == 1 })
}

func TestBrowserBlockedPopupRejects(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	// Called without a click, the popup is blocked.
	if _, err := chromedp.Run(e.ctx, chromedp.Evaluate[bool](`report(ZapierConnect.connect({app: app})), true`)); err != nil {
		t.Fatal(err)
	}
	if res := e.result(); res.OK || res.Reason != "popup_blocked" {
		t.Errorf("connect() = %+v, want popup_blocked", res)
	}
	if n := e.g.fake.Stats().ConnectExchanges; n != 0 {
		t.Errorf("a blocked popup minted %d connect tokens", n)
	}
}

func TestBrowserRedirectFlowReturnsToReturnTo(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	e.do(chromedp.Click(chromedp.CSS("#redirect")))
	e.do(chromedp.WaitReady(chromedp.CSS("#outcome")))
	loc, err := chromedp.Run(e.ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	out, err := chromedp.Run(e.ctx, chromedp.Evaluate[map[string]string]("window.outcome"))
	if err != nil {
		t.Fatal(err)
	}
	conns := e.g.fake.Connections("org_1", "alice", slackUUID)
	if len(conns) != 1 || !strings.HasPrefix(loc, e.partner.origin+"/done?from=partner&") || out["status"] != "success" ||
		out["app"] != slackApp || out["connectionId"] != conns[0].ID {
		t.Fatalf("back at %s with %v; connections at Zapier: %+v", loc, out, conns)
	}
	if stored := e.storedConnections(); len(stored) != 1 || stored[0].ConnectionID != conns[0].ID {
		t.Errorf("stored = %+v", stored)
	}

	// A denial comes back too, as an error.
	e.do(chromedp.Navigate(e.partner.origin+"/"), chromedp.WaitReady(chromedp.CSS("#redirect")))
	e.g.fake.SetConnectionExpired(conns[0].ID, true)
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectDeny})
	e.do(chromedp.Click(chromedp.CSS("#redirect")), chromedp.WaitReady(chromedp.CSS("#outcome")))
	out, err = chromedp.Run(e.ctx, chromedp.Evaluate[map[string]string]("window.outcome"))
	if err != nil || out["status"] != "error" || out["error"] != "access_denied" || !strings.HasPrefix(out["errorDescription"], "OAuth Failed") {
		t.Errorf("denied: %v %v", out, err)
	}
}

// TestBrowserTwoRedirectFlowsInOneBrowser runs two redirect flows for two
// apps in two tabs of one browser, finished in the other order than they
// started, with Zapier's documented success redirect (no state): each
// tab comes back to its own return_to with its own connection.
func TestBrowserTwoRedirectFlowsInOneBrowser(t *testing.T) {
	e := newBrowserEnv(t, fakezapier.Config{})
	start := func(app, tab string) string {
		return e.partner.origin + ingressPrefix + "start?" + url.Values{"app": {app}, "return_to": {"/done?tab=" + tab}}.Encode()
	}
	outcome := func(ctx context.Context) (string, map[string]string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("#outcome"))); err != nil {
			t.Fatal(err)
		}
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		out, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string]("window.outcome"))
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(loc)
		return u.Query().Get("tab"), out
	}

	// Tab 1: Slack. The user has not finished at Zapier yet.
	e.g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectHold})
	e.do(chromedp.Navigate(start(slackApp, "slack")))
	connectLoc, err := chromedp.Run(e.ctx, chromedp.Location())
	if err != nil || !strings.HasPrefix(connectLoc, e.g.fakeURL+"/to/"+slackApp+"?") {
		t.Fatalf("tab 1 at %q (%v), want the Connect UI", connectLoc, err)
	}
	connectURL, _ := url.Parse(connectLoc)
	callback := connectURL.Query().Get("redirect_uri")

	// Tab 2: the other app, finished at once.
	tab2, cancel := chromedp.NewContext(e.ctx)
	defer cancel()
	if err := chromedp.Do(tab2, chromedp.Navigate(start(unmappedUUID, "other"))); err != nil {
		t.Fatal(err)
	}
	other := e.g.fake.Connections("org_1", "alice", unmappedUUID)
	if tab, out := outcome(tab2); len(other) != 1 || tab != "other" || out["status"] != "success" || out["app"] != unmappedUUID || out["connectionId"] != other[0].ID {
		t.Fatalf("tab 2 back at tab=%s with %v; connections at Zapier %+v", tab, out, other)
	}

	// Tab 1 finishes: Zapier sends it to the callback as documented.
	slackID := e.g.fake.AddConnection("org_1", "alice", slackUUID, "Slack alice@acme")
	e.do(chromedp.Navigate(callback + "?" + url.Values{"authentication_id": {slackID}, "service": {slackApp}}.Encode()))
	if tab, out := outcome(e.ctx); tab != "slack" || out["status"] != "success" || out["app"] != slackApp || out["connectionId"] != slackID {
		t.Fatalf("tab 1 back at tab=%s with %v", tab, out)
	}
	stored := e.storedConnections()
	if len(stored) != 2 {
		t.Fatalf("stored = %+v", stored)
	}
	for _, c := range stored {
		if want := map[string]string{slackUUID: slackID, unmappedUUID: other[0].ID}[c.AppUUID]; c.ConnectionID != want {
			t.Errorf("stored %+v, want connection %s", c, want)
		}
	}
}
