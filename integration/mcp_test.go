package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// White Label MCP through zapier_mcp (issue 17), driven with the official
// Go SDK's client against the fake's per-app MCP servers (also the SDK).

const (
	mcpSlack  = "SlackCLIAPI"
	mcpSheets = "GoogleSheetsV2API"
)

var mcpCallbackURL = gatewayURL + "/zapier/mcp/callback"

func startMCPGateway(t *testing.T, extra string, grace ...string) *gateway {
	t.Helper()
	g := startGateway(t, gatewayOptions{
		gracePeriod: strings.Join(grace, ""),
		zapierExtra: "return_origins " + gatewayURL,
		siteExtra: fmt.Sprintf(`handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %s
			%s
		}
	}`, mcpCallbackURL, extra),
	})
	g.fake.RegisterMCPApp(mcpSlack, "Slack")
	g.fake.RegisterMCPApp(mcpSheets, "Google Sheets")
	g.fake.SetMCPRedirectURIs(mcpCallbackURL)
	return g
}

// mcpBrowser is a browser (cookie jar, no redirects followed) whose
// partner front end adds the identity headers on gateway requests.
type mcpBrowser struct {
	g            *gateway
	client       *http.Client
	tenant, user string
}

func (g *gateway) mcpBrowser(tenant, user string) *mcpBrowser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		g.t.Fatal(err)
	}
	return &mcpBrowser{g: g, tenant: tenant, user: user, client: &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: validating(nil),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get fetches rawURL and returns the status and Location.
func (b *mcpBrowser) get(rawURL string, as ...string) (int, string) {
	b.g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.g.t.Fatal(err)
	}
	if strings.HasPrefix(rawURL, gatewayURL) {
		tenant, user := b.tenant, b.user
		if len(as) == 2 {
			tenant, user = as[0], as[1]
		}
		req.Header.Set("X-Zapier-Tenant", tenant)
		req.Header.Set("X-Zapier-User", user)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.g.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

func (b *mcpBrowser) mustRedirect(rawURL string) string {
	b.g.t.Helper()
	status, loc := b.get(rawURL)
	if status != http.StatusFound {
		b.g.t.Fatalf("GET %s: %d, want 302", rawURL, status)
	}
	return loc
}

// startAuthorize returns the URL of the gateway's callback that Zapier's
// authorize step (the fake approves at once) redirected to.
func (b *mcpBrowser) startAuthorize(app string) (authorizeURL, callback string) {
	b.g.t.Helper()
	authorizeURL = b.mustRedirect(gatewayURL + "/zapier/mcp/authorize?app=" + app + "&return_to=/done")
	return authorizeURL, b.mustRedirect(authorizeURL)
}

// mcpAuthorize runs the whole flow for (tenant, user, app).
func (g *gateway) mcpAuthorize(tenant, user, app string) {
	g.t.Helper()
	b := g.mcpBrowser(tenant, user)
	_, callback := b.startAuthorize(app)
	done, err := url.Parse(b.mustRedirect(callback))
	if err != nil {
		g.t.Fatal(err)
	}
	if q := done.Query(); done.Path != "/done" || q.Get("zapier_mcp") != "success" || q.Get("zapier_app") != app {
		g.t.Fatalf("MCP authorize flow ended at %s", done)
	}
}

// identityTransport adds the identity headers, as the partner's agent
// backend does on its calls to the sidecar.
type identityTransport struct{ tenant, user string }

func (it identityTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Zapier-Tenant", it.tenant)
	r.Header.Set("X-Zapier-User", it.user)
	return validating(nil).RoundTrip(r)
}

// mcpSession connects the SDK's client to <mount>/<app> as (tenant, user).
// The SDK's client speaks its newest revision (2026-07-28) unless sopts
// names another.
func (g *gateway) mcpSession(ctx context.Context, tenant, user, app string, opts *mcp.ClientOptions, sopts ...*mcp.ClientSessionOptions) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, opts)
	var so *mcp.ClientSessionOptions
	if len(sopts) > 0 {
		so = sopts[0]
	}
	return client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   gatewayURL + "/zapier/mcp/" + app,
		HTTPClient: &http.Client{Transport: identityTransport{tenant, user}},
		MaxRetries: -1,
	}, so)
}

// sessionful is the newest revision with sessions: what an app asks of
// the agent inside a tool call (sampling, elicitation), the agent's log
// level and elicitation/complete reach the agent over its session; a
// 2026-07-28 agent has none (multi round-trip requests are not relayed).
var sessionful = &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"}

