package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The app of the actions tests: Connect's implementation id and the UUID
// Zapier's API knows it by.
const (
	actApp     = "SlackCLIAPI"
	actAppUUID = "81f613aa-c98a-4383-a5fc-195e68647217"
)

// actSite mounts zapier_connect (for the redirect flow that stores the
// connection) and zapier_actions, polling fast so tests stay short.
var actSite = actionsSite("")

// actSiteV2 runs through /v2/action-runs only (run_via action_runs), for the
// tests of that path's contract.
var actSiteV2 = actionsSite("run_via action_runs")

// actionsSite mounts zapier_connect and zapier_actions, with extra lines in
// the zapier_actions block.
func actionsSite(actionsExtra string) string {
	return fmt.Sprintf(`
	handle_path /zapier/connect/* {
		zapier_connect {
			app %[1]s %[2]s
		}
	}
	handle_path /zapier/actions/* {
		zapier_actions {
			app %[1]s %[2]s
			poll_interval 50ms
			max_poll_interval 200ms
			%[3]s
		}
	}
`, actApp, actAppUUID, actionsExtra)
}

// startActionsGateway starts a gateway with Connect and Actions mounted and
// the fake's catalog for the app set to specs.
func startActionsGateway(t *testing.T, specs ...fakezapier.ActionSpec) *gateway {
	t.Helper()
	return startActionsGatewayOn(t, actSite, specs...)
}

// startActionsGatewayOn is startActionsGateway with the site given.
func startActionsGatewayOn(t *testing.T, site string, specs ...fakezapier.ActionSpec) *gateway {
	t.Helper()
	g := startGateway(t, gatewayOptions{
		// These tests poll runs far faster than a client should: the end-user
		// rate limit (its own tests are in ratelimit_test.go) is off.
		zapierExtra: fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s\n\t\trate_limit {\n\t\t\tidentity off\n\t\t\ttenant off\n\t\t}", gatewayURL, gatewayURL),
		siteExtra:   site,
	})
	g.fake.RegisterApp(actApp, actAppUUID)
	g.fake.SetActions(actAppUUID, specs...)
	return g
}

// actConnect runs the redirect flow for (tenant, user) as a browser would,
// with the identity headers a partner front end adds: start → Connect UI
// (the fake approves) → callback, which verifies and stores the connection.
// It returns the connection id.
func (g *gateway) actConnect(tenant, user string) string {
	g.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		g.t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: validating(nil),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ids := http.Header{"X-Zapier-Tenant": {tenant}, "X-Zapier-User": {user}}
	get := func(rawURL string, withIdentity bool) string {
		g.t.Helper()
		req, err := http.NewRequest(http.MethodGet, rawURL, nil)
		if err != nil {
			g.t.Fatal(err)
		}
		if withIdentity {
			req.Header = ids.Clone()
		}
		resp, err := browser.Do(req)
		if err != nil {
			g.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			g.t.Fatalf("GET %s: %d, want a redirect", req.URL.Path, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	toConnect := get(gatewayURL+"/zapier/connect/start?app="+actApp+"&return_to=/done", true)
	callback := get(toConnect, false)
	done, err := url.Parse(get(callback, true))
	if err != nil {
		g.t.Fatal(err)
	}
	q := done.Query()
	if done.Path != "/done" || q.Get("zapier_connect") != "success" || q.Get("zapier_connection_id") == "" {
		g.t.Fatalf("connect flow ended at %s", done)
	}
	return q.Get("zapier_connection_id")
}

type actRun struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Results json.RawMessage `json:"results"`
	Errors  json.RawMessage `json:"errors"`
}

// actDo calls a zapier_actions route as (org, user).
func (g *gateway) actDo(method, route, user, body string) (int, http.Header, []byte) {
	g.t.Helper()
	r := request{method: method, path: "/zapier/actions/" + route, tenant: "org", user: user, body: body}
	if body != "" {
		r.header = http.Header{"Content-Type": {"application/json"}}
	}
	return g.do(r)
}

func actDecodeRun(t *testing.T, body []byte) actRun {
	t.Helper()
	var v struct{ Run actRun }
	if err := json.Unmarshal(body, &v); err != nil || v.Run.ID == "" {
		t.Fatalf("not a run: %s (%v)", body, err)
	}
	return v.Run
}

func actErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var v struct{ Error struct{ Code string } }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("not an error body: %s", body)
	}
	return v.Error.Code
}

// runRequests returns the POST /v2/action-runs the fake received.
func actRunRequests(g *gateway) []fakezapier.RecordedRequest {
	var out []fakezapier.RecordedRequest
	for _, r := range g.fake.Requests() {
		if r.Method == http.MethodPost && strings.TrimSuffix(r.Path, "/") == "/v2/action-runs" {
			out = append(out, r)
		}
	}
	return out
}

