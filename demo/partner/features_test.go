package partner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/webhooksig"
)

// A whsec_ secret of 32 bytes, for tests only.
const testSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// get sends a request with an optional session cookie and JSON body.
func send(t *testing.T, s *Server, method, path string, c *http.Cookie, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if c != nil {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// deliver POSTs an event to the receiver, signed with secret.
func deliver(t *testing.T, s *Server, secret, id string, ts time.Time, event map[string]any) int {
	t.Helper()
	body, _ := json.Marshal(event)
	signer, err := webhooksig.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/zapier/events", strings.NewReader(string(body)))
	signer.SetHeaders(req.Header, id, ts, body)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec.Code
}

func deliveriesOf(t *testing.T, s *Server, c *http.Cookie) []Delivery {
	t.Helper()
	rec := send(t, s, http.MethodGet, "/partner/deliveries", c, "")
	var v struct{ Data []Delivery }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &v) != nil {
		t.Fatalf("deliveries: %d %s", rec.Code, rec.Body)
	}
	return v.Data
}

func TestReceiverKeepsVerifiedDeliveriesPerUser(t *testing.T) {
	s := New(testKey)
	if err := s.EnableEvents(testSecret); err != nil {
		t.Fatal(err)
	}
	alice, bob := login(t, s, "org_acme", "alice"), login(t, s, "org_acme", "bob")
	ev := func(user string, n int) map[string]any {
		return map[string]any{"type": "trigger.event", "subscription": "slack-new", "tenant": "org_acme", "user": user,
			"app": "SlackCLIAPI", "trigger": "new_message", "payload": map[string]any{"n": n}}
	}
	now := time.Now()
	if code := deliver(t, s, testSecret, "msg_1", now, ev("alice", 1)); code != http.StatusNoContent {
		t.Fatalf("a signed delivery: %d", code)
	}
	// Refused: another secret, a stale timestamp, no signature at all.
	other := "whsec_" + strings.Repeat("QUJD", 8)
	if code := deliver(t, s, other, "msg_2", now, ev("alice", 2)); code != http.StatusUnauthorized {
		t.Errorf("signed with another secret: %d", code)
	}
	if code := deliver(t, s, testSecret, "msg_3", now.Add(-10*time.Minute), ev("alice", 3)); code != http.StatusUnauthorized {
		t.Errorf("a stale timestamp: %d", code)
	}
	if rec := send(t, s, http.MethodPost, "/zapier/events", nil, `{"tenant":"org_acme","user":"alice"}`); rec.Code != http.StatusUnauthorized {
		t.Errorf("unsigned: %d", rec.Code)
	}
	// A redelivery (same webhook-id) is accepted and kept once.
	if code := deliver(t, s, testSecret, "msg_1", now, ev("alice", 1)); code != http.StatusNoContent {
		t.Errorf("a redelivery: %d", code)
	}
	if code := deliver(t, s, testSecret, "msg_4", now, ev("bob", 4)); code != http.StatusNoContent {
		t.Errorf("bob's: %d", code)
	}
	got := deliveriesOf(t, s, alice)
	if len(got) != 1 || got[0].ID != "msg_1" || got[0].Type != "trigger.event" || got[0].Subscription != "slack-new" ||
		!strings.Contains(string(got[0].Body), `"payload":{"n":1}`) {
		t.Errorf("alice's deliveries: %+v", got)
	}
	if got := deliveriesOf(t, s, bob); len(got) != 1 || got[0].ID != "msg_4" {
		t.Errorf("bob's deliveries: %+v", got)
	}
	if rec := send(t, s, http.MethodGet, "/partner/deliveries", nil, ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("deliveries without a session: %d", rec.Code)
	}

	// The last keepDeliveries, newest first.
	for i := range keepDeliveries + 5 {
		if code := deliver(t, s, testSecret, fmt.Sprint("many_", i), now, ev("alice", i)); code != http.StatusNoContent {
			t.Fatalf("delivery %d: %d", i, code)
		}
	}
	got = deliveriesOf(t, s, alice)
	if len(got) != keepDeliveries || got[0].ID != fmt.Sprint("many_", keepDeliveries+4) || got[keepDeliveries-1].ID != "many_5" {
		t.Errorf("kept %d, first %s, last %s", len(got), got[0].ID, got[len(got)-1].ID)
	}
}

func TestEnableEventsRefusesABadSecret(t *testing.T) {
	if err := New(testKey).EnableEvents("not-a-secret"); err == nil {
		t.Error("EnableEvents took a secret that is not whsec_")
	}
}

// The agent speaks MCP to the gateway's aggregate endpoint with the
// session's identity headers, and nothing else of the browser's.
func TestAgentListsAndCallsToolsAsTheSessionUser(t *testing.T) {
	var mu sync.Mutex
	var seen []string // identity and cookie of every MCP request
	server := mcp.NewServer(&mcp.Implementation{Name: "gateway", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "SlackCLIAPI__echo", Description: "[SlackCLIAPI] echoes text"},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct {
			Text string `json:"text"`
		}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+r.Header.Get("X-Zapier-Tenant")+"/"+r.Header.Get("X-Zapier-User")+" "+r.Header.Get("Cookie"))
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	defer gw.Close()

	s := New(testKey)
	s.EnableAgents(gw.URL)
	c := login(t, s, "org_acme", "alice")
	rec := send(t, s, http.MethodGet, "/partner/mcp/tools", c, "")
	// Each tool comes with its input schema, from which the page builds
	// the call's form.
	var listed struct {
		Tools []struct {
			Name, Description string
			InputSchema       struct {
				Type       string
				Properties map[string]struct{ Type string }
				Required   []string
			} `json:"input_schema"`
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &listed); rec.Code != http.StatusOK || err != nil || len(listed.Tools) != 1 ||
		listed.Tools[0].Name != "SlackCLIAPI__echo" || listed.Tools[0].Description != "[SlackCLIAPI] echoes text" ||
		listed.Tools[0].InputSchema.Type != "object" || listed.Tools[0].InputSchema.Properties["text"].Type != "string" ||
		len(listed.Tools[0].InputSchema.Required) != 1 || listed.Tools[0].InputSchema.Required[0] != "text" {
		t.Errorf("tools: %d %s", rec.Code, rec.Body)
	}
	rec = send(t, s, http.MethodPost, "/partner/mcp/call", c, `{"name":"SlackCLIAPI__echo","arguments":{"text":"hi"}}`)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"is_error":false,"text":"hi"}` {
		t.Errorf("call: %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	if len(seen) == 0 {
		t.Error("the gateway saw no MCP request")
	}
	for _, r := range seen {
		if r != "/zapier/mcp/ org_acme/alice " {
			t.Errorf("an MCP request %q, want /zapier/mcp/ as org_acme/alice without a cookie", r)
		}
	}
	n := len(seen)
	mu.Unlock()

	for _, path := range []string{"/partner/mcp/tools", "/partner/mcp/call"} {
		method := http.MethodGet
		if strings.HasSuffix(path, "call") {
			method = http.MethodPost
		}
		if rec := send(t, s, method, path, nil, `{"name":"x"}`); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without a session: %d", path, rec.Code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Errorf("requests without a session reached the gateway")
	}
}

func TestAgentReportsAnUnreachableGateway(t *testing.T) {
	gw := httptest.NewServer(http.NotFoundHandler())
	gw.Close()
	s := New(testKey)
	s.EnableAgents(gw.URL)
	if rec := send(t, s, http.MethodGet, "/partner/mcp/tools", login(t, s, "org_acme", "alice"), ""); rec.Code != http.StatusBadGateway ||
		!strings.Contains(rec.Body.String(), `"mcp_failed"`) {
		t.Errorf("tools with the gateway down: %d %s", rec.Code, rec.Body)
	}
}

// The fake-trigger button asks the fake Zapier's demo hook for the
// session's user, never another.
func TestFakeTriggerFiresForTheSessionUser(t *testing.T) {
	var got map[string]any
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &got)
		if r.Method != http.MethodPost || r.URL.Path != "/_demo/trigger-events" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"fired":[{"inbox_id":"ib","message_id":"m"}]}`))
	}))
	defer fake.Close()
	s := New(testKey)
	s.EnableFakeTrigger(fake.URL + "/")
	c := login(t, s, "org_acme", "alice")
	rec := send(t, s, http.MethodPost, "/partner/demo/trigger-event", c, `{"tenant":"org_globex","user":"mallory"}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"message_id":"m"`) {
		t.Errorf("fire: %d %s", rec.Code, rec.Body)
	}
	if got["tenant"] != "org_acme" || got["user"] != "alice" {
		t.Errorf("the fake was asked for %v, want the session's org_acme/alice", got)
	}
	if rec := send(t, s, http.MethodPost, "/partner/demo/trigger-event", nil, ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("fire without a session: %d", rec.Code)
	}
}

// The session tells the page which parts the backend offers.
func TestSessionListsTheFeatures(t *testing.T) {
	s := New(testKey)
	c := login(t, s, "org_acme", "alice")
	features := func() string {
		var v map[string]any
		_ = json.Unmarshal(send(t, s, http.MethodGet, "/partner/session", c, "").Body.Bytes(), &v)
		return fmt.Sprint(v["agents"], v["events"], v["fake_trigger"])
	}
	if f := features(); f != "false false false" {
		t.Errorf("features of a bare backend: %s", f)
	}
	s.EnableAgents("http://127.0.0.1:1")
	if err := s.EnableEvents(testSecret); err != nil {
		t.Fatal(err)
	}
	s.EnableFakeTrigger("http://127.0.0.1:1")
	if f := features(); f != "true true true" {
		t.Errorf("features with everything on: %s", f)
	}
}
