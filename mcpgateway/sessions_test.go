package mcpgateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// aggFront serves agg for the identity named by ?user= (tenant org).
func aggFront(t *testing.T, agg *Aggregator) *httptest.Server {
	t.Helper()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := Identity{Tenant: "org", User: r.URL.Query().Get("user")}
		agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	}))
	t.Cleanup(front.Close)
	return front
}

// post sends one JSON-RPC message to the aggregate endpoint.
func post(t *testing.T, url, session, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func initialize(t *testing.T, url string) string {
	t.Helper()
	resp, body := post(t, url, "", initializeBody)
	id := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	return id
}

func envelopeCode(t *testing.T, resp *http.Response, body string) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal([]byte(body), &e) != nil || e.Error.Message == "" {
		t.Fatalf("not the JSON error envelope: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return e.Error.Code
}

func newAggregator(t *testing.T) (*Aggregator, *Tokens) {
	t.Helper()
	tokens := NewTokens(newStore(t, newMemKV(), "0123456789abcdef-secret"), nil, time.Second, nil)
	agg := &Aggregator{Tokens: tokens}
	t.Cleanup(agg.Close)
	return agg, tokens
}

// 50 initialize from one identity leave SessionsPerIdentity sessions: the
// oldest are closed, and a request for one is answered 404 in the JSON
// envelope; the newest still work.
func TestAggregatorCapsSessionsPerIdentity(t *testing.T) {
	agg, _ := newAggregator(t)
	front := aggFront(t, agg)
	url := front.URL + "?user=alice"
	var ids []string
	for range 50 {
		ids = append(ids, initialize(t, url))
	}
	if st := agg.Stats(); st.Sessions != DefaultSessionsPerIdentity || st.OpenSessions != DefaultSessionsPerIdentity || st.Users != 1 {
		t.Fatalf("after 50 initialize: %+v, want %d sessions", st, DefaultSessionsPerIdentity)
	}
	resp, body := post(t, url, ids[0], `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	if resp.StatusCode != http.StatusNotFound || envelopeCode(t, resp, body) != "mcp_session_not_found" {
		t.Fatalf("the oldest session: %d %s", resp.StatusCode, body)
	}
	if resp, body := post(t, url, ids[49], `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"result"`) {
		t.Fatalf("the newest session: %d %s", resp.StatusCode, body)
	}
}

// Past MaxSessions the least recently used session of anyone is closed
// here: a session just used survives one that was not.
func TestAggregatorEvictsLeastRecentlyUsed(t *testing.T) {
	agg, _ := newAggregator(t)
	agg.MaxSessions = 3
	front := aggFront(t, agg)
	a1 := initialize(t, front.URL+"?user=alice")
	b1 := initialize(t, front.URL+"?user=bob")
	c1 := initialize(t, front.URL+"?user=carol")
	post(t, front.URL+"?user=alice", a1, `{"jsonrpc":"2.0","id":2,"method":"ping"}`) // alice's is now the most recent
	initialize(t, front.URL+"?user=dave")
	if st := agg.Stats(); st.Sessions != 3 || st.OpenSessions != 3 || st.Users != 3 {
		t.Fatalf("stats %+v, want 3 sessions of 3 users", st)
	}
	for user, id := range map[string]string{"alice": a1, "carol": c1} {
		if resp, _ := post(t, front.URL+"?user="+user, id, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s's session: %d", user, resp.StatusCode)
		}
	}
	// MaxSessions bounds what a gateway holds, not the sessions: the evicted
	// one is restored from its id when it is used again (evicting the
	// least recently used one in turn).
	if resp, body := post(t, front.URL+"?user=bob", b1, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("the least recently used session, used again: %d %s", resp.StatusCode, body)
	}
	if st := agg.Stats(); st.Sessions != 3 || st.OpenSessions != 3 {
		t.Fatalf("stats %+v after a restore, want 3 sessions", st)
	}
}

// An idle session is closed when its timeout fires, never while a request
// of it is served; with the user's last session its upstream sessions end
// (the app's server sees them go).
func TestAggregatorIdleSessionsEndWithTheirUpstream(t *testing.T) {
	ctx := context.Background()
	app := mcp.NewServer(&mcp.Implementation{Name: "Slack", Version: "1"}, nil)
	mcp.AddTool(app, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	appSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return app }, nil))
	defer appSrv.Close()
	upstreamOpen := func() (n int) {
		for range app.Sessions() {
			n++
		}
		return n
	}
	agg, tokens := newAggregator(t)
	agg.IdleTimeout = time.Hour // fired by hand below
	_ = tokens.Save(ctx, alice, &Record{App: "Slack", ServerURL: appSrv.URL, AccessToken: "at"})
	front := aggFront(t, agg)
	s := aggregateClient(t, front, "alice")
	if res, err := s.ListTools(ctx, nil); err != nil || len(res.Tools) != 1 {
		t.Fatalf("tools/list: %v %v", res, err)
	}
	if st := agg.Stats(); st.Sessions != 1 || st.Upstream != 1 || upstreamOpen() != 1 {
		t.Fatalf("stats %+v, %d upstream sessions at the app", st, upstreamOpen())
	}
	agg.mu.Lock()
	sess := agg.users[tokens.Store().Subject(alice)].live[0]
	agg.mu.Unlock()
	// The initialize's handler may still be returning after its answer
	// reached the client: until then the session is in use.
	for {
		agg.mu.Lock()
		idle := sess.inflight == 0
		if idle {
			sess.inflight++ // a request in progress
		}
		agg.mu.Unlock()
		if idle {
			break
		}
		<-time.After(time.Millisecond)
	}
	agg.expire(sess)
	if st := agg.Stats(); st.Sessions != 1 {
		t.Fatalf("a session with a request in progress expired: %+v", st)
	}
	agg.mu.Lock()
	sess.inflight--
	agg.mu.Unlock()
	agg.clock = func() time.Time { return time.Now().Add(2 * time.Hour) } // as if the hour had passed
	agg.expire(sess)
	if st := agg.Stats(); st.Sessions != 0 || st.OpenSessions != 0 || st.Users != 0 || st.Upstream != 0 || upstreamOpen() != 0 {
		t.Fatalf("after the idle timeout: %+v, %d upstream sessions at the app", st, upstreamOpen())
	}
	if _, err := s.ListTools(ctx, nil); err == nil {
		t.Fatal("an expired session still answers")
	}
}

// The SDK's plain-text HTTP errors come out in the gateway's envelope;
// JSON-RPC errors stay JSON-RPC, in a 200.
func TestAggregatorErrorsAreEnvelopes(t *testing.T) {
	agg, _ := newAggregator(t)
	front := aggFront(t, agg)
	url := front.URL + "?user=alice"
	req, _ := http.NewRequest(http.MethodPut, url, nil)
	resp, _ := http.DefaultClient.Do(req)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || envelopeCode(t, resp, string(b)) != "method_not_allowed" {
		t.Fatalf("PUT: %d %s", resp.StatusCode, b)
	}
	resp, err := http.Post(url, "text/plain", strings.NewReader(initializeBody))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || envelopeCode(t, resp, string(b)) != "bad_request" {
		t.Fatalf("text/plain body: %d %s", resp.StatusCode, b)
	}
	id := initialize(t, url)
	// Bob cannot use alice's session, and is not told it exists.
	resp, body := post(t, front.URL+"?user=bob", id, `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	if resp.StatusCode != http.StatusNotFound || envelopeCode(t, resp, body) != "mcp_session_not_found" {
		t.Fatalf("another user's session: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, url, id, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope"}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"error"`) || !strings.Contains(body, `"jsonrpc"`) {
		t.Fatalf("a JSON-RPC error: %d %s", resp.StatusCode, body)
	}
	big := `{"jsonrpc":"2.0","id":4,"method":"ping","params":{"pad":"` + strings.Repeat("x", mcp.DefaultMaxRequestBodyBytes) + `"}}`
	resp, body = post(t, url, id, big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a body too large: %d", resp.StatusCode)
	}
	envelopeCode(t, resp, body)
}