// (run_via action_runs: the /v2/action-runs body; stored_actions_test.go
// has the stored path.)
func TestActionsRunFinishingWithinWaitReturnsResults(t *testing.T) {
	g := startActionsGatewayOn(t, actSiteV2,
		fakezapier.ActionSpec{Key: "send_message", Title: "Send Channel Message", Delay: 300 * time.Millisecond,
			Inputs: []map[string]any{fakezapier.InputField("channel", "Channel", true)}},
		fakezapier.ActionSpec{Key: "find_user", ActionType: "SEARCH", Title: "Find User"})
	conn := g.actConnect("org", "alice")

	status, _, body := g.actDo(http.MethodGet, "actions?app="+actApp, "alice", "")
	if status != http.StatusOK || string(body) != `{"data":[{"key":"send_message","title":"Send Channel Message","description":"","action_type":"WRITE","is_instant":false},`+
		`{"key":"find_user","title":"Find User","description":"","action_type":"SEARCH","is_instant":false}]}`+"\n" {
		t.Fatalf("GET actions: %d %s", status, body)
	}
	status, _, body = g.actDo(http.MethodPost, "inputs", "alice", `{"app":"`+actApp+`","action":"send_message"}`)
	if status != http.StatusOK || !strings.Contains(string(body), `"id":"channel"`) {
		t.Fatalf("POST inputs: %d %s", status, body)
	}

	before := scrapeMetric(t, "caddy_zapier_action_runs_total", `outcome="success"`)
	status, _, body = g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","inputs":{"channel":"#general"}}`)
	if status != http.StatusOK {
		t.Fatalf("POST run: %d %s", status, body)
	}
	run := actDecodeRun(t, body)
	if run.Status != "success" || string(run.Results) != `[{"action":"send_message","id":1,"inputs":{"channel":"#general"}}]` || string(run.Errors) != `[]` {
		t.Errorf("run %+v (results %s)", run, run.Results)
	}
	if got := scrapeMetric(t, "caddy_zapier_action_runs_total", `outcome="success"`) - before; got != 1 {
		t.Errorf("action_runs_total{outcome=success} grew by %v", got)
	}

	// Zapier got the body its API reference documents, with the stored
	// connection and an action id it had just issued.
	runs := g.fake.ActionRuns()
	sent := actRunRequests(g)
	if len(runs) != 1 || len(sent) != 1 {
		t.Fatalf("%d runs, %d requests", len(runs), len(sent))
	}
	want := fmt.Sprintf(`{"data":{"action":%q,"authentication":%q,"inputs":{"channel":"#general"}}}`, runs[0].ActionID, conn)
	if string(sent[0].Body) != want || runs[0].ID != run.ID || runs[0].Tenant != "org" || runs[0].User != "alice" {
		t.Errorf("sent %s, want %s (run %+v)", sent[0].Body, want, runs[0])
	}
}

func TestActionsRunOutlastingWaitIsPolledLater(t *testing.T) {
	g := startActionsGateway(t,
		fakezapier.ActionSpec{Key: "slow", Delay: 2 * time.Second, PendingStatus: "running", Results: []map[string]any{{"ok": true}}})
	g.actConnect("org", "alice")

	status, hdr, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"slow","wait":"300ms"}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST run: %d %s", status, body)
	}
	run := actDecodeRun(t, body)
	if run.Status != "running" || run.Results != nil || hdr.Get("Location") != "runs/"+run.ID {
		t.Errorf("202 body %s, Location %q", body, hdr.Get("Location"))
	}
	// Another user cannot read it, before or after it ends.
	if status, _, body := g.actDo(http.MethodGet, "runs/"+run.ID, "bob", ""); status != http.StatusNotFound || actErrorCode(t, body) != "run_not_found" {
		t.Errorf("bob reads alice's run: %d %s", status, body)
	}
	var done actRun
	eventually(t, 15*time.Second, "the run to finish", func() bool {
		status, _, body := g.actDo(http.MethodGet, "runs/"+run.ID, "alice", "")
		switch status {
		case http.StatusOK:
			done = actDecodeRun(t, body)
			return true
		case http.StatusAccepted:
			if r := actDecodeRun(t, body); r.Status != "running" {
				t.Errorf("pending status %q", r.Status)
			}
			return false
		}
		t.Fatalf("GET runs/%s: %d %s", run.ID, status, body)
		return false
	})
	if done.ID != run.ID || done.Status != "success" || string(done.Results) != `[{"ok":true}]` {
		t.Errorf("finished run %+v", done)
	}

	// Who owns the run is in storage: a new config (as after a restart)
	// still answers the owner, and only the owner.
	if err := g.reload(actSite + "\n\t# reloaded\n"); err != nil {
		t.Fatal(err)
	}
	waitForSingleListener(t, gatewayPort)
	if status, _, body := g.actDo(http.MethodGet, "runs/"+run.ID, "alice", ""); status != http.StatusOK {
		t.Errorf("after a reload: %d %s", status, body)
	}
	if status, _, _ := g.actDo(http.MethodGet, "runs/"+run.ID, "bob", ""); status != http.StatusNotFound {
		t.Errorf("bob after a reload: %d", status)
	}
}

