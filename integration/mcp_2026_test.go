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
)

// The MCP 2026-07-28 revision (sessionless, SEP-2575; routing headers,
// SEP-2243) end to end, per-app and through the aggregate (issue 26).

const (
	mcpLinear2026  = "LinearCLIAPI" // an app whose MCP server speaks only 2026-07-28
	mcpVersion2026 = "2026-07-28"
)

// methodRecorder notes the JSON-RPC method (Mcp-Method) and protocol
// version of every request an SDK client sends.
type methodRecorder struct {
	base     http.RoundTripper
	mu       sync.Mutex
	versions []string
}

func (m *methodRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	m.mu.Lock()
	m.versions = append(m.versions, r.Header.Get("Mcp-Protocol-Version"))
	m.mu.Unlock()
	return m.base.RoundTrip(r)
}

// raw2026 posts one 2026-07-28 request (routing headers, per-request _meta)
// to <mount>/<app> as (tenant, user); hdrName, when set, is the Mcp-Name.
func (g *gateway) raw2026(tenant, user, app, method, params, hdrName string) (int, http.Header, []byte) {
	g.t.Helper()
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Mcp-Protocol-Version": {mcpVersion2026}, "Mcp-Method": {method}}
	if hdrName != "" {
		hdr.Set("Mcp-Name", hdrName)
	}
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"only2026","version":"1"}}`
	if params == "" {
		params = "{" + meta + "}"
	} else {
		params = strings.TrimSuffix(params, "}") + "," + meta + "}"
	}
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":5,"method":%q,"params":%s}`, method, params)
	return g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + app, tenant: tenant, user: user, header: hdr, body: body})
}

// A go-sdk v1.8.0 client negotiates 2026-07-28 through a per-app route in
// front of a 2026 server (before: the gateway dropped Mcp-Method, the
// server refused server/discover, and the client fell back to 2025-11-25
// — which this server does not speak, so the connection failed); a client
// that speaks only 2026-07-28 lists and calls; routing headers that
// disagree with the body are refused, not forwarded.
func TestMCP2026PerApp(t *testing.T) {
	g := startMCPGateway(t, "")
	g.fake.RegisterMCPApp2026(mcpLinear2026, "Linear")
	g.mcpAuthorize("org", "alice", mcpLinear2026)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	rec := &methodRecorder{base: identityTransport{"org", "alice"}}
	client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil)
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gatewayURL + "/zapier/mcp/" + mcpLinear2026,
		HTTPClient: &http.Client{Transport: rec}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("a go-sdk v1.8.0 client through the per-app route to a 2026 server: %v", err)
	}
	defer s.Close()
	if v := s.InitializeResult().ProtocolVersion; v != mcpVersion2026 {
		t.Fatalf("negotiated %q, want %s", v, mcpVersion2026)
	}
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"}); got != "org/alice "+mcpLinear2026 {
		t.Fatalf("whoami = %q", got)
	}
	if res, err := s.ListTools(ctx, nil); err != nil || len(res.Tools) == 0 {
		t.Fatalf("tools/list: %v %v", res, err)
	}
	rec.mu.Lock()
	for _, v := range rec.versions {
		if v != mcpVersion2026 {
			t.Errorf("a request with Mcp-Protocol-Version %q (the client was downgraded)", v)
		}
	}
	rec.mu.Unlock()

	// A client that speaks only 2026-07-28: no initialize, no session.
	status, _, body := g.raw2026("org", "alice", mcpLinear2026, "tools/call", `{"name":"echo","arguments":{"text":"only 2026"}}`, "echo")
	if status != http.StatusOK || !strings.Contains(string(body), "only 2026") {
		t.Fatalf("2026-only tools/call: %d %s", status, body)
	}
	status, _, body = g.raw2026("org", "alice", mcpLinear2026, "tools/list", "", "")
	if status != http.StatusOK || !strings.Contains(string(body), `"whoami"`) {
		t.Fatalf("2026-only tools/list: %d %s", status, body)
	}
	// Mcp-Name says one tool, the body calls another: refused by the
	// gateway (a server or balancer routing on the header would see one
	// tool, the policy another).
	status, hdr, body := g.raw2026("org", "alice", mcpLinear2026, "tools/call", `{"name":"echo","arguments":{"text":"x"}}`, "whoami")
	envelope(t, "mismatching Mcp-Name", status, hdr, body, http.StatusBadRequest, "mcp_header_mismatch")
}
