package mcpgateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/gateway"
)

func testNames() *gateway.Namespace {
	return gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) {
		return []byte("0123456789abcdef0123456789abcdef"), nil
	}))
}

// A link's token works once, for the identity it was issued to, until it
// expires; offboarding forgets the user's.
func TestAuthorizeLinkIsSingleUseAndBound(t *testing.T) {
	ctx := context.Background()
	kv := newMemKV()
	l := &linkStore{kv: kv, names: testNames(), ttl: time.Minute}
	a, b := gateway.Identity{Tenant: "org", User: "alice"}, gateway.Identity{Tenant: "org", User: "bob"}
	tok, err := l.issue(ctx, a, "Slack", "e1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.spend(ctx, b, tok); !errors.Is(err, errLinkInvalid) {
		t.Fatalf("another user spent alice's link: %v", err)
	}
	rec, err := l.spend(ctx, a, tok)
	if err != nil || rec.App != "Slack" || rec.ElicitationID != "e1" {
		t.Fatalf("alice's link: %+v %v", rec, err)
	}
	if _, err := l.spend(ctx, a, tok); !errors.Is(err, errLinkInvalid) {
		t.Fatalf("a link worked twice: %v", err)
	}
	l.ttl = -time.Second
	old, _ := l.issue(ctx, a, "Slack", "e2")
	if _, err := l.spend(ctx, a, old); !errors.Is(err, errLinkInvalid) {
		t.Fatalf("an expired link worked: %v", err)
	}
	l.ttl = time.Minute
	_, _ = l.issue(ctx, a, "Slack", "e3")
	_, _ = l.issue(ctx, b, "Slack", "e4")
	rep, err := LinkStore{links: l}.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 1 {
		t.Fatalf("forget alice: %+v %v", rep, err)
	}
	rep, err = LinkStore{links: l}.Forget(ctx, gateway.Scope{Tenant: "org"})
	if err != nil || rep.Deleted != 1 {
		t.Fatalf("forget the tenant: %+v %v", rep, err)
	}
	for k := range kv.m {
		if strings.HasPrefix(k, linksPrefix) {
			t.Errorf("left %s", k)
		}
	}
}

// elicitFront is an Aggregator over one app whose token the test revokes,
// with a Connect that counts the links it issues.
type elicitFront struct {
	agg    *Aggregator
	front  *httptest.Server
	token  *string
	server string
	mu     sync.Mutex
	issued []string // app:elicitationID
}

func newElicitFront(t *testing.T, expired string) *elicitFront {
	t.Helper()
	tok := "at-a"
	srv := appServer(t, "Slack", &tok)
	store := newStore(t, newMemKV(), "0123456789abcdef-secret")
	tokens := NewTokens(store, nil, time.Second, nil)
	if err := tokens.Save(context.Background(), alice, &Record{App: "Slack", ServerURL: srv.URL, AccessToken: "at-a", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f := &elicitFront{token: &tok, server: srv.URL}
	f.agg = &Aggregator{Tokens: tokens, ExpiredTools: expired, Connect: func(_ context.Context, id Identity, app, eid string) (string, string, error) {
		if app != "Slack" && app != "Sheets" {
			return "", "", errors.New("unknown app")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.issued = append(f.issued, app+":"+eid)
		return "https://gw.example/zapier/mcp/authorize?link=" + eid, app, nil
	}}
	t.Cleanup(f.agg.Close)
	f.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), Identity{Tenant: "org", User: r.URL.Query().Get("user")})))
	}))
	t.Cleanup(f.front.Close)
	return f
}

func urlElicitationData(t *testing.T, err error) *mcp.ElicitParams {
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
	if e.Mode != "url" || !strings.HasPrefix(e.URL, "https://gw.example/zapier/mcp/authorize?link=") || e.ElicitationID == "" || e.Message == "" {
		t.Fatalf("elicitation %+v", e)
	}
	return e
}

func TestAggregateURLElicitationForExpiredAuthorization(t *testing.T) {
	f := newElicitFront(t, "")
	ctx := context.Background()
	completed := make(chan string, 4)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
		ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
			completed <- r.Params.ElicitationID
		},
	})
	s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: f.front.URL + "?user=alice", MaxRetries: -1}, sessionful)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "x"}})); got != "Slack:x" {
		t.Fatalf("echo: %q", got)
	}
	// The authorization is revoked at the app: the call answers -32042.
	*f.token = "revoked"
	_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "x"}})
	e := urlElicitationData(t, err)
	// tools/list marks the app's tools.
	res, err := s.ListTools(ctx, nil)
	if err != nil || len(res.Tools) != 2 || !strings.HasSuffix(res.Tools[0].Description, expiredNote) {
		t.Fatalf("tools after the expiry: %+v %v", res, err)
	}
	// A marked tool's call answers -32042 too, without reaching the app.
	_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__delete_all"})
	urlElicitationData(t, err)
	// The user authorizes again: the waiting session hears of it, the next
	// call succeeds, the tools are not marked any more.
	*f.token = "at-a2"
	if err := f.agg.Tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: f.server, AccessToken: "at-a2", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// The next call succeeds even before this gateway hears of it (the
	// callback may have reached another sidecar).
	if got := relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "y"}})); got != "Slack:y" {
		t.Fatalf("echo after authorizing: %q", got)
	}
	f.agg.Authorized(alice, "Slack")
	if got := <-completed; got != e.ElicitationID {
		t.Fatalf("elicitation/complete for %q, want %q", got, e.ElicitationID)
	}
	res, err = s.ListTools(ctx, nil)
	if err != nil || len(res.Tools) != 2 || strings.HasSuffix(res.Tools[0].Description, expiredNote) {
		t.Fatalf("tools after authorizing: %+v %v", res, err)
	}
}

// An agent without elicitation.url gets a tool error whose text carries
// the link; a tool of an app never authorized answers the same way, and
// hidden expired tools are left out of tools/list.
func TestAggregateAuthorizationLinkAsToolError(t *testing.T) {
	f := newElicitFront(t, ExpiredHide)
	ctx := context.Background()
	s := aggregateClient(t, f.front, "alice")
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "Sheets__whoami"})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "https://gw.example/zapier/mcp/authorize?link=") {
		t.Fatalf("a tool of an app never authorized: %+v %v", res, err)
	}
	if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "Nope__x"}); err == nil {
		t.Fatal("a tool of no app was answered")
	}
	if l, err := s.ListTools(ctx, nil); err != nil || len(l.Tools) != 2 {
		t.Fatalf("tools: %+v %v", l, err)
	}
	*f.token = "revoked"
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "authorize?link=") {
		t.Fatalf("expired: %+v %v", res, err)
	}
	if l, err := s.ListTools(ctx, nil); err != nil || len(l.Tools) != 0 {
		t.Fatalf("hidden expired tools listed: %+v %v", l, err)
	}
	res, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "x"}})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "authorize?link=") {
		t.Fatalf("a hidden expired tool: %+v %v", res, err)
	}
	// Authorized again (through another sidecar: this one is not told):
	// the next call succeeds.
	*f.token = "at-a2"
	if err := f.agg.Tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: f.server, AccessToken: "at-a2", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "z"}})); got != "Slack:z" {
		t.Fatalf("a hidden tool after authorizing again: %q", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.issued) != 3 {
		t.Fatalf("links issued %v, want 3", f.issued)
	}
}
