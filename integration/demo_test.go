package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/zapgate/caddy-zapier/demo/partner"
	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The demo partner app (demo/) as `make -f xcaddy.mk demo` serves it: its
// own Caddyfile (the partner's ingress), its page and its login backend, in
// front of the harness's gateway and fake Zapier.

// demoPort is the demo's ingress and demoEventsPort its events site
// (zapier_triggers); clear of other offsets' gateway ports (9080+100k).
var (
	demoPort       = 9070 + portOffset
	demoEventsPort = 9071 + portOffset
)

// The apps of demo/site/apps.json.
const (
	demoSlack  = "81f613aa-c98a-4383-a5fc-195e68647217"
	demoSheets = "5f3e2d1c-0b9a-4876-8543-21fedcba9876"
	// Their implementation ids, which MCP names them by.
	demoSlackMCP  = "SlackCLIAPI"
	demoSheetsMCP = "GoogleSheetsV2API"
)

// demoApp is the demo partner app in front of a gateway.
type demoApp struct {
	g      *gateway
	origin string // http://localhost:<demoPort>, as the person opens it
}

// startDemo loads demo/Caddyfile into the harness's Caddy, with the
// addresses its {$DEMO_*} placeholders read from the environment set to
// this test's, beside a gateway that has the routes Caddyfile.example has.
// The partner backend runs as `make demo` runs it: its agent speaks MCP to
// the gateway, its receiver takes the events site's deliveries, and its
// "fire" button asks the fake Zapier's demo hook.
func startDemo(t *testing.T) *demoApp {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	secret := fakezapier.NewWebhookSecret()
	t.Setenv("ZAPIER_EVENTS_SECRET", secret)
	p := partner.New(key)
	p.EnableAgents(gatewayURL)
	if err := p.EnableEvents(secret); err != nil {
		t.Fatal(err)
	}
	p.EnableUsage(adminAddr)
	backend := httptest.NewServer(p)
	t.Cleanup(backend.Close)

	site, err := filepath.Abs(filepath.Join("..", "demo", "site"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DEMO_PORT", fmt.Sprint(demoPort))
	t.Setenv("DEMO_GATEWAY", fmt.Sprintf("127.0.0.1:%d", gatewayPort))
	t.Setenv("DEMO_PARTNER", strings.TrimPrefix(backend.URL, "http://"))
	t.Setenv("DEMO_SITE", site)
	t.Setenv("DEMO_EVENTS_PORT", fmt.Sprint(demoEventsPort))

	raw, err := os.ReadFile(filepath.Join("..", "demo", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	// The harness supplies the gateway that `make demo` imports from
	// Caddyfile.example.
	const importLine = "import ../Caddyfile.example\n"
	if !strings.Contains(string(raw), importLine) {
		t.Fatalf("demo/Caddyfile no longer has %q", importLine)
	}
	ingress := strings.Replace(string(raw), importLine, "", 1)

	origin := fmt.Sprintf("http://localhost:%d", demoPort)
	mcpCallback := origin + "/zapier/mcp/callback"
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s\n\t\tquota {\n\t\t\ttasks 100/720h\n\t\t}", origin, origin),
		siteExtra: "handle_path /zapier/connect/* {\n\t\tzapier_connect\n\t}\n\thandle_path /zapier/actions/* {\n\t\tzapier_actions\n\t}\n" +
			"\thandle_path /zapier/mcp/* {\n\t\tzapier_mcp {\n\t\t\tcallback_url " + mcpCallback + "\n\t\t}\n\t}\n" +
			fmt.Sprintf("\thandle /zapier/openapi.* {\n\t\tzapier_openapi {\n\t\t\tserver_url http://localhost:%d\n\t\t}\n\t}", gatewayPort),
		extraSites: ingress,
	})
	// Nothing is registered with the fake Connect UI, as in `make demo`:
	// it posts to the opener's origin and accepts any redirect_uri. MCP is
	// set up as the fakezapier command's -mcp-apps and -mcp-redirect-uris
	// do, and its -demo-hooks is served beside the fake.
	// The events site watches each inbox's events stream (no
	// notification_url); end them before the fake's server closes.
	t.Cleanup(g.fake.CloseInboxStreams)
	g.fake.RegisterMCPApp(demoSlackMCP, "Slack")
	g.fake.RegisterMCPApp(demoSheetsMCP, "Google Sheets")
	g.fake.SetMCPRedirectURIs(mcpCallback)
	// As for the gateway's port: the previous config's ingress socket must
	// be gone before the browser connects.
	waitForSingleListener(t, demoPort)
	hooks := httptest.NewServer(g.fake.DemoHooks())
	t.Cleanup(hooks.Close)
	p.EnableFakeTrigger(hooks.URL)
	return &demoApp{g: g, origin: origin}
}

// demoBrowser is Chromium on the demo page.
type demoBrowser struct {
	t   *testing.T
	ctx context.Context
	n   int // screenshots taken
}

func (b *demoBrowser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// until waits for a JavaScript condition on the page, across navigations
// (the redirect flow leaves the page and comes back to it): while the tab
// is between documents, evaluating fails and is tried again.
func (b *demoBrowser) until(what, expr string) {
	b.t.Helper()
	eventually(b.t, 30*time.Second, what+" ("+expr+")", func() bool {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](expr))
		return err == nil && ok
	})
}

func (b *demoBrowser) eval(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// screenshot saves the whole page as NN-name.png in the test's artifact
// directory (kept with `go test -artifacts`) and returns the PNG.
func (b *demoBrowser) screenshot(name string) []byte {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.n++
	path := filepath.Join(b.t.ArtifactDir(), fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return png
}

// appCard is the CSS selector of an app's card on the page.
func appCard(app string) string { return `li.app[data-app="` + app + `"]` }

// connectionsShown counts the connections the page lists under an app.
func (b *demoBrowser) connectionsShown(app string) string {
	return fmt.Sprintf("document.querySelectorAll(%q).length", appCard(app)+" li.connection")
}

// A person's whole visit, clicked in Chromium: log in, connect Slack in a
// popup and Google Sheets by redirect, run a Slack action from the form its
// input fields make, see the result, disconnect Sheets.
func TestDemoPartnerPageEndToEnd(t *testing.T) {
	d := startDemo(t)
	fake := d.g.fake
	b := &demoBrowser{t: t, ctx: newChromium(t)}
	b.do(chromedp.EmulateViewport(1100, 800))

	// Log in: the partner's form, not the gateway's.
	b.do(chromedp.Navigate(d.origin+"/"), chromedp.WaitVisible(chromedp.CSS("#login-submit")))
	b.screenshot("login")
	b.do(chromedp.SetValue(chromedp.CSS("#login-tenant"), "org_acme"), chromedp.SetValue(chromedp.CSS("#login-user"), "alice"),
		chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS(appCard(demoSlack))))
	if who := b.eval(`document.getElementById("who-user").textContent + "/" + document.getElementById("who-tenant").textContent`); who != "alice/org_acme" {
		t.Fatalf("logged in as %q", who)
	}
	if cookie := b.eval(`document.cookie`); cookie != "" {
		t.Errorf("the page can read cookies %q: the session cookie must be HttpOnly", cookie)
	}

	// Connect Slack in a popup: connect.js opens it, Connect approves.
	fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Title: "alice@acme.example"})
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack) + " .connect-popup")))
	b.until("Slack's connection on the page", b.connectionsShown(demoSlack)+" === 1")
	slack := fake.Connections("org_acme", "alice", demoSlack)
	if len(slack) != 1 {
		t.Fatalf("connections at Zapier after the popup: %+v", slack)
	}
	if shown := b.eval(fmt.Sprintf(`document.querySelector(%q).dataset.connection + " " + document.querySelector(%q).textContent`,
		appCard(demoSlack)+" li.connection", appCard(demoSlack)+" li.connection .title")); shown != slack[0].ID+" alice@acme.example" {
		t.Errorf("the page shows %q, want connection %s titled alice@acme.example", shown, slack[0].ID)
	}

	// Connect Google Sheets by redirect: the page's link leaves for the
	// Connect UI, which redirects to the callback through the ingress, which
	// returns to the page with the outcome.
	fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Title: "alice's spreadsheets"})
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSheets) + " .connect-redirect")))
	b.until("Sheets' connection on the page", b.connectionsShown(demoSheets)+" === 1")
	sheets := fake.Connections("org_acme", "alice", demoSheets)
	if len(sheets) != 1 {
		t.Fatalf("connections at Zapier after the redirect: %+v", sheets)
	}
	if notice := b.eval(`document.getElementById("notice").textContent`); !strings.Contains(notice, "by redirect (connection "+sheets[0].ID+")") {
		t.Errorf("notice after the redirect: %q", notice)
	}
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != d.origin+"/" {
		t.Errorf("the page is at %q (%v), want the outcome gone from the address", loc, err)
	}
	b.screenshot("connected")

	// The tenant's tasks this month and its quota (issue #27), from the
	// gateway's admin API through the partner backend.
	b.until("the tenant's usage", `document.getElementById("usage-tasks").textContent !== ""`)
	if quota := b.eval(`document.getElementById("usage-quota").textContent`); quota != "100 per 720h" {
		t.Errorf("the page shows the quota %q", quota)
	}
	tasksBefore, err := strconv.Atoi(b.eval(`document.getElementById("usage-tasks").textContent`))
	if err != nil {
		t.Fatal(err)
	}

	// Run Slack's send_message from the form of its input fields.
	runs := fake.ActionStats().RunsCreated
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack)+" .show-actions")),
		chromedp.Click(chromedp.CSS(`#action-list button[data-action="send_message"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#fields input[name="text"]`)))
	if fields := b.eval(`Array.from(document.querySelectorAll("#fields input")).map(i => i.name + (i.required ? "*" : "")).join(",")`); fields != "channel*,text*" {
		t.Errorf("input fields on the form: %q, want the fake's channel and text, both required", fields)
	}
	b.do(chromedp.SendKeys(chromedp.CSS(`#fields input[name="channel"]`), "#general"),
		chromedp.SendKeys(chromedp.CSS(`#fields input[name="text"]`), "Hello from the demo"),
		chromedp.Click(chromedp.CSS("#run-submit")))
	b.until("the run's result", `document.getElementById("run-status").textContent === "success"`)
	var run struct {
		ID      string `json:"id"`
		Results []struct {
			Action string            `json:"action"`
			Inputs map[string]string `json:"inputs"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(b.eval(`document.getElementById("run-output").textContent`)), &run); err != nil {
		t.Fatal(err)
	}
	if len(run.Results) != 1 || run.Results[0].Action != "send_message" ||
		run.Results[0].Inputs["channel"] != "#general" || run.Results[0].Inputs["text"] != "Hello from the demo" {
		t.Errorf("the page shows the run %+v", run)
	}
	if n := fake.ActionStats().RunsCreated - runs; n != 1 {
		t.Errorf("one click made %d runs", n)
	}
	// The run is one more task this month on the page.
	b.until("the run counted on the page", fmt.Sprintf(`document.getElementById("usage-tasks").textContent === "%d"`, tasksBefore+1))
	png := b.screenshot("run")
	if os.Getenv("DEMO_UPDATE_SCREENSHOT") != "" { // refreshes the README's picture
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "demo.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Disconnect Sheets: gone from the page and from the gateway; Slack stays.
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSheets) + " .disconnect")))
	b.until("Sheets' connection gone from the page", b.connectionsShown(demoSheets)+" === 0")
	if n := b.eval(b.connectionsShown(demoSlack) + ".toString()"); n != "1" {
		t.Errorf("Slack shows %s connections after disconnecting Sheets", n)
	}
	status, _, raw := newHTTPBrowser(d.g, "org_acme", "alice").call(http.MethodGet, "connections", nil)
	var stored struct{ Data []storedConnection }
	if err := json.Unmarshal(raw, &stored); status != http.StatusOK || err != nil ||
		len(stored.Data) != 1 || stored.Data[0].ConnectionID != slack[0].ID {
		t.Errorf("the gateway stores %d %s, want only Slack's %s", status, raw, slack[0].ID)
	}
	b.screenshot("disconnected")
}

// The AI agents and trigger events parts of the page, clicked in Chromium:
// authorize Slack for AI agents by redirect and see the tools the
// partner's agent gets from the gateway's aggregate MCP endpoint, call one;
// subscribe to Slack's new_message, have the fake Zapier fire it, and see
// the partner backend's receiver show the delivery.
func TestDemoPartnerPageAgentsAndEvents(t *testing.T) {
	d := startDemo(t)
	fake := d.g.fake
	b := &demoBrowser{t: t, ctx: newChromium(t)}
	b.do(chromedp.EmulateViewport(1100, 900))
	b.do(chromedp.Navigate(d.origin+"/"), chromedp.WaitVisible(chromedp.CSS("#login-submit")),
		chromedp.SetValue(chromedp.CSS("#login-tenant"), "org_acme"), chromedp.SetValue(chromedp.CSS("#login-user"), "alice"),
		chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS(appCard(demoSlack)+" .mcp-authorize")))
	b.until("no tools before authorizing", `document.querySelectorAll("#mcp-tools li.empty").length === 1`)

	// Authorize Slack for AI agents: a link to the gateway's authorize,
	// Zapier's step (the fake approves), the callback through the ingress,
	// back on the page.
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack) + " .mcp-authorize")))
	b.until("Slack among the authorized apps", `document.querySelectorAll('#mcp-apps li.mcp-app[data-app="`+demoSlackMCP+`"]').length === 1`)
	if st := fake.MCPStats(); st.Authorizations != 1 || st.CodeExchanges != 1 {
		t.Errorf("MCP at Zapier after one authorization: %+v", st)
	}
	if notice := b.eval(`document.getElementById("notice").textContent`); notice != "Authorized Slack for AI agents." {
		t.Errorf("notice after authorizing: %q", notice)
	}
	if loc, err := chromedp.Run(b.ctx, chromedp.Location()); err != nil || loc != d.origin+"/" {
		t.Errorf("the page is at %q (%v), want the outcome gone from the address", loc, err)
	}
	// The agent's tools: Slack's, through the aggregate endpoint, nothing of Sheets.
	b.until("Slack's tools listed", `document.querySelectorAll("#mcp-tools li.tool").length > 0`)
	tools := b.eval(`Array.from(document.querySelectorAll("#mcp-tools li.tool")).map(li => li.dataset.tool).sort().join(",")`)
	if tools != "SlackCLIAPI__echo,SlackCLIAPI__fail,SlackCLIAPI__stream,SlackCLIAPI__whoami" {
		t.Errorf("tools on the page: %q, want the fake's four Slack tools", tools)
	}
	// Call whoami: the agent calls it as the session's user.
	calls := fake.MCPStats().ToolCalls
	b.do(chromedp.Click(chromedp.CSS(`#mcp-tools button[data-tool="SlackCLIAPI__whoami"]`)),
		chromedp.WaitVisible(chromedp.CSS("#mcp-call")), chromedp.Click(chromedp.CSS("#mcp-call")))
	b.until("whoami's result", `document.getElementById("mcp-result").textContent !== ""`)
	if got := b.eval(`document.getElementById("mcp-result").textContent`); got != "org_acme/alice "+demoSlackMCP {
		t.Errorf("whoami on the page: %q", got)
	}
	if n := fake.MCPStats().ToolCalls - calls; n != 1 {
		t.Errorf("one click made %d tool calls at Zapier", n)
	}
	// echo takes arguments: its form is built from the tool's input
	// schema (text, a required string), and the call sends what was typed.
	b.do(chromedp.Click(chromedp.CSS(`#mcp-tools button[data-tool="SlackCLIAPI__echo"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#mcp-fields input[name="text"]`)))
	if fields := b.eval(`Array.from(document.querySelectorAll("#mcp-fields input")).map(i => i.name + ":" + i.type + (i.required ? "*" : "")).join(",")`); fields != "text:text*" {
		t.Errorf("echo's form: %q, want its one required text field", fields)
	}
	if stale := b.eval(`document.getElementById("mcp-result").hidden ? "" : document.getElementById("mcp-result").textContent`); stale != "" {
		t.Errorf("whoami's result is still shown on echo's form: %q", stale)
	}
	b.do(chromedp.SendKeys(chromedp.CSS(`#mcp-fields input[name="text"]`), "hello agents"), chromedp.Click(chromedp.CSS("#mcp-call")))
	b.until("echo's result", `document.getElementById("mcp-result").textContent === "hello agents"`)
	b.screenshot("agents")

	// A trigger needs a connection to the app: connect Slack (popup).
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack) + " .connect-popup")))
	b.until("Slack's connection on the page", b.connectionsShown(demoSlack)+" === 1")

	// Subscribe to Slack's new_message.
	b.do(chromedp.SetValue(chromedp.CSS("#sub-app"), demoSlack),
		chromedp.SetValue(chromedp.CSS("#sub-trigger"), "new_message"), chromedp.SetValue(chromedp.CSS("#sub-name"), "slack-new"),
		chromedp.Click(chromedp.CSS("#sub-submit")))
	b.until("the subscription listed", `document.querySelectorAll('#subscriptions li.subscription[data-name="slack-new"] .status').length === 1`)
	inboxes := fake.Inboxes()
	if len(inboxes) != 1 || inboxes[0].Tenant != "org_acme" || inboxes[0].User != "alice" ||
		inboxes[0].Subscription.AppKey != demoSlack || inboxes[0].Subscription.ActionKey != "new_message" || inboxes[0].Status != "active" {
		t.Fatalf("inboxes at Zapier after subscribing: %+v", inboxes)
	}

	// The fake fires it; the gateway delivers it, signed, to the partner
	// backend, whose list the page shows.
	b.do(chromedp.Click(chromedp.CSS("#fire-trigger")))
	b.until("the delivery on the page", `document.querySelectorAll('#deliveries li.delivery[data-type="trigger.event"]').length === 1`)
	msgs := fake.InboxMessages(inboxes[0].ID)
	if len(msgs) != 1 {
		t.Fatalf("messages at Zapier: %+v", msgs)
	}
	if id := b.eval(`document.querySelector('#deliveries li.delivery[data-type="trigger.event"]').dataset.id`); id != msgs[0].ID {
		t.Errorf("the page shows delivery %q, want Zapier's message %s", id, msgs[0].ID)
	}
	var payload map[string]any
	if err := json.Unmarshal([]byte(b.eval(`document.querySelector('#deliveries li.delivery[data-type="trigger.event"] pre').textContent`)), &payload); err != nil ||
		payload["text"] != "Hello from the fake Zapier" {
		t.Errorf("the delivery's payload on the page: %v %v", payload, err)
	}
	eventually(t, 30*time.Second, "the message acknowledged at Zapier", func() bool {
		m := fake.InboxMessages(inboxes[0].ID)
		return len(m) == 1 && m[0].Status == "acked" && m[0].Acks == 1
	})
	b.until("the subscription's count", `document.querySelector('#subscriptions li.subscription[data-name="slack-new"] .meta').textContent === "1 delivered"`)
	// Connecting Slack was delivered too (connection.created), as alice's.
	if n := b.eval(`document.querySelectorAll('#deliveries li.delivery[data-type="connection.created"]').length.toString()`); n != "1" {
		t.Errorf("%s connection.created deliveries on the page, want 1", n)
	}
	if html := b.eval(`document.documentElement.outerHTML + document.cookie`); strings.Contains(html, "fzmat_") || strings.Contains(html, "fzmrt_") || strings.Contains(html, "whsec_") {
		t.Errorf("a token or secret reached the page")
	}
	png := b.screenshot("events")
	if os.Getenv("DEMO_UPDATE_SCREENSHOT") != "" { // refreshes docs/demo.md's picture
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "demo-agents-events.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Forget Slack for AI agents: gone from the page and from the gateway.
	b.do(chromedp.Click(chromedp.CSS(`#mcp-apps li.mcp-app[data-app="` + demoSlackMCP + `"] .mcp-forget`)))
	b.until("no authorized app on the page", `document.querySelectorAll("#mcp-apps li.mcp-app").length === 0 && document.querySelectorAll("#mcp-tools li.tool").length === 0`)
	// The last call's form and result went with the app.
	if left := b.eval(`(document.getElementById("mcp-call-form").hidden ? "" : "form ") + (document.getElementById("mcp-result").hidden ? "" : "result ") + document.getElementById("mcp-result").textContent`); left != "" {
		t.Errorf("after Forget the page still shows the last tool call: %q", left)
	}
	status, _, raw := d.g.do(request{method: http.MethodGet, path: "/zapier/mcp/apps", tenant: "org_acme", user: "alice"})
	if status != http.StatusOK || strings.TrimSpace(string(raw)) != `{"data":[]}` {
		t.Errorf("the gateway's MCP apps after Forget: %d %s", status, raw)
	}
}

