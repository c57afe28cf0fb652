package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Bounded MCP resources and strict JSON-RPC (issue 22, items 5 and 11),
// driven with raw Streamable HTTP requests so the gateway's own answers
// are seen: the aggregate endpoint's sessions per identity, the per-app
// routes' streams per identity, a tools/call naming "name" twice, and the
// aggregate endpoint's HTTP errors in the JSON envelope.

const mcpInitializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// mcpPost posts one JSON-RPC message to <mount>/<app> ("" is the root) as
// (tenant, user), in the session sessionID when set.
func (g *gateway) mcpPost(tenant, user, app, sessionID, body string) (int, http.Header, []byte) {
	g.t.Helper()
	hdr := http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"}}
	if sessionID != "" {
		hdr.Set("Mcp-Session-Id", sessionID)
		hdr.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	return g.do(request{method: http.MethodPost, path: "/zapier/mcp/" + app, tenant: tenant, user: user, header: hdr, body: body})
}

// mcpInitialize opens a session at <mount>/<app> with a raw initialize
// and its initialized notification, and returns the session id.
func (g *gateway) mcpInitialize(tenant, user, app string) string {
	g.t.Helper()
	status, hdr, body := g.mcpPost(tenant, user, app, "", mcpInitializeBody)
	id := hdr.Get("Mcp-Session-Id")
	if status != http.StatusOK || id == "" || !strings.Contains(string(body), `"result"`) {
		g.t.Fatalf("initialize %s/%s at /%s: %d session %q %s", tenant, user, app, status, id, body)
	}
	if status, _, body := g.mcpPost(tenant, user, app, id, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); status != http.StatusAccepted {
		g.t.Fatalf("notifications/initialized %s/%s at /%s: %d %s", tenant, user, app, status, body)
	}
	return id
}

// mcpPing pings session id at <mount>/<app> and returns the status and
// body.
func (g *gateway) mcpPing(tenant, user, app, id string) (int, []byte) {
	g.t.Helper()
	status, _, body := g.mcpPost(tenant, user, app, id, `{"jsonrpc":"2.0","id":7,"method":"ping"}`)
	return status, body
}

// envelope checks that an answer is the gateway's JSON error envelope with
// status and code, served as application/json.
func envelope(t *testing.T, what string, status int, hdr http.Header, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var v struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err := json.Unmarshal(body, &v); status != wantStatus || mt != "application/json" || err != nil ||
		v.Error == nil || v.Error.Code != wantCode || v.Error.Message == "" {
		t.Fatalf("%s: %d %q %s, want %d application/json {\"error\":{\"code\":%q,\"message\":…}}",
			what, status, hdr.Get("Content-Type"), body, wantStatus, wantCode)
	}
}

// An identity's aggregate sessions past aggregate_sessions_per_identity
// evict its oldest: the evicted ones get 404 mcp_session_not_found, the
// newest still answer, and another identity's sessions are untouched.
// Before issue 22 the aggregate endpoint had no cap: all five answered.
func TestMCPAggregateSessionsPerIdentity(t *testing.T) {
	g := startMCPGateway(t, "aggregate_sessions_per_identity 3")
	bob := []string{g.mcpInitialize("org", "bob", ""), g.mcpInitialize("org", "bob", "")}
	var alice []string
	for range 5 {
		alice = append(alice, g.mcpInitialize("org", "alice", ""))
	}
	// An evicted session is closed as it is evicted; its close may finish
	// just after the initialize that evicted it answered.
	for i, id := range alice[:2] {
		eventually(t, 10*time.Second, fmt.Sprintf("alice's session %d to be evicted", i+1), func() bool {
			status, _ := g.mcpPing("org", "alice", "", id)
			return status == http.StatusNotFound
		})
		status, hdr, body := g.mcpPost("org", "alice", "", id, `{"jsonrpc":"2.0","id":8,"method":"tools/list"}`)
		envelope(t, fmt.Sprintf("tools/list in alice's evicted session %d", i+1), status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
	}
	for i, id := range alice[2:] {
		if status, body := g.mcpPing("org", "alice", "", id); status != http.StatusOK || !strings.Contains(string(body), `"result"`) {
			t.Fatalf("ping in alice's session %d: %d %s", i+3, status, body)
		}
		status, _, body := g.mcpPost("org", "alice", "", id, `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`)
		if status != http.StatusOK || !strings.Contains(string(body), `"tools"`) {
			t.Fatalf("tools/list in alice's session %d: %d %s", i+3, status, body)
		}
	}
	for i, id := range bob {
		if status, body := g.mcpPing("org", "bob", "", id); status != http.StatusOK || !strings.Contains(string(body), `"result"`) {
			t.Fatalf("ping in bob's session %d after alice's five: %d %s", i+1, status, body)
		}
	}
	// A session is its identity's: bob's id in alice's request is none of hers.
	status, hdr, body := g.mcpPost("org", "alice", "", bob[0], `{"jsonrpc":"2.0","id":10,"method":"ping"}`)
	envelope(t, "alice using bob's session", status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
	if status, body := g.mcpPing("org", "bob", "", bob[0]); status != http.StatusOK {
		t.Fatalf("bob's session after alice tried it: %d %s", status, body)
	}
}

// mcpStreamClient has no overall timeout: its GET streams stay open until
// the test closes them.
var mcpStreamClient = &http.Client{Transport: validating(nil)}

// mcpOpenStream opens the standalone SSE stream of session id on the
// per-app route. On 200 the stream is left open (its body is returned for
// the caller to close); otherwise the body is read and returned.
func (g *gateway) mcpOpenStream(ctx context.Context, tenant, user, app, id string) (*http.Response, []byte) {
	g.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL+"/zapier/mcp/"+app, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", id)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("X-Zapier-Tenant", tenant)
	req.Header.Set("X-Zapier-User", user)
	resp, err := mcpStreamClient.Do(req)
	if err != nil {
		g.t.Fatalf("GET stream of %s/%s on %s: %v", tenant, user, app, err)
	}
	if resp.StatusCode == http.StatusOK {
		g.t.Cleanup(func() { resp.Body.Close() })
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// An identity holds at most streams_per_identity open streams on the
// per-app routes: the next GET gets 429 mcp_too_many_streams with
// Retry-After, another identity is not affected, and closing a stream
// frees its slot. Before issue 22 the per-app routes had no cap.
func TestMCPPerAppStreamsPerIdentity(t *testing.T) {
	g := startMCPGateway(t, "streams_per_identity 2")
	g.mcpAuthorize("org", "alice", mcpSlack)
	g.mcpAuthorize("org", "bob", mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The app's server allows one standalone stream per session: one
	// session per stream.
	var ids []string
	for range 3 {
		ids = append(ids, g.mcpInitialize("org", "alice", mcpSlack))
	}
	var open []*http.Response
	for i, id := range ids[:2] {
		resp, body := g.mcpOpenStream(ctx, "org", "alice", mcpSlack, id)
		if resp.StatusCode != http.StatusOK || !isEventStream(resp.Header) {
			t.Fatalf("stream %d: %d %q %s", i+1, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		open = append(open, resp)
	}
	resp, body := g.mcpOpenStream(ctx, "org", "alice", mcpSlack, ids[2])
	envelope(t, "a third stream", resp.StatusCode, resp.Header, body, http.StatusTooManyRequests, "mcp_too_many_streams")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("429 without Retry-After: %v", resp.Header)
	}
	// A POST in progress counts as a stream too: refused the same way.
	status, hdr, body := g.mcpPost("org", "alice", mcpSlack, ids[2], `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
	envelope(t, "a POST past the cap", status, hdr, body, http.StatusTooManyRequests, "mcp_too_many_streams")

	// Bob's streams are his own.
	bobs := g.mcpInitialize("org", "bob", mcpSlack)
	if resp, body := g.mcpOpenStream(ctx, "org", "bob", mcpSlack, bobs); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob's stream while alice is at her cap: %d %s", resp.StatusCode, body)
	}

	// Closing one of alice's streams frees a slot once the gateway saw it
	// go (its upstream request ends with it).
	open[0].Body.Close()
	var third *http.Response
	for attempt := 0; third == nil; attempt++ {
		resp, body := g.mcpOpenStream(ctx, "org", "alice", mcpSlack, ids[2])
		switch {
		case resp.StatusCode == http.StatusOK:
			third = resp
		case resp.StatusCode != http.StatusTooManyRequests:
			t.Fatalf("a stream after closing one: %d %s", resp.StatusCode, body)
		case attempt >= 200:
			t.Fatal("closing a stream did not free its slot")
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !isEventStream(third.Header) {
		t.Fatalf("the freed slot's stream: %q", third.Header.Get("Content-Type"))
	}
	// And the cap holds again: two open.
	resp, body = g.mcpOpenStream(ctx, "org", "alice", mcpSlack, ids[0])
	envelope(t, "a stream past the cap again", resp.StatusCode, resp.Header, body, http.StatusTooManyRequests, "mcp_too_many_streams")
}

// With a tool policy, a tools/call naming "name" twice is refused with 400
// mcp_request_ambiguous before the app's server sees it: the gateway and
// the app's server could read different tools (Go's encoding/json, as the
// SDK there uses, takes the last). Before issue 22 the policy checked one
// of the two names and the message went through.
func TestMCPDuplicateMemberRefused(t *testing.T) {
	g := startMCPGateway(t, "tools deny *__delete_all")
	g.mcpAuthorize("org", "alice", mcpSlack)
	id := g.mcpInitialize("org", "alice", mcpSlack)

	// The session works: a plain tools/call reaches the app.
	before := g.fake.MCPStats().ToolCalls
	status, _, body := g.mcpPost("org", "alice", mcpSlack, id, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"once"}}}`)
	if status != http.StatusOK || !strings.Contains(string(body), "once") {
		t.Fatalf("a plain tools/call: %d %s", status, body)
	}
	if after := g.fake.MCPStats().ToolCalls; after != before+1 {
		t.Fatalf("the plain call reached the app %d times", after-before)
	}

	for _, c := range []struct{ what, body string }{
		{"params.name twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}`},
		{"params.name twice, the denied one last", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","name":"delete_all"}}`},
		{"method twice", `{"jsonrpc":"2.0","id":5,"method":"ping","method":"tools/call","params":{"name":"echo"}}`},
		{"params twice", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"delete_all"},"params":{"name":"echo"}}`},
		{"in a batch", `[{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}]`},
	} {
		before := g.fake.MCPStats().ToolCalls
		status, hdr, body := g.mcpPost("org", "alice", mcpSlack, id, c.body)
		envelope(t, c.what, status, hdr, body, http.StatusBadRequest, "mcp_request_ambiguous")
		if after := g.fake.MCPStats().ToolCalls; after != before {
			t.Fatalf("%s: the app's server ran %d tool calls", c.what, after-before)
		}
	}
	// The denied tool named once is refused as denied.
	status, hdr, body := g.mcpPost("org", "alice", mcpSlack, id, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"delete_all"}}`)
	envelope(t, "the denied tool named once", status, hdr, body, http.StatusForbidden, "mcp_tool_denied")
}

// The aggregate endpoint's HTTP-level errors are the gateway's JSON
// envelope, not the MCP SDK's plain text. Before issue 22 the SDK's
// "session not found" and friends went out as text/plain.
func TestMCPAggregateErrorsAreEnvelopes(t *testing.T) {
	g := startMCPGateway(t, "")
	id := g.mcpInitialize("org", "alice", "")
	for _, c := range []struct {
		what   string
		r      request
		status int
		code   string
	}{
		{"an unknown session", request{method: http.MethodPost, header: http.Header{"Content-Type": {"application/json"},
			"Accept": {"application/json, text/event-stream"}, "Mcp-Session-Id": {"no-such-session"}},
			body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`}, http.StatusNotFound, "mcp_session_not_found"},
		{"GET of an unknown session", request{header: http.Header{"Accept": {"text/event-stream"}, "Mcp-Session-Id": {"no-such-session"}}},
			http.StatusNotFound, "mcp_session_not_found"},
		{"DELETE of an unknown session", request{method: http.MethodDelete, header: http.Header{"Mcp-Session-Id": {"no-such-session"}}},
			http.StatusNotFound, "mcp_session_not_found"},
		{"a wrong method", request{method: http.MethodPut, header: http.Header{"Content-Type": {"application/json"}},
			body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`}, http.StatusMethodNotAllowed, "method_not_allowed"},
		{"a body that is not JSON", request{method: http.MethodPost, header: http.Header{"Content-Type": {"text/plain"},
			"Accept": {"application/json, text/event-stream"}, "Mcp-Session-Id": {id}}, body: "ping"}, http.StatusBadRequest, "bad_request"},
		{"GET without a session", request{header: http.Header{"Accept": {"text/event-stream"}}}, http.StatusBadRequest, "bad_request"},
		{"GET not accepting SSE", request{header: http.Header{"Accept": {"application/json"}, "Mcp-Session-Id": {id}}},
			http.StatusBadRequest, "bad_request"},
	} {
		c.r.path, c.r.tenant, c.r.user = "/zapier/mcp/", "org", "alice"
		status, hdr, body := g.do(c.r)
		envelope(t, c.what, status, hdr, body, c.status, c.code)
	}
	// The session the errors did not touch still answers; once deleted it
	// is gone, in the envelope too.
	if status, body := g.mcpPing("org", "alice", "", id); status != http.StatusOK {
		t.Fatalf("ping: %d %s", status, body)
	}
	if status, _, body := g.do(request{method: http.MethodDelete, path: "/zapier/mcp/", tenant: "org", user: "alice",
		header: http.Header{"Mcp-Session-Id": {id}}}); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	status, hdr, body := g.mcpPost("org", "alice", "", id, `{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	envelope(t, "a deleted session", status, hdr, body, http.StatusNotFound, "mcp_session_not_found")
}