func (g *gateway) mustMCPSession(ctx context.Context, tenant, user, app string, opts *mcp.ClientOptions, sopts ...*mcp.ClientSessionOptions) *mcp.ClientSession {
	g.t.Helper()
	s, err := g.mcpSession(ctx, tenant, user, app, opts, sopts...)
	if err != nil {
		g.t.Fatalf("connecting to %s as %s/%s: %v", app, tenant, user, err)
	}
	g.t.Cleanup(func() { _ = s.Close() })
	return s
}

func callText(t *testing.T, ctx context.Context, s *mcp.ClientSession, params *mcp.CallToolParams) string {
	t.Helper()
	res, err := s.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("tools/call: %v", err)
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("tools/call result %+v", res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tools/call content %T", res.Content[0])
	}
	return tc.Text
}

// mcpRaw posts one JSON-RPC initialize to <mount>/<app> without the SDK,
// to see the gateway's own refusals.
func (g *gateway) mcpRaw(tenant, user, app string) (int, map[string]any) {
	g.t.Helper()
	status, _, body := g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + app, tenant: tenant, user: user,
		header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
		body:   `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`})
	var v map[string]any
	_ = json.Unmarshal(body, &v)
	return status, v
}

func authRequiredBody(t *testing.T, status int, v map[string]any, app string) {
	t.Helper()
	e, _ := v["error"].(map[string]any)
	if status != http.StatusUnauthorized || e["code"] != "mcp_authorization_required" ||
		e["authorize_url"] != gatewayURL+"/zapier/mcp/authorize?app="+app {
		t.Fatalf("got %d %v, want 401 mcp_authorization_required with the authorize URL", status, v)
	}
}

func TestMCPAuthorizeListAndCallPerApp(t *testing.T) {
	g := startMCPGateway(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := scrapeMetric(t, "caddy_zapier_mcp_tool_calls_total", `app="`+mcpSlack+`",outcome="success"`)

	// Nothing authorized yet: the agent is told where to send the user.
	status, v := g.mcpRaw("org", "alice", mcpSlack)
	authRequiredBody(t, status, v, mcpSlack)

	g.mcpAuthorize("org", "alice", mcpSlack)
	g.mcpAuthorize("org", "alice", mcpSheets)
	if st := g.fake.MCPStats(); st.ConnectTokens != 2 || st.CodeExchanges != 2 {
		t.Fatalf("fake stats %+v", st)
	}

	status, _, body := g.do(request{path: "/zapier/mcp/apps", tenant: "org", user: "alice"})
	var apps struct{ Data []struct{ App string } }
	if err := json.Unmarshal(body, &apps); status != 200 || err != nil || len(apps.Data) != 2 ||
		apps.Data[0].App != mcpSheets || apps.Data[1].App != mcpSlack {
		t.Fatalf("GET apps: %d %s", status, body)
	}
	if strings.Contains(string(body), "fzmat_") || strings.Contains(string(body), "fzmrt_") {
		t.Fatalf("GET apps shows a token: %s", body)
	}

	for _, app := range []string{mcpSlack, mcpSheets} {
		s := g.mustMCPSession(ctx, "org", "alice", app, nil)
		tools, err := s.ListTools(ctx, nil)
		if err != nil {
			t.Fatalf("%s tools/list: %v", app, err)
		}
		var names []string
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
		if strings.Join(names, ",") != "echo,fail,stream,whoami" {
			t.Fatalf("%s tools %v", app, names)
		}
		who := callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"})
		if who != "org/alice "+app {
			t.Fatalf("whoami on %s = %q", app, who)
		}
		echo := callText(t, ctx, s, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi " + app}})
		if echo != "hi "+app {
			t.Fatalf("echo = %q", echo)
		}
	}
	if after := scrapeMetric(t, "caddy_zapier_mcp_tool_calls_total", `app="`+mcpSlack+`",outcome="success"`); after-before != 2 {
		t.Errorf("tool-call metric grew by %v, want 2", after-before)
	}

	// Tokens are encrypted at rest: no token and no user id in storage.
	_ = filepath.WalkDir(g.storageDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, "mcp") {
			return nil
		}
		data, _ := os.ReadFile(p)
		if strings.Contains(string(data), "fzmat_") || strings.Contains(string(data), "fzmrt_") || strings.Contains(p, "alice") {
			t.Errorf("storage file %s holds a token or the user id", p)
		}
		return nil
	})

	// Another user never gets alice's tools: bob is not authorized...
	status, v = g.mcpRaw("org", "bob", mcpSlack)
	authRequiredBody(t, status, v, mcpSlack)
	if _, err := g.mcpSession(ctx, "org", "bob", mcpSlack, nil); err == nil {
		t.Fatal("bob connected to Slack without authorizing")
	}
	// ...and once he is, his calls run as him.
	g.mcpAuthorize("org", "bob", mcpSlack)
	bobs := g.mustMCPSession(ctx, "org", "bob", mcpSlack, nil)
	if who := callText(t, ctx, bobs, &mcp.CallToolParams{Name: "whoami"}); who != "org/bob "+mcpSlack {
		t.Fatalf("bob's whoami = %q", who)
	}

	// Forgetting an app: DELETE apps/{app}, then the agent is sent to authorize.
	if status, _, body := g.do(request{method: http.MethodDelete, path: "/zapier/mcp/apps/" + mcpSheets, tenant: "org", user: "alice"}); status != http.StatusNoContent {
		t.Fatalf("DELETE apps: %d %s", status, body)
	}
	status, v = g.mcpRaw("org", "alice", mcpSheets)
	authRequiredBody(t, status, v, mcpSheets)
	if status, _, _ := g.do(request{method: http.MethodDelete, path: "/zapier/mcp/apps/" + mcpSheets, tenant: "org", user: "alice"}); status != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", status)
	}
}

