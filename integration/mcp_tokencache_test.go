package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Each sidecar keeps the users' decrypted MCP tokens in memory (a tool
// call reads no storage). With cache.redis, a forget on one sidecar
// reaches the other's copy at once, over Redis pub/sub: token_cache_ttl is
// an hour here, so only the invalidation can end it.
func TestMCPForgetReachesTheOtherSidecarsTokenCache(t *testing.T) {
	f := startMCPFleet(t, "token_cache_ttl 1h", true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	other := f.sidecars[1]
	client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/%s", other.port, mcpSlack),
		HTTPClient: &http.Client{Transport: identityTransport{"org", "alice"}},
		MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	for i := range 5 { // the other sidecar caches alice's token
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": fmt.Sprint(i)}})
		if err != nil || res.IsError {
			t.Fatalf("call %d via %s: %v %+v", i, other.name, err, res)
		}
	}
	status, _, body, err := send(request{method: http.MethodDelete, path: "/zapier/mcp/apps/" + mcpSlack, tenant: "org", user: "alice", base: f.sidecars[0].port})
	if err != nil || status != http.StatusNoContent {
		t.Fatalf("forget via %s: %d %s %v", f.sidecars[0].name, status, body, err)
	}
	// Pub/sub is asynchronous: the other sidecar drops its copy within
	// moments (the deadline is the test's, not a timing claim).
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body := rawToolCall(t, other, 100)
		if status == http.StatusUnauthorized && strings.Contains(body, "mcp_authorization_required") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forgotten authorization still works via %s: %d %s", other.name, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := f.fake.MCPStats(); st.Refreshes != 0 {
		t.Fatalf("%d refreshes", st.Refreshes)
	}
}
