package mcpgateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type textIn struct {
	Text string `json:"text"`
}

// appServer is an SDK MCP server for one app that accepts one token.
func appServer(t *testing.T, app string, token *string) *httptest.Server {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: app, Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: app + ":" + in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_all", Description: "dangerous"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted"}}}, nil, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+*token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// aggregateClient connects a 2025-11-25 client (with a session) as user.
func aggregateClient(t *testing.T, front *httptest.Server, user string) *mcp.ClientSession {
	t.Helper()
	return aggregateClientVersion(t, front, user, "2025-11-25")
}

// aggregateClientVersion connects a go-sdk client asking for version.
func aggregateClientVersion(t *testing.T, front *httptest.Server, user, version string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	s, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: front.URL + "?user=" + user, MaxRetries: -1, DisableStandaloneSSE: true},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestAggregatorListsRoutesAndFilters(t *testing.T) {
	ctx := context.Background()
	tokA, tokB := "at-a", "at-b"
	srvA, srvB := appServer(t, "Slack", &tokA), appServer(t, "Sheets", &tokB)
	var refreshes int
	store := newStore(t, newMemKV(), "0123456789abcdef-secret")
	tokens := NewTokens(store, func(_ context.Context, _ Identity, rec Record) (Record, error) {
		refreshes++
		rec.AccessToken = "at-b2"
		return rec, nil
	}, time.Second, nil)
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: srvA.URL, AccessToken: "at-a", Expiry: time.Now().Add(time.Hour)})
	_ = tokens.Save(ctx, alice, &Record{App: "Sheets", ServerURL: srvB.URL, AccessToken: "at-b", RefreshToken: "rt", Expiry: time.Now().Add(time.Hour)})
	var observed []Call
	agg := &Aggregator{Tokens: tokens,
		Policy:  func(_ Identity, app, tool string) bool { return !(app == "Sheets" && tool == "delete_all") },
		Observe: func(_ context.Context, _ Identity, c Call) { observed = append(observed, c) }}
	defer agg.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), Identity{Tenant: "org", User: r.URL.Query().Get("user")})))
	}))
	defer front.Close()

	s := aggregateClient(t, front, "alice")
	res, err := s.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	if want := []string{"Sheets__echo", "Slack__delete_all", "Slack__echo"}; !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	call := func(name string) (string, bool) {
		r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"text": "hi"}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r.Content[0].(*mcp.TextContent).Text, r.IsError
	}
	if got, isErr := call("Slack__echo"); got != "Slack:hi" || isErr {
		t.Fatalf("Slack__echo = %q", got)
	}
	// Zapier stops accepting Sheets' token: refreshed, replayed.
	tokB = "at-b2"
	if got, isErr := call("Sheets__echo"); got != "Sheets:hi" || isErr {
		t.Fatalf("Sheets__echo after refresh = %q", got)
	}
	if refreshes != 1 {
		t.Fatalf("%d refreshes", refreshes)
	}
	if r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "Sheets__delete_all"}); err == nil && !r.IsError {
		t.Fatal("a denied tool was callable")
	}
	if len(observed) != 2 || observed[0].App != "Slack" || observed[0].Tool != "echo" || observed[1].App != "Sheets" {
		t.Fatalf("observed %+v", observed)
	}

	// Bob has no app: no tools, and alice's are not his.
	bob := aggregateClient(t, front, "bob")
	res, err = bob.ListTools(ctx, nil)
	if err != nil || len(res.Tools) != 0 {
		t.Fatalf("bob's tools: %v %v", res, err)
	}
	if r, err := bob.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo"}); err == nil && !r.IsError {
		t.Fatal("bob called alice's tool")
	}
	// Nor can bob use alice's session id.
	req, _ := http.NewRequest(http.MethodPost, front.URL+"?user=bob", strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", s.ID())
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("bob used alice's aggregate session")
	}
}

func TestExposedNamesAreValid(t *testing.T) {
	if got := exposedName("App@v2:x", "send message"); got != "App_v2_x__send_message" || strings.ContainsAny(got, "@: ") {
		t.Fatalf("exposedName = %q", got)
	}
}