func TestMCPAuthorizeStateIsBoundAndSingleUse(t *testing.T) {
	g := startMCPGateway(t, "pkce on")
	b := g.mcpBrowser("org", "carol")
	authorizeURL, callback := b.startAuthorize(mcpSlack)
	u, _ := url.Parse(authorizeURL)
	q := u.Query()
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != mcpCallbackURL ||
		q.Get("resource") != g.fakeURL+"/mcp/"+mcpSlack || q.Get("response_type") != "code" || q.Get("app") != mcpSlack {
		t.Fatalf("authorize URL %s", authorizeURL)
	}
	// Another user's identity on this browser's callback: refused, not spent.
	if status, _ := b.get(callback, "org", "mallory"); status != http.StatusBadRequest {
		t.Fatalf("callback as another user: %d", status)
	}
	// Another browser (no cookie) with the right identity: refused.
	if status, _ := g.mcpBrowser("org", "carol").get(callback); status != http.StatusBadRequest {
		t.Fatalf("callback from another browser: %d", status)
	}
	done := b.mustRedirect(callback)
	if !strings.Contains(done, "zapier_mcp=success") {
		t.Fatalf("callback ended at %s", done)
	}
	// Replayed: refused, and the code is not exchanged again.
	if status, _ := b.get(callback); status != http.StatusBadRequest {
		t.Fatalf("replayed callback: %d", status)
	}
	if st := g.fake.MCPStats(); st.CodeExchanges != 1 {
		t.Fatalf("%d code exchanges", st.CodeExchanges)
	}
	// Zapier's error comes back to return_to.
	_, callback = b.startAuthorize(mcpSlack)
	cu, _ := url.Parse(callback)
	cq := cu.Query()
	cq.Del("code")
	cq.Set("error", "server_error")
	cq.Set("error_description", "OAuth Failed: denied")
	cu.RawQuery = cq.Encode()
	done = b.mustRedirect(cu.String())
	if !strings.Contains(done, "zapier_mcp=error") || !strings.Contains(done, "zapier_error=server_error") {
		t.Fatalf("error callback ended at %s", done)
	}
}

// A long tool call streams its progress over SSE through the gateway: the
// fake sends each next step only after the client has seen the previous
// one, so a buffering proxy would never finish.
func TestMCPStreamedToolCall(t *testing.T) {
	g := startMCPGateway(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var progress []string
	s := g.mustMCPSession(ctx, "org", "alice", mcpSlack, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, req.Params.Message)
			mu.Unlock()
			g.fake.ReleaseMCPStep()
		},
	})
	params := &mcp.CallToolParams{Name: "stream", Arguments: map[string]any{"steps": 5, "gated": true}}
	params.SetProgressToken("p1")
	if got := callText(t, ctx, s, params); got != "streamed 5 steps" {
		t.Fatalf("result %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(progress, ",") != "step 1,step 2,step 3,step 4,step 5" {
		t.Fatalf("progress %v", progress)
	}
}

