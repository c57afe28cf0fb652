package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// MCP behind a load balancer without sticky sessions (issue 26): an
// agent's consecutive requests alternate between two sidecars sharing
// storage and Redis.

// flipTransport sends each request to the next sidecar in turn, with the
// identity headers, as a load balancer without sticky sessions in front of
// the partner's agent backend.
type flipTransport struct {
	tenant, user string
	ports        []int
	mu           sync.Mutex
	next         int
	used         map[int]int // requests per port
}

func (f *flipTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	port := f.ports[f.next]
	f.next = (f.next + 1) % len(f.ports)
	if f.used == nil {
		f.used = map[int]int{}
	}
	f.used[port]++
	f.mu.Unlock()
	r = r.Clone(r.Context())
	host := fmt.Sprintf("127.0.0.1:%d", port)
	r.URL.Host, r.Host = host, host
	return identityTransport{f.tenant, f.user}.RoundTrip(r)
}

// A go-sdk v1.8.0 client of each protocol version whose requests alternate
// between two sidecars lists and calls tools through the aggregate root
// and through per-app routes (one to a 2025 server, one to a 2026-only
// server). Before: the aggregate's second request met 404 session not
// found on the other sidecar, and the 2026-only app could not be reached.
func TestMCPReplicasAlternate(t *testing.T) {
	f := startMCPReplicas(t, "")
	ports := []int{f.sidecars[0].port, f.sidecars[1].port}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, c := range []struct {
		version, app, tool, negotiated string
	}{
		{"2025-06-18", "", mcpSlack + "__echo", "2025-06-18"},
		{"2025-11-25", "", mcpSlack + "__echo", "2025-11-25"},
		{"2026-07-28", "", mcpSlack + "__echo", "2026-07-28"},
		{"2025-11-25", "", mcpLinear2026 + "__echo", "2025-11-25"},
		{"2025-06-18", mcpSlack, "echo", "2025-06-18"},
		{"2025-11-25", mcpSlack, "echo", "2025-11-25"},
		// Per-app, the app's server negotiates: a 2025 server downgrades a
		// 2026 client, a 2026 one keeps it.
		{"2026-07-28", mcpSlack, "echo", "2025-11-25"},
		{"2026-07-28", mcpLinear2026, "echo", "2026-07-28"},
	} {
		t.Run(c.version+"/"+cmpOr(c.app, "aggregate")+"/"+c.tool, func(t *testing.T) {
			flip := &flipTransport{tenant: "org", user: "alice", ports: ports}
			client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil)
			s, err := client.Connect(ctx, &mcp.StreamableClientTransport{
				Endpoint:   fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/%s", ports[0], c.app),
				HTTPClient: &http.Client{Transport: flip}, MaxRetries: -1, DisableStandaloneSSE: true,
			}, &mcp.ClientSessionOptions{ProtocolVersion: c.version})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer s.Close()
			if got := s.InitializeResult().ProtocolVersion; got != c.negotiated {
				t.Fatalf("negotiated %s, want %s", got, c.negotiated)
			}
			for i := range 3 {
				res, err := s.ListTools(ctx, nil)
				if err != nil {
					t.Fatalf("tools/list %d: %v", i, err)
				}
				found := false
				for _, tool := range res.Tools {
					found = found || tool.Name == c.tool
				}
				if !found {
					t.Fatalf("tools/list %d: no %s in %d tools", i, c.tool, len(res.Tools))
				}
				text := fmt.Sprintf("hi %d", i)
				if got := callText(t, ctx, s, &mcp.CallToolParams{Name: c.tool, Arguments: map[string]any{"text": text}}); got != text {
					t.Fatalf("tools/call %d = %q", i, got)
				}
			}
			flip.mu.Lock()
			defer flip.mu.Unlock()
			if flip.used[ports[0]] < 3 || flip.used[ports[1]] < 3 {
				t.Fatalf("requests per sidecar %v: the test did not alternate", flip.used)
			}
		})
	}
}

