package mcpgateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/gateway"
)

// replicas are two aggregators sharing a storage and its Namespace, as two
// gateways behind a load balancer, each behind its own front.
type replicas struct {
	aggs   [2]*Aggregator
	fronts [2]*httptest.Server
	clock  atomic.Int64 // added to time.Now on both, in nanoseconds
}

func newReplicas(t *testing.T) *replicas {
	t.Helper()
	kv := newMemKV()
	key := []byte("0123456789abcdef0123456789abcdef")
	ns := gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return key, nil }))
	token := "at"
	app := appServer(t, "Slack", &token)
	r := &replicas{}
	for i := range r.aggs {
		st := newStore(t, kv, "0123456789abcdef-secret")
		st.Owners = ns
		tokens := NewTokens(st, nil, time.Second, nil)
		if i == 0 {
			_ = tokens.Save(context.Background(), alice, &Record{App: "Slack", ServerURL: app.URL, AccessToken: token, Expiry: time.Now().Add(time.Hour)})
		}
		agg := &Aggregator{Tokens: tokens, clock: func() time.Time { return time.Now().Add(time.Duration(r.clock.Load())) }}
		t.Cleanup(agg.Close)
		r.aggs[i], r.fronts[i] = agg, aggFront(t, agg)
	}
	return r
}

// flipper sends each request to the next front in turn, as a load balancer
// without sticky sessions does.
type flipper struct {
	fronts []string
	mu     sync.Mutex
	next   int
	seen   []int
}

func (f *flipper) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	i := f.next
	f.next = (f.next + 1) % len(f.fronts)
	f.seen = append(f.seen, i)
	f.mu.Unlock()
	r = r.Clone(r.Context())
	host := strings.TrimPrefix(f.fronts[i], "http://")
	r.URL.Host, r.Host = host, host
	return http.DefaultTransport.RoundTrip(r)
}

// An agent whose consecutive requests alternate between two gateways
// lists and calls tools, with a 2025 session and with 2026-07-28.
func TestAggregateSessionsAcrossGateways(t *testing.T) {
	for _, version := range []string{"2025-06-18", "2025-11-25", "2026-07-28"} {
		t.Run(version, func(t *testing.T) {
			r := newReplicas(t)
			f := &flipper{fronts: []string{r.fronts[0].URL, r.fronts[1].URL}}
			c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
			s, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: r.fronts[0].URL + "?user=alice",
				HTTPClient: &http.Client{Transport: f}, MaxRetries: -1, DisableStandaloneSSE: true}, &mcp.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.InitializeResult().ProtocolVersion; got != version {
				t.Fatalf("negotiated %s", got)
			}
			for i := range 4 {
				res, err := s.ListTools(context.Background(), nil)
				if err != nil || len(res.Tools) != 2 {
					t.Fatalf("tools/list %d: %v %v", i, res, err)
				}
				out, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: "Slack__echo", Arguments: map[string]any{"text": "hi"}})
				if err != nil || out.IsError || out.Content[0].(*mcp.TextContent).Text != "Slack:hi" {
					t.Fatalf("tools/call %d: %v %v", i, out, err)
				}
			}
			if version < "2026" {
				if a, b := r.aggs[0].Stats(), r.aggs[1].Stats(); a.Sessions != 1 || b.Sessions != 1 {
					t.Fatalf("sessions held: %+v %+v, want one each", a, b)
				}
			}
		})
	}
}