// Zapier stops accepting the MCP token while 50 calls are in flight: one
// refresh, every call answered.
func TestMCPRefreshUnderConcurrentCalls(t *testing.T) {
	g := startMCPGateway(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil)
	if n := g.fake.ExpireMCPAccessTokens("org", "alice"); n != 1 {
		t.Fatalf("expired %d tokens", n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": fmt.Sprint(i)}})
			if err != nil {
				errs <- err
				return
			}
			if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != fmt.Sprint(i) {
				errs <- fmt.Errorf("call %d: %+v", i, res.Content)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := g.fake.MCPStats(); st.Refreshes != 1 {
		t.Fatalf("%d refreshes, want 1 (%+v)", st.Refreshes, st)
	}
}

// The user revoked the authorization at Zapier: the refresh is refused,
// the record is dropped and the agent is sent to authorize.
func TestMCPRevokedAuthorization(t *testing.T) {
	g := startMCPGateway(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil)
	callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"})
	g.fake.RevokeMCPAuthorization("org", "alice", mcpSlack)
	if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"}); err == nil {
		t.Fatal("a call with a revoked authorization succeeded")
	}
	status, v := g.mcpRaw("org", "alice", mcpSlack)
	authRequiredBody(t, status, v, mcpSlack)
	status, _, body := g.do(request{path: "/zapier/mcp/apps", tenant: "org", user: "alice"})
	if status != 200 || strings.Contains(string(body), mcpSlack) {
		t.Fatalf("GET apps after revocation: %d %s", status, body)
	}
	// Authorizing again works.
	g.mcpAuthorize("org", "alice", mcpSlack)
	s2 := g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil)
	callText(t, ctx, s2, &mcp.CallToolParams{Name: "whoami"})
}

// Without identity headers, or with an unknown app, the gateway refuses
// before anything reaches Zapier.
func TestMCPRefusals(t *testing.T) {
	g := startMCPGateway(t, "")
	if status, _, body := g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + mcpSlack, body: "{}"}); status != http.StatusUnauthorized ||
		!strings.Contains(string(body), "identity_missing") {
		t.Fatalf("no identity: %d %s", status, body)
	}
	if status, _, body := g.do(request{path: "/zapier/mcp/authorize?app=NoSuchApp", tenant: "org", user: "alice"}); status != http.StatusNotFound ||
		!strings.Contains(string(body), "mcp_app_unknown") {
		t.Fatalf("unknown app: %d %s", status, body)
	}
	if status, _, _ := g.do(request{method: http.MethodPut, path: "/zapier/mcp/" + mcpSlack, tenant: "org", user: "alice"}); status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: %d", status)
	}
	if status, _, _ := g.do(request{path: "/zapier/mcp/authorize?app=" + mcpSlack + "&return_to=https://evil.example/", tenant: "org", user: "alice"}); status != http.StatusBadRequest {
		t.Fatalf("foreign return_to: %d", status)
	}
}

// A config reload during a long SSE stream does not cut it: the stream
// started on the old config finishes, and the session goes on on the new
// one.
func TestMCPReloadDuringStream(t *testing.T) {
	g := startMCPGateway(t, "", "30s")
	g.mcpAuthorize("org", "alice", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := make(chan string, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			seen <- req.Params.Message
		},
	})
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   gatewayURL + "/zapier/mcp/" + mcpSlack,
		HTTPClient: &http.Client{Transport: identityTransport{"org", "alice"}},
		MaxRetries: -1, DisableStandaloneSSE: true, // only the tool call's stream is open
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type result struct {
		text string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "stream", Arguments: map[string]any{"steps": 3, "gated": true}}
		params.SetProgressToken("reload")
		res, err := s.CallTool(ctx, params)
		if err == nil && len(res.Content) == 1 {
			if tc, ok := res.Content[0].(*mcp.TextContent); ok {
				done <- result{text: tc.Text}
				return
			}
		}
		done <- result{err: fmt.Errorf("result %+v, %v", res, err)}
	}()
	reloaded := make(chan error, 1)
	for step := 1; step <= 3; step++ {
		select {
		case msg := <-seen:
			if msg != fmt.Sprintf("step %d", step) {
				t.Fatalf("progress %q at step %d", msg, step)
			}
		case <-ctx.Done():
			t.Fatal("no progress")
		}
		if step == 1 {
			go func() { reloaded <- g.reload(g.opts.siteExtra + "\n\trespond /mcp-reloaded 204") }()
			eventually(t, 20*time.Second, "the new config to serve", func() bool {
				status, _, _, err := send(request{path: "/mcp-reloaded"})
				return err == nil && status == http.StatusNoContent
			})
		}
		g.fake.ReleaseMCPStep()
	}
	if r := <-done; r.err != nil || r.text != "streamed 3 steps" {
		t.Fatalf("stream across the reload: %q %v", r.text, r.err)
	}
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	// The old config's listener is gone once its last stream ended; drop
	// the client's pooled connections to it (the old server closes them).
	waitForSingleListener(t, gatewayPort)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	// The same MCP session goes on through the new config.
	if who := callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"}); who != "org/alice "+mcpSlack {
		t.Fatalf("whoami after the reload = %q", who)
	}
}