func TestActionsRunErrorComesBackWithZapiersErrors(t *testing.T) {
	delay := 30
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "post", Delay: 100 * time.Millisecond,
		Errors: []fakezapier.RunError{{Code: "user", Title: "Channel not found", Detail: "#nope does not exist"},
			{Code: "throttled", Title: "Slow down", Detail: "Slack throttled the call", Delay: &delay}}})
	g.actConnect("org", "alice")
	before := scrapeMetric(t, "caddy_zapier_action_runs_total", `outcome="error"`)
	// The app named by its UUID works as well as by its implementation id.
	status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actAppUUID+`","action":"post","inputs":{"channel":"#nope"}}`)
	if status != http.StatusOK {
		t.Fatalf("POST run: %d %s", status, body)
	}
	run := actDecodeRun(t, body)
	want := `[{"code":"user","title":"Channel not found","detail":"#nope does not exist","delay":null,"meta":null},` +
		`{"code":"throttled","title":"Slow down","detail":"Slack throttled the call","delay":30,"meta":null}]`
	if run.Status != "error" || string(run.Errors) != want || string(run.Results) != `[]` {
		t.Errorf("run %s", body)
	}
	if got := scrapeMetric(t, "caddy_zapier_action_runs_total", `outcome="error"`) - before; got != 1 {
		t.Errorf("action_runs_total{outcome=error} grew by %v", got)
	}
}

func TestActionsRefusals(t *testing.T) {
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "send_message"})
	conn := g.actConnect("org", "alice")

	cases := []struct {
		name, user, body string
		status           int
		code             string
	}{
		{"unknown key", "alice", `{"app":"` + actApp + `","action":"no_such_action"}`, http.StatusNotFound, "action_not_found"},
		{"no stored connection", "bob", `{"app":"` + actApp + `","action":"send_message"}`, http.StatusConflict, "connection_missing"},
	}
	for _, tc := range cases {
		status, _, body := g.actDo(http.MethodPost, "run", tc.user, tc.body)
		if status != tc.status || actErrorCode(t, body) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	if status, _, body := g.actDo(http.MethodPost, "inputs", "bob", `{"app":"`+actApp+`","action":"send_message"}`); status != http.StatusConflict || actErrorCode(t, body) != "connection_missing" {
		t.Errorf("inputs without a connection: %d %s", status, body)
	}

	// Zapier reports the connection expired: connection_invalid, for a run
	// and for inputs.
	if !g.fake.SetConnectionExpired(conn, true) {
		t.Fatal("no such connection at the fake")
	}
	for _, route := range []string{"run", "inputs"} {
		status, _, body := g.actDo(http.MethodPost, route, "alice", `{"app":"`+actApp+`","action":"send_message"}`)
		if status != http.StatusBadRequest || actErrorCode(t, body) != "connection_invalid" {
			t.Errorf("%s with an expired connection: %d %s", route, status, body)
		}
	}
	if st := g.fake.ActionStats(); st.RunsCreated != 0 || st.RunsRefused != 1 {
		t.Errorf("fake stats %+v: want no run created, the expired connection's refused", st)
	}
	// Reconnecting re-authorizes it; the run then goes through.
	g.fake.SetConnectionExpired(conn, false)
	if status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","wait":"10s"}`); status != http.StatusOK {
		t.Errorf("after reconnecting: %d %s", status, body)
	}
}

