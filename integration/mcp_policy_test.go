package integration

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpJSONApp's MCP server answers POSTs with single JSON responses, where
// the other apps' answer with SSE streams.
const mcpJSONApp = "NotionJSONAPI"

func startMCPGatewayWithJSONApp(t *testing.T, extra string) *gateway {
	t.Helper()
	g := startMCPGateway(t, extra)
	g.fake.RegisterMCPAppJSON(mcpJSONApp, "Notion")
	return g
}

// responseType is the media type the app's MCP server answers an
// initialize with, through the gateway.
func (g *gateway) responseType(tenant, user, app string) string {
	g.t.Helper()
	status, hdr, body := g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + app, tenant: tenant, user: user,
		header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}},
		body:   `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`})
	if status != http.StatusOK {
		g.t.Fatalf("initialize %s: %d %s", app, status, body)
	}
	mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	return mt
}

func toolNames(t *testing.T, ctx context.Context, s *mcp.ClientSession) string {
	t.Helper()
	res, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	return strings.Join(names, ",")
}

// A denied tool is neither listed nor callable on the per-app route, with
// SSE and with JSON responses from the app's MCP server.
func TestMCPPerAppRouteHidesDeniedTools(t *testing.T) {
	g := startMCPGatewayWithJSONApp(t, "tools deny *__echo\n\t\t\ttenant_tools org deny "+mcpJSONApp+"__stream")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range []struct{ app, mediaType, tools string }{
		{mcpSlack, "text/event-stream", "fail,stream,whoami"},
		{mcpJSONApp, "application/json", "fail,whoami"},
	} {
		g.mcpAuthorize("org", "alice", c.app)
		if mt := g.responseType("org", "alice", c.app); mt != c.mediaType {
			t.Fatalf("%s answers %s, want %s", c.app, mt, c.mediaType)
		}
		s := g.mustMCPSession(ctx, "org", "alice", c.app, nil)
		if got := toolNames(t, ctx, s); got != c.tools {
			t.Fatalf("%s lists %s, want %s", c.app, got, c.tools)
		}
		if who := callText(t, ctx, s, &mcp.CallToolParams{Name: "whoami"}); who != "org/alice "+c.app {
			t.Fatalf("whoami on %s = %q", c.app, who)
		}
		before := g.fake.MCPStats().ToolCalls
		if r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}}); err == nil {
			t.Fatalf("a denied tool was callable on %s: %+v", c.app, r)
		}
		if after := g.fake.MCPStats().ToolCalls; after != before {
			t.Fatalf("a denied call reached %s", c.app)
		}
	}
	// Another tenant's policy is its own: the JSON app's stream is listed.
	g.mcpAuthorize("other", "dave", mcpJSONApp)
	s := g.mustMCPSession(ctx, "other", "dave", mcpJSONApp, nil)
	if got := toolNames(t, ctx, s); got != "fail,stream,whoami" {
		t.Fatalf("other tenant lists %s", got)
	}
}

// A tool result with isError is a tool error in the metrics, on the
// per-app routes (SSE and JSON) and at the root, and the agent still gets
// the result as the app sent it.
func TestMCPToolErrorsAreCounted(t *testing.T) {
	g := startMCPGatewayWithJSONApp(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	g.mcpAuthorize("org", "alice", mcpJSONApp)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	metric := func(app, outcome string) float64 {
		return scrapeMetric(t, "caddy_zapier_mcp_tool_calls_total", fmt.Sprintf(`app="%s",outcome="%s"`, app, outcome))
	}
	slackErrors, jsonErrors, slackOK := metric(mcpSlack, "tool_error"), metric(mcpJSONApp, "tool_error"), metric(mcpSlack, "success")
	failed := func(s *mcp.ClientSession, name string) {
		t.Helper()
		r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name})
		if err != nil || !r.IsError || len(r.Content) != 1 {
			t.Fatalf("%s: %+v %v", name, r, err)
		}
		if tc, ok := r.Content[0].(*mcp.TextContent); !ok || tc.Text != "the app refused" {
			t.Fatalf("%s content %+v", name, r.Content)
		}
	}
	failed(g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil), "fail")
	callText(t, ctx, g.mustMCPSession(ctx, "org", "alice", mcpSlack, nil), &mcp.CallToolParams{Name: "whoami"})
	failed(g.mustMCPSession(ctx, "org", "alice", mcpJSONApp, nil), "fail")
	failed(g.mustMCPSession(ctx, "org", "alice", "", nil), mcpSlack+"__fail")
	// A call is counted once its response stream ended, which can be just
	// after the agent saw the result.
	eventually(t, 10*time.Second, "the tool calls to be counted", func() bool {
		return metric(mcpSlack, "tool_error")-slackErrors == 2 && metric(mcpJSONApp, "tool_error")-jsonErrors == 1 &&
			metric(mcpSlack, "success")-slackOK == 1
	})
}