// countingApp is an app server whose echo tool counts its runs, and whose
// transport can forget every session or break after a tool ran.
type countingApp struct {
	runs       atomic.Int64
	handler    atomic.Pointer[http.Handler]
	breakAfter atomic.Bool // abort the response of the next tools/call, after the tool ran
	newHandler func() http.Handler
}

func newCountingApp(t *testing.T) (*countingApp, *httptest.Server) {
	t.Helper()
	a := &countingApp{}
	a.newHandler = func() http.Handler {
		s := mcp.NewServer(&mcp.Implementation{Name: "Slack", Version: "1"}, nil)
		mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			a.runs.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
		var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
		return h
	}
	a.forgetSessions()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := *a.handler.Load()
		if r.Method == http.MethodPost && a.breakAfter.Load() {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), `"tools/call"`) {
				a.breakAfter.Store(false)
				r.Body = io.NopCloser(strings.NewReader(string(body)))
				h.ServeHTTP(httptest.NewRecorder(), r) // the tool runs
				panic(http.ErrAbortHandler)            // and the answer is lost
			}
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return a, srv
}

// forgetSessions replaces the server's handler: every session id it gave
// out is unknown from now on (404), as after a restart of the app's server.
func (a *countingApp) forgetSessions() {
	h := a.newHandler()
	a.handler.Store(&h)
}

// TestAggregatorCallsAToolAtMostOnce: a session the app's server no longer
// knows is reopened and the call made on it (the tool had not run); a call
// whose answer was lost after it was sent is not made again (it may have
// run, with its side effects).
func TestAggregatorCallsAToolAtMostOnce(t *testing.T) {
	ctx := context.Background()
	app, srv := newCountingApp(t)
	store := newStore(t, newMemKV(), "0123456789abcdef-secret")
	tokens := NewTokens(store, nil, time.Second, nil)
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: srv.URL, AccessToken: "at", Expiry: time.Now().Add(time.Hour)})
	agg := &Aggregator{Tokens: tokens}
	defer agg.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), alice)))
	}))
	defer front.Close()
	s := aggregateClient(t, front, "alice")
	call := func() (*mcp.CallToolResult, error) {
		return s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "hi"}})
	}
	if r, err := call(); err != nil || r.IsError {
		t.Fatalf("first call: %v %+v", err, r)
	}

	app.forgetSessions()
	if r, err := call(); err != nil || r.IsError {
		t.Fatalf("call after the app forgot the session: %v %+v", err, r)
	}
	if n := app.runs.Load(); n != 2 {
		t.Fatalf("tool ran %d times after two calls", n)
	}

	app.breakAfter.Store(true)
	if r, err := call(); err == nil && !r.IsError {
		t.Fatalf("a call whose answer was lost succeeded: %+v", r)
	}
	if n := app.runs.Load(); n != 3 {
		t.Fatalf("tool ran %d times after three calls: a call whose answer was lost was made again", n)
	}
	if r, err := call(); err != nil || r.IsError {
		t.Fatalf("call after a broken one: %v %+v", err, r)
	}
}

// TestAggregatorInvalidateShowsANewAppAtOnce: an app authorized right after
// a tools/list is listed by the next one once the gateway invalidates the
// user's tool set, not ListTTL later.
func TestAggregatorInvalidateShowsANewAppAtOnce(t *testing.T) {
	ctx := context.Background()
	tok := "at"
	srv := appServer(t, "Slack", &tok)
	store := newStore(t, newMemKV(), "0123456789abcdef-secret")
	tokens := NewTokens(store, nil, time.Second, nil)
	agg := &Aggregator{Tokens: tokens, ListTTL: time.Hour}
	defer agg.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), alice)))
	}))
	defer front.Close()
	s := aggregateClient(t, front, "alice")
	count := func() int {
		res, err := s.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Tools)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d tools before any authorization", n)
	}
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: srv.URL, AccessToken: "at", Expiry: time.Now().Add(time.Hour)})
	agg.Invalidate(alice)
	if n := count(); n != 2 {
		t.Fatalf("%d tools after the invalidation, want Slack's 2", n)
	}
	agg.Invalidate(Identity{Tenant: "org", User: "nobody"}) // no state: nothing to do
}