func TestActionsNeverReuseAnActionID(t *testing.T) {
	g := startActionsGatewayOn(t, actSiteV2, fakezapier.ActionSpec{Key: "send_message", Delay: -1})
	g.actConnect("org", "alice")
	g.actConnect("org", "bob")
	for i := range 3 {
		for _, user := range []string{"alice", "bob"} {
			if status, _, body := g.actDo(http.MethodPost, "inputs", user, `{"app":"`+actApp+`","action":"send_message"}`); status != http.StatusOK {
				t.Fatalf("inputs %d as %s: %d %s", i, user, status, body)
			}
			if status, _, body := g.actDo(http.MethodPost, "run", user, fmt.Sprintf(`{"app":"%s","action":"send_message","inputs":{"n":%d}}`, actApp, i)); status != http.StatusOK {
				t.Fatalf("run %d as %s: %d %s", i, user, status, body)
			}
		}
	}
	runs := g.fake.ActionRuns()
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ActionID)
	}
	slices.Sort(ids)
	if len(runs) != 6 || len(slices.Compact(slices.Clone(ids))) != 6 {
		t.Errorf("action ids of the 6 runs: %q", ids)
	}
	// Each run's id came from a listing made for that run: every POST
	// /v2/action-runs directly follows its own GET /v2/actions.
	var last string
	for _, r := range g.fake.Requests() {
		switch {
		case r.Path == "/v2/actions" && r.Method == http.MethodGet:
			last = r.User
		case strings.TrimSuffix(r.Path, "/") == "/v2/action-runs" && r.Method == http.MethodPost:
			if last != r.User {
				t.Errorf("a run for %s was not preceded by a fresh lookup for them", r.User)
			}
			last = ""
		}
	}
	if st := g.fake.ActionStats(); st.ReusedActionIDs != 0 || st.RunsRefused != 0 {
		t.Errorf("fake stats %+v", st)
	}
}

func TestActionsRateLimitBurstCoolsDown(t *testing.T) {
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "send_message", Delay: time.Minute})
	g.actConnect("org", "alice")
	// The token is cached; from now on only /v2 calls count. Limits far
	// below the gateway's budget stand for another client of the partner
	// spending it: the 429s are this test's point.
	g.throttleOK = true
	g.fake.SetRateLimits(fakezapier.RateLimits{PerIP: 3, Window: time.Minute, Cooldown: 30 * time.Second})

	// list + create: 2 of the 3 requests.
	status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","wait":0}`)
	if status != http.StatusAccepted {
		t.Fatalf("POST run: %d %s", status, body)
	}
	runID := actDecodeRun(t, body).ID
	// A burst of listings: the 3rd request passes, the 4th is refused.
	var got503 http.Header
	for i := 0; i < 5 && got503 == nil; i++ {
		status, hdr, body := g.actDo(http.MethodGet, "actions?app="+actApp, "alice", "")
		switch status {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			if actErrorCode(t, body) != "zapier_unavailable" {
				t.Fatalf("503 body %s", body)
			}
			got503 = hdr
		default:
			t.Fatalf("listing %d: %d %s", i, status, body)
		}
	}
	if got503 == nil || got503.Get("Retry-After") != "30" {
		t.Fatalf("no 503 with Zapier's Retry-After: 30 (got %v)", got503)
	}
	if st := g.fake.ActionStats(); st.Throttled != 1 {
		t.Errorf("the fake throttled %d requests, want 1", st.Throttled)
	}

	// During the cooldown the gateway does not call Zapier at all.
	calls := g.fake.Stats().APIRequests
	for _, c := range []struct{ method, route, body string }{
		{http.MethodGet, "actions?app=" + actApp, ""},
		{http.MethodPost, "run", `{"app":"` + actApp + `","action":"send_message"}`},
		{http.MethodPost, "inputs", `{"app":"` + actApp + `","action":"send_message"}`},
		{http.MethodGet, "runs/" + runID, ""},
	} {
		status, hdr, body := g.actDo(c.method, c.route, "alice", c.body)
		retry, _ := strconv.Atoi(hdr.Get("Retry-After"))
		if status != http.StatusServiceUnavailable || actErrorCode(t, body) != "zapier_unavailable" || retry < 1 || retry > 30 {
			t.Errorf("%s %s in the cooldown: %d, Retry-After %q, %s", c.method, c.route, status, hdr.Get("Retry-After"), body)
		}
	}
	if n := g.fake.Stats().APIRequests - calls; n != 0 {
		t.Errorf("%d calls reached Zapier during the cooldown", n)
	}
	if status, body := admin(t, http.MethodGet, "/zapier/status"); status != http.StatusOK ||
		!strings.Contains(string(body), `"api_breaker":"cooling_down"`) || !strings.Contains(string(body), `"breaker":"closed"`) {
		t.Errorf("/zapier/status: %d %s", status, body)
	}

	// The raw zapier_auth proxy honours the cooldown too, without calling
	// Zapier; token exchanges, which have limits of their own, go on.
	status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", tenant: "org", user: "bob"})
	retry, _ := strconv.Atoi(hdr.Get("Retry-After"))
	if status != http.StatusServiceUnavailable || retry < 1 || retry > 30 || actErrorCode(t, body) != "zapier_unavailable" {
		t.Errorf("raw proxy in the cooldown: %d %v %s", status, hdr, body)
	}
	if n := g.fake.Stats().APIRequests - calls; n != 0 {
		t.Errorf("%d calls reached Zapier during the cooldown", n)
	}
	if g.fake.ExchangesFor("org", "bob") != 1 {
		t.Error("the API cooldown blocked the token exchange")
	}
}