// The ingress takes the identity from the session only: without one the
// gateway is never called, and headers the browser sends are dropped.
func TestDemoIngressTakesTheIdentityFromTheSession(t *testing.T) {
	d := startDemo(t)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, forged bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, d.origin+path, nil)
		if forged {
			req.Header.Set("X-Zapier-Tenant", "org_globex")
			req.Header.Set("x-zapier-user", "mallory")
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Status
	}
	actions := "/zapier/actions/actions?app=" + demoSlack

	before := d.g.fake.Stats()
	if status, s := get(actions, true); status != http.StatusUnauthorized {
		t.Fatalf("forged identity, no session: %s, want 401", s)
	}
	if after := d.g.fake.Stats(); after.Exchanges != before.Exchanges || after.APIRequests != before.APIRequests {
		t.Errorf("a request without a session reached Zapier: %+v → %+v", before, after)
	}

	resp, err := browser.PostForm(d.origin+"/partner/login", url.Values{"tenant": {"org_acme"}, "user": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	if status, s := get(actions, true); status != http.StatusOK {
		t.Fatalf("logged in with forged headers: %s", s)
	}
	reqs := d.g.fake.Requests()
	if last := reqs[len(reqs)-1]; !strings.HasPrefix(last.Path, "/v2/actions") || last.Tenant != "org_acme" || last.User != "alice" {
		t.Errorf("Zapier was called as %s/%s (%s), want the session's org_acme/alice", last.Tenant, last.User, last.Path)
	}
	// The partner backend's identity route is not reachable from the browser.
	if status, s := get("/identity", false); status != http.StatusNotFound {
		t.Errorf("GET /identity through the ingress: %s, want 404", s)
	}
}

// `make -f xcaddy.mk demo` runs the built Caddy on demo/Caddyfile as it is,
// its import of Caddyfile.example included (which the tests above replace
// with the harness's gateway): it must adapt to the ingress on DEMO_PORT,
// deleting the browser's identity headers before anything else, beside the
// gateway on ZAPIER_GATEWAY_PORT.
func TestDemoCaddyfileImportsTheGateway(t *testing.T) {
	out, err := runCaddy(t, []string{"ZAPIER_CLIENT_ID=demo-client", "ZAPIER_CLIENT_SECRET=demo-secret",
		"ZAPIER_GATEWAY_PORT=8081", "DEMO_PORT=8080"}, "adapt", "--config", filepath.Join("..", "demo", "Caddyfile"))
	if err != nil {
		t.Fatalf("caddy adapt demo/Caddyfile: %v\n%s", err, out)
	}
	var cfg struct {
		Apps struct {
			Zapier json.RawMessage `json:"zapier"`
			HTTP   struct {
				Servers map[string]struct {
					Listen []string          `json:"listen"`
					Routes []json.RawMessage `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	// adapt prints warnings before the JSON.
	if err := json.Unmarshal([]byte(out[strings.Index(out, "\n{")+1:]), &cfg); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}
	listens := map[string][]json.RawMessage{}
	for _, srv := range cfg.Apps.HTTP.Servers {
		listens[strings.Join(srv.Listen, ",")] = srv.Routes
	}
	ingress, ok := listens[":8080"]
	_, gw := listens[":8081"]
	_, events := listens["127.0.0.1:8083"]
	if !ok || !gw || !events || len(cfg.Apps.Zapier) == 0 || len(listens) != 3 {
		t.Fatalf("servers %v, zapier app %s: want the ingress on :8080, the gateway on :8081 and the events site on 127.0.0.1:8083", listens, cfg.Apps.Zapier)
	}
	if first := string(ingress[0]); !strings.Contains(first, `"delete":["X-Zapier-*"]`) || strings.Contains(first, `"match"`) {
		t.Errorf("the ingress's first route is %s, want the X-Zapier-* headers deleted from every request", first)
	}
}

// On a phone (390 px wide) the page fits: after logging in as a tenant and
// user of the person's choosing, connecting Slack, opening an action of an
// app without a connection and an AI tool's form, no element is wider than
// the screen. Error messages on the page
// are meant for the person; the gateway's detail is in the call log.
func TestDemoPartnerPageOnAPhone(t *testing.T) {
	d := startDemo(t)
	b := &demoBrowser{t: t, ctx: newChromium(t)}
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	// Any tenant and user, not only the form's suggestions.
	b.do(chromedp.Navigate(d.origin+"/"), chromedp.WaitVisible(chromedp.CSS("#login-submit")),
		chromedp.SetValue(chromedp.CSS("#login-tenant"), "initech"), chromedp.SetValue(chromedp.CSS("#login-user"), "carol_9"),
		chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS(appCard(demoSlack))))
	if who := b.eval(`document.getElementById("who-user").textContent + "/" + document.getElementById("who-tenant").textContent`); who != "carol_9/initech" {
		t.Fatalf("logged in as %q", who)
	}

	// Connect Slack: the fake titles the account like a real one.
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack) + " .connect-popup")))
	b.until("Slack's connection on the page", b.connectionsShown(demoSlack)+" === 1")
	if title := b.eval(fmt.Sprintf(`document.querySelector(%q).textContent`, appCard(demoSlack)+" li.connection .title")); title != fakezapier.AccountTitle("initech", "carol_9") {
		t.Errorf("the connection's title on the page: %q, want %q", title, fakezapier.AccountTitle("initech", "carol_9"))
	}

	// Open a Google Sheets action without a connection: the page says what
	// to do; the gateway's message for developers is in the call log only.
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSheets)+" .show-actions")),
		chromedp.WaitVisible(chromedp.CSS(`#action-list button.use-action`)),
		chromedp.Click(chromedp.CSS(`#action-list button.use-action`)))
	b.until("the error notice", `document.getElementById("notice").className === "error"`)
	if notice := b.eval(`document.getElementById("notice").textContent`); notice != "Connect an account for this app first." {
		t.Errorf("the notice says %q, want the person's message without the gateway's detail", notice)
	}
	if log := b.eval(`document.getElementById("call-log").textContent`); !strings.Contains(log, "connection_missing: ") {
		t.Errorf("the call log lacks the gateway's error: %q", log)
	}

	// An AI tool's form.
	b.do(chromedp.Click(chromedp.CSS(appCard(demoSlack) + " .mcp-authorize")))
	b.until("echo listed", `document.querySelectorAll('#mcp-tools button[data-tool="SlackCLIAPI__echo"]').length === 1`)
	b.do(chromedp.Click(chromedp.CSS(`#mcp-tools button[data-tool="SlackCLIAPI__echo"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#mcp-fields input[name="text"]`)))
	b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("calls").open = true`))
	b.screenshot("phone")

	// Nothing wider than the screen: no horizontal scrolling, no element
	// reaching past either edge.
	if wide := b.eval(`(() => {
		const w = document.documentElement.clientWidth, out = [];
		if (document.documentElement.scrollWidth > w) out.push("page scrolls to " + document.documentElement.scrollWidth);
		for (const e of document.querySelectorAll("body *")) {
			const r = e.getBoundingClientRect();
			if (r.width > 0 && (r.right > w + 0.5 || r.left < -0.5)) out.push(e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "") + " " + Math.round(r.left) + ".." + Math.round(r.right));
		}
		return out.length ? w + " px wide: " + out.slice(0, 10).join("; ") : "";
	})()`); wide != "" {
		t.Errorf("wider than the screen at %s", wide)
	}
}
