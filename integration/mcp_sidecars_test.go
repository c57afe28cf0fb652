package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// sidecarMCPAuthorize runs the MCP authorize flow for (tenant, user, app)
// in a browser whose front end talks to sidecar s.
func sidecarMCPAuthorize(t *testing.T, s *sidecar, tenant, user, app string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := fmt.Sprintf("http://127.0.0.1:%d", s.port)
	next := base + "/zapier/mcp/authorize?app=" + app + "&return_to=/done"
	for range 3 { // authorize → Zapier's authorize step → callback
		req, err := http.NewRequest(http.MethodGet, next, nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(next, base) {
			req.Header.Set("X-Zapier-Tenant", tenant)
			req.Header.Set("X-Zapier-User", user)
		}
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("GET %s: %d", next, resp.StatusCode)
		}
		next = resp.Header.Get("Location")
	}
	done, err := url.Parse(next)
	if err != nil || done.Path != "/done" || done.Query().Get("zapier_mcp") != "success" {
		t.Fatalf("the authorize flow ended at %s", next)
	}
}

// startMCPFleet starts two sidecars sharing storage (and Redis when
// cacheRedis is set) with zapier_mcp mounted, and authorizes alice's Slack
// through the first.
func startMCPFleet(t *testing.T, mcpExtra string, withRedis bool) *fleet {
	t.Helper()
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/callback", sidecarPort(0))
	zapierExtra := fmt.Sprintf("return_origins http://127.0.0.1:%d", sidecarPort(0))
	var env []string
	if withRedis {
		redis := redisserver.Start(t, redisPort)
		zapierExtra += fmt.Sprintf("\n\t\tcache {\n\t\t\tredis %s\n\t\t\tredis_key {env.ITEST_REDIS_KEY}\n\t\t\tredis_timeout 2s\n\t\t}", redis.URL())
		env = []string{"ITEST_REDIS_KEY=" + testRedisKey}
	}
	f := startFleet(t, fleetOptions{n: 2, zapierExtra: zapierExtra, env: env,
		siteExtra: fmt.Sprintf(`handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %s
			%s
		}
	}`, callback, mcpExtra)})
	f.fake.RegisterMCPApp(mcpSlack, "Slack")
	f.fake.SetMCPRedirectURIs(callback)
	sidecarMCPAuthorize(t, f.sidecars[0], "org", "alice", mcpSlack)
	return f
}

// Two sidecars share storage: when the user's MCP token stops working,
// many calls through both meet it at once, and Zapier sees one refresh
// (it rotates refresh tokens: a second refresh would be refused and the
// user sent to authorize again).
func TestMCPSidecarsRefreshOnce(t *testing.T) {
	f := startMCPFleet(t, "", false)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var sessions []*mcp.ClientSession
	for _, s := range f.sidecars {
		client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil)
		session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/%s", s.port, mcpSlack),
			HTTPClient: &http.Client{Transport: identityTransport{"org", "alice"}},
			MaxRetries: -1, DisableStandaloneSSE: true,
		}, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		defer session.Close()
		sessions = append(sessions, session)
	}
	if n := f.fake.ExpireMCPAccessTokens("org", "alice"); n != 1 {
		t.Fatalf("expired %d tokens", n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sessions[i%2].CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": fmt.Sprint(i)}})
			if err != nil {
				errs <- fmt.Errorf("call %d via %s: %w", i, f.sidecars[i%2].name, err)
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
	if st := f.fake.MCPStats(); st.Refreshes != 1 {
		t.Fatalf("%d refreshes, want 1 (%+v)", st.Refreshes, st)
	}
}

// rawToolCall posts one tools/call to sidecar s's Slack route as alice,
// without a session (the gateway answers the cap itself).
func rawToolCall(t *testing.T, s *sidecar, id int) (int, string) {
	t.Helper()
	status, _, body, err := send(request{method: http.MethodPost, path: "/zapier/mcp/" + mcpSlack, tenant: "org", user: "alice", base: s.port,
		header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
		body:   fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"whoami"}}`, id)})
	if err != nil {
		t.Fatal(err)
	}
	return status, string(body)
}

// With cache.redis, tool_calls_per_minute is one window per user for all
// the sidecars: three calls spread over two sidecars use it up, where each
// sidecar alone would have allowed three.
func TestMCPToolCallCapSharedAcrossSidecars(t *testing.T) {
	f := startMCPFleet(t, "tool_calls_per_minute 3", true)
	// The cap is checked before the call goes upstream, so a call without
	// a session is enough to count (the MCP server answers it 400).
	for i, s := range []*sidecar{f.sidecars[0], f.sidecars[1], f.sidecars[0]} {
		if status, body := rawToolCall(t, s, i); status == http.StatusTooManyRequests {
			t.Fatalf("call %d via %s was capped: %s", i, s.name, body)
		}
	}
	for i, s := range f.sidecars {
		if status, body := rawToolCall(t, s, 10+i); status != http.StatusTooManyRequests || !strings.Contains(body, "mcp_tool_call_limit") {
			t.Fatalf("call over the shared cap via %s: %d %s", s.name, status, body)
		}
	}
}