// The mount's root is one MCP server with every authorized app's tools,
// named <app>__<tool>, filtered by the tool policy, routed per call.
func TestMCPAggregateEndpoint(t *testing.T) {
	g := startMCPGateway(t, "tools deny GoogleSheetsV2API__echo\n\t\t\ttenant_tools org allow *__echo *__whoami")
	g.mcpAuthorize("org", "alice", mcpSlack)
	g.mcpAuthorize("org", "alice", mcpSheets)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := g.mustMCPSession(ctx, "org", "alice", "", nil)
	res, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	if got, want := strings.Join(names, ","), "GoogleSheetsV2API__whoami,SlackCLIAPI__echo,SlackCLIAPI__whoami"; got != want {
		t.Fatalf("aggregate tools %s, want %s", got, want)
	}
	for _, app := range []string{mcpSlack, mcpSheets} {
		if who := callText(t, ctx, s, &mcp.CallToolParams{Name: app + "__whoami"}); who != "org/alice "+app {
			t.Fatalf("%s__whoami = %q", app, who)
		}
	}
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpSlack + "__echo", Arguments: map[string]any{"text": "via root"}}); got != "via root" {
		t.Fatalf("echo = %q", got)
	}
	// Denied tools are not callable, through the root or the app's route.
	if r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: mcpSheets + "__echo", Arguments: map[string]any{"text": "x"}}); err == nil && !r.IsError {
		t.Fatal("a denied tool was callable through the aggregate endpoint")
	}
	status, _, body := g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + mcpSheets, tenant: "org", user: "alice",
		header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
		body:   `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`})
	if status != http.StatusForbidden || !strings.Contains(string(body), "mcp_tool_denied") {
		t.Fatalf("denied tool on the app route: %d %s", status, body)
	}
	// Another user sees only his own (none).
	bob := g.mustMCPSession(ctx, "org", "bob", "", nil)
	if res, err := bob.ListTools(ctx, nil); err != nil || len(res.Tools) != 0 {
		t.Fatalf("bob's aggregate tools: %v %v", res, err)
	}
}

// tool_calls_per_minute caps a user's tool calls across the app routes
// and the root endpoint; other users are not affected.
func TestMCPToolCallCap(t *testing.T) {
	g := startMCPGateway(t, "tool_calls_per_minute 2")
	g.mcpAuthorize("org", "alice", mcpSlack)
	g.mcpAuthorize("org", "bob", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil)
	for range 2 {
		callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"})
	}
	status, hdr, body := g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + mcpSlack, tenant: "org", user: "alice",
		header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
		body:   `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"whoami"}}`})
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "mcp_tool_call_limit") {
		t.Fatalf("third call: %d %v %s", status, hdr, body)
	}
	root := g.mustMCPSession(ctx, "org", "alice", "", nil)
	if r, err := root.CallTool(ctx, &mcp.CallToolParams{Name: mcpSlack + "__whoami"}); err != nil || !r.IsError {
		t.Fatalf("a capped call through the root endpoint: %+v %v", r, err)
	}
	bobs := g.mustMCPSession(ctx, "org", "bob", mcpSlack, nil)
	if who := callText(t, ctx, bobs, &mcp.CallToolParams{Name: "whoami"}); who != "org/bob "+mcpSlack {
		t.Fatalf("bob: %q", who)
	}
}

// A streamed tool call through the root endpoint: the app's progress
// notifications reach the caller under its own progress token, each before
// the app sends the next.
func TestMCPAggregateStreamsProgress(t *testing.T) {
	g := startMCPGateway(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var progress []string
	s := g.mustMCPSession(ctx, "org", "alice", "", &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, fmt.Sprintf("%v:%s", req.Params.ProgressToken, req.Params.Message))
			mu.Unlock()
			g.fake.ReleaseMCPStep()
		},
	})
	params := &mcp.CallToolParams{Name: mcpSlack + "__stream", Arguments: map[string]any{"steps": 3, "gated": true}}
	params.SetProgressToken("mine")
	if got := callText(t, ctx, s, params); got != "streamed 3 steps" {
		t.Fatalf("result %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(progress, ",") != "mine:step 1,mine:step 2,mine:step 3" {
		t.Fatalf("progress %v", progress)
	}
}
