package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Issue #26 item 4: connecting from inside a tool call. A call of a tool of
// an app the user has not authorized, or whose authorization expired,
// answers with URL-mode elicitation (-32042) whose URL is a single-use
// link to the authorize flow, for the same identity only; a client
// without elicitation.url gets the link in a tool error. Once the user
// authorized, the next call succeeds.

// urlElicitation returns the one URL elicitation of a -32042 error.
func urlElicitation(t *testing.T, err error) *mcp.ElicitParams {
	t.Helper()
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != mcp.CodeURLElicitationRequired {
		t.Fatalf("got %v, want JSON-RPC error -32042", err)
	}
	var data struct {
		Elicitations []*mcp.ElicitParams `json:"elicitations"`
	}
	if err := json.Unmarshal(rpcErr.Data, &data); err != nil || len(data.Elicitations) != 1 {
		t.Fatalf("-32042 data %s: %v", rpcErr.Data, err)
	}
	e := data.Elicitations[0]
	if e.Mode != "url" || !strings.HasPrefix(e.URL, gatewayURL+"/zapier/mcp/authorize?link=") || e.ElicitationID == "" || e.Message == "" {
		t.Fatalf("elicitation %+v", e)
	}
	return e
}

// authorizeWithLink opens the link in a browser of (tenant, user) and runs
// the flow to its end.
func (g *gateway) authorizeWithLink(tenant, user, link string) {
	g.t.Helper()
	b := g.mcpBrowser(tenant, user)
	authorizeURL := b.mustRedirect(link)
	done, err := url.Parse(b.mustRedirect(b.mustRedirect(authorizeURL)))
	if err != nil {
		g.t.Fatal(err)
	}
	if done.Query().Get("zapier_mcp") != "success" {
		g.t.Fatalf("the link's flow ended at %s", done)
	}
}

func TestMCPAggregateConnectsFromToolCall(t *testing.T) {
	g := startMCPGateway(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	completed := make(chan string, 4)
	s := g.mustMCPSession(ctx, "org", "alice", "", &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
			completed <- r.Params.ElicitationID
		},
	}, sessionful) // elicitation/complete reaches an agent over its session
	// Never authorized: -32042 with a link.
	_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: mcpSlack + "__whoami"})
	e := urlElicitation(t, err)

	// Another user opening it is refused (and does not spend it).
	b := g.mcpBrowser("org", "bob")
	if status, _ := b.get(e.URL); status != http.StatusBadRequest {
		t.Fatalf("bob opened alice's link: %d", status)
	}
	status, _, body := g.do(request{path: strings.TrimPrefix(e.URL, gatewayURL), tenant: "org", user: "bob"})
	if status != http.StatusBadRequest || !strings.Contains(string(body), "mcp_link_invalid") {
		t.Fatalf("bob: %d %s", status, body)
	}
	// Alice authorizes with it; the session hears of it; a second use is
	// refused.
	g.authorizeWithLink("org", "alice", e.URL)
	select {
	case id := <-completed:
		if id != e.ElicitationID {
			t.Fatalf("elicitation/complete for %q, want %q", id, e.ElicitationID)
		}
	case <-ctx.Done():
		t.Fatal("no notifications/elicitation/complete")
	}
	if status, _ := g.mcpBrowser("org", "alice").get(e.URL); status != http.StatusBadRequest {
		t.Fatalf("a second use of the link: %d", status)
	}
	// The agent's next call succeeds.
	if who := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpSlack + "__whoami"}); who != "org/alice "+mcpSlack {
		t.Fatalf("whoami after authorizing: %q", who)
	}

	// The authorization is revoked: the next call answers -32042 again, and
	// tools/list marks the app's tools.
	g.fake.RevokeMCPAuthorization("org", "alice", mcpSlack)
	_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: mcpSlack + "__whoami"})
	e = urlElicitation(t, err)
	res, err := s.ListTools(ctx, nil)
	if err != nil || len(res.Tools) == 0 {
		t.Fatalf("tools after the revocation: %v %v", res, err)
	}
	for _, tool := range res.Tools {
		if !strings.Contains(tool.Description, "authorization expired") {
			t.Errorf("%s is not marked: %q", tool.Name, tool.Description)
		}
	}
	g.authorizeWithLink("org", "alice", e.URL)
	if who := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpSlack + "__whoami"}); who != "org/alice "+mcpSlack {
		t.Fatalf("whoami after authorizing again: %q", who)
	}
}

// A client without elicitation.url gets a tool error whose text carries
// the link; with expired_tools hide, an expired app's tools are not listed.
func TestMCPAggregateConnectLinkAsToolError(t *testing.T) {
	g := startMCPGateway(t, "expired_tools hide\n\t\t\tconnect_link_ttl 5m")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := g.mustMCPSession(ctx, "org", "alice", "", &mcp.ClientOptions{Capabilities: &mcp.ClientCapabilities{}})
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: mcpSheets + "__whoami"})
	if err != nil || !res.IsError || len(res.Content) != 1 {
		t.Fatalf("a tool of an app not authorized: %+v %v", res, err)
	}
	text := res.Content[0].(*mcp.TextContent).Text
	i := strings.Index(text, gatewayURL+"/zapier/mcp/authorize?link=")
	if !strings.HasPrefix(text, "mcp_authorization_required") || i < 0 {
		t.Fatalf("tool error text %q", text)
	}
	link := strings.Fields(text[i:])[0]
	g.authorizeWithLink("org", "alice", link)
	if who := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpSheets + "__whoami"}); who != "org/alice "+mcpSheets {
		t.Fatalf("whoami after authorizing: %q", who)
	}
	g.fake.RevokeMCPAuthorization("org", "alice", mcpSheets)
	if res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: mcpSheets + "__whoami"}); err != nil || !res.IsError ||
		!strings.Contains(res.Content[0].(*mcp.TextContent).Text, "authorize?link=") {
		t.Fatalf("after the revocation: %+v %v", res, err)
	}
	if l, err := s.ListTools(ctx, nil); err != nil || len(l.Tools) != 0 {
		t.Fatalf("hidden expired tools listed: %+v %v", l, err)
	}
}