func ping(t *testing.T, front *httptest.Server, user, session string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, front.URL+"?user="+user, strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func deleteSession(t *testing.T, front *httptest.Server, user, session string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, front.URL+"?user="+user, nil)
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A session id opens for its identity only, on every gateway; an idle one
// expires on every gateway; a DELETE ends it on every gateway.
func TestAggregateSessionBoundsAcrossGateways(t *testing.T) {
	r := newReplicas(t)
	id := initialize(t, r.fronts[0].URL+"?user=alice")
	for i, f := range r.fronts {
		if got := ping(t, f, "alice", id); got != http.StatusOK {
			t.Fatalf("alice on gateway %d: %d", i, got)
		}
		if got := ping(t, f, "bob", id); got != http.StatusNotFound {
			t.Fatalf("bob with alice's id on gateway %d: %d", i, got)
		}
	}
	if got := ping(t, r.fronts[1], "alice", "a1.forged"); got != http.StatusNotFound {
		t.Fatalf("a forged id: %d", got)
	}
	// Idle past the timeout (both gateways hold the session).
	r.clock.Store(int64(DefaultIdleTimeout + DefaultIdleTimeout/4))
	for i, f := range r.fronts {
		if got := ping(t, f, "alice", id); got != http.StatusNotFound {
			t.Fatalf("an idle-expired id on gateway %d: %d", i, got)
		}
	}
	r.clock.Store(0)
	// DELETE on one gateway; the other, which never held it, refuses it;
	// one that holds it refuses it by its next check.
	id = initialize(t, r.fronts[0].URL+"?user=alice")
	other := initialize(t, r.fronts[0].URL+"?user=alice")
	if got := ping(t, r.fronts[1], "alice", other); got != http.StatusOK {
		t.Fatal(got)
	}
	if got := deleteSession(t, r.fronts[0], "alice", id); got != http.StatusNoContent {
		t.Fatalf("DELETE: %d", got)
	}
	if got := ping(t, r.fronts[1], "alice", id); got != http.StatusNotFound {
		t.Fatalf("a deleted id on the other gateway: %d", got)
	}
	if got := deleteSession(t, r.fronts[0], "alice", other); got != http.StatusNoContent {
		t.Fatalf("DELETE: %d", got)
	}
	r.clock.Store(int64(DefaultIdleTimeout / 4))
	if got := ping(t, r.fronts[1], "alice", other); got != http.StatusNotFound {
		t.Fatalf("a deleted id on a gateway holding it, at its next check: %d", got)
	}
	if st := r.aggs[1].Stats(); st.Sessions != 0 {
		t.Fatalf("the gateway still holds %+v", st)
	}
}

// An identity's sessions past SessionsPerIdentity evict its oldest on
// every gateway, not only on the one that made the newest.
func TestAggregateSessionCapAcrossGateways(t *testing.T) {
	r := newReplicas(t)
	for _, agg := range r.aggs {
		agg.SessionsPerIdentity = 2
	}
	first := initialize(t, r.fronts[0].URL+"?user=alice")
	initialize(t, r.fronts[1].URL+"?user=alice")
	initialize(t, r.fronts[1].URL+"?user=alice")
	if got := ping(t, r.fronts[1], "alice", first); got != http.StatusNotFound {
		t.Fatalf("the evicted session on the other gateway: %d", got)
	}
	// The gateway that made it holds it: it refuses it by its next check.
	r.clock.Store(int64(DefaultIdleTimeout / 8))
	if got := ping(t, r.fronts[0], "alice", first); got != http.StatusNotFound {
		t.Fatalf("the evicted session where it was made, at its next check: %d", got)
	}
}

// A 2026-07-28 client (no session, no standalone stream) gets the progress
// notifications of its call on the call's own response stream.
func TestAggregateProgressReachesA2026Client(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	step := make(chan struct{}, 3) // each step waits for the client to see the last
	app := mcp.NewServer(&mcp.Implementation{Name: "Slack", Version: "1"}, nil)
	mcp.AddTool(app, &mcp.Tool{Name: "stream"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		for i := 1; i <= 3; i++ {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: 3})
			select {
			case <-step:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	appSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return app }, nil))
	defer appSrv.Close()
	agg, tokens := newAggregator(t)
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: appSrv.URL, AccessToken: "at"})
	front := aggFront(t, agg)
	var mu sync.Mutex
	var got []float64
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			got = append(got, req.Params.Progress)
			mu.Unlock()
			step <- struct{}{}
		}})
	s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: front.URL + "?user=alice", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := s.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %s", v)
	}
	params := &mcp.CallToolParams{Name: "Slack__stream"}
	params.SetProgressToken("mine")
	if res, err := s.CallTool(ctx, params); err != nil || res.IsError {
		t.Fatalf("call: %v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("progress %v, want 3 notifications", got)
	}
}

// A 2026-07-28 client's requests hand their reference on to one linger
// per user: however many calls it makes, the user is held by one
// reference once they have returned, not one per request.
func TestStatelessRequestsLingerOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app := mcp.NewServer(&mcp.Implementation{Name: "Slack", Version: "1"}, nil)
	mcp.AddTool(app, &mcp.Tool{Name: "ping"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "pong"}}}, nil, nil
	})
	appSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return app }, nil))
	defer appSrv.Close()
	agg, tokens := newAggregator(t)
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: appSrv.URL, AccessToken: "at"})
	front := aggFront(t, agg)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: front.URL + "?user=alice", MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := s.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %s, want 2026-07-28", v)
	}
	for range 20 {
		if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "Slack__ping"}); err != nil {
			t.Fatal(err)
		}
	}
	u := agg.userOf(alice)
	if u == nil {
		t.Fatal("the user's state was not kept after its requests")
	}
	agg.mu.Lock()
	refs, lingering := u.refs, !u.lingerUntil.IsZero()
	agg.mu.Unlock()
	if refs != 1 || !lingering {
		t.Errorf("after 20 calls the user holds %d references (lingering %v), want 1", refs, lingering)
	}
}