// startMCPReplicas starts two sidecars sharing storage and Redis with
// zapier_mcp mounted, and authorizes alice's Slack (a 2025 server) and
// Linear (a 2026-only one).
func startMCPReplicas(t *testing.T, mcpExtra string) *fleet {
	t.Helper()
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/callback", sidecarPort(0))
	redis := redisserver.Start(t, redisPort)
	zapierExtra := fmt.Sprintf("return_origins http://127.0.0.1:%d\n\t\tcache {\n\t\t\tredis %s\n\t\t\tredis_key {env.ITEST_REDIS_KEY}\n\t\t\tredis_timeout 2s\n\t\t}",
		sidecarPort(0), redis.URL())
	f := startFleet(t, fleetOptions{n: 2, zapierExtra: zapierExtra, env: []string{"ITEST_REDIS_KEY=" + testRedisKey},
		siteExtra: fmt.Sprintf(`handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %s
			%s
		}
	}`, callback, mcpExtra)})
	f.fake.RegisterMCPApp(mcpSlack, "Slack")
	f.fake.RegisterMCPApp2026(mcpLinear2026, "Linear")
	f.fake.SetMCPRedirectURIs(callback)
	sidecarMCPAuthorize(t, f.sidecars[0], "org", "alice", mcpSlack)
	sidecarMCPAuthorize(t, f.sidecars[0], "org", "alice", mcpLinear2026)
	return f
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// rawAggregate posts (or deletes, with an empty body) at sidecar s's
// aggregate root as (tenant, user) in session id.
func rawAggregate(t *testing.T, s *sidecar, tenant, user, id, body string) (int, http.Header, []byte) {
	t.Helper()
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}}
	method := http.MethodPost
	if body == "" {
		method, hdr = http.MethodDelete, http.Header{}
	}
	if id != "" {
		hdr.Set("Mcp-Session-Id", id)
		hdr.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	status, h, b, err := send(request{method: method, path: "/zapier/mcp/", tenant: tenant, user: user, base: s.port, header: hdr, body: body})
	if err != nil {
		t.Fatal(err)
	}
	return status, h, b
}

func rawAggregateSession(t *testing.T, s *sidecar) string {
	t.Helper()
	status, hdr, body := rawAggregate(t, s, "org", "alice", "", mcpInitializeBody)
	id := hdr.Get("Mcp-Session-Id")
	if status != http.StatusOK || id == "" {
		t.Fatalf("initialize on %s: %d %q %s", s.name, status, id, body)
	}
	if status, _, body := rawAggregate(t, s, "org", "alice", id, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); status != http.StatusAccepted {
		t.Fatalf("initialized: %d %s", status, body)
	}
	return id
}

const pingBody = `{"jsonrpc":"2.0","id":7,"method":"ping"}`

// An aggregate session id is bound to its identity on every sidecar
// (another user presenting it gets 404), an idle-expired one gets 404 on
// both sidecars, and a DELETE holds on the other sidecar.
func TestMCPReplicasSessionBounds(t *testing.T) {
	const idle = 2 * time.Second
	f := startMCPReplicas(t, "aggregate_idle_timeout 2s")
	a, b := f.sidecars[0], f.sidecars[1]
	id := rawAggregateSession(t, a)
	for _, s := range []*sidecar{a, b} {
		if status, _, body := rawAggregate(t, s, "org", "alice", id, pingBody); status != http.StatusOK {
			t.Fatalf("alice's ping on %s: %d %s", s.name, status, body)
		}
		status, hdr, body := rawAggregate(t, s, "org", "bob", id, pingBody)
		envelope(t, "bob with alice's session on "+s.name, status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
	}
	// Idle past the timeout (and the eighth of it the shared record may
	// lag): refused on both sidecars, which both held it.
	time.Sleep(idle + idle/8 + 500*time.Millisecond)
	for _, s := range []*sidecar{a, b} {
		status, hdr, body := rawAggregate(t, s, "org", "alice", id, pingBody)
		envelope(t, "an idle-expired session on "+s.name, status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
	}
	// DELETE on one sidecar holds on the other, which never held it.
	id = rawAggregateSession(t, a)
	if status, _, body := rawAggregate(t, a, "org", "alice", id, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	status, hdr, body := rawAggregate(t, b, "org", "alice", id, pingBody)
	envelope(t, "a deleted session on the other sidecar", status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
	if !strings.HasPrefix(id, "a1.") {
		t.Fatalf("session id %q is not a sealed one", id)
	}
}
