package mcpgateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// policyServer is an SDK MCP server with an allowed, a denied and a
// failing tool; jsonResponse picks JSON or SSE responses.
func policyServer(t *testing.T, jsonResponse bool) *httptest.Server {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "app", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_all"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return nil, nil, errors.New("the app refused")
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: jsonResponse})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// proxyFront serves p for alice and app "A" at srv.
func proxyFront(t *testing.T, upstreamURL string, policy Policy, observe func(Call)) *httptest.Server {
	t.Helper()
	tokens, _ := newTokens(t, &upstream{}, nil)
	_ = tokens.Save(context.Background(), alice, &Record{App: "A", ServerURL: upstreamURL, AccessToken: "at", Expiry: time.Now().Add(time.Hour)})
	p := &Proxy{Tokens: tokens, Policy: policy, Observe: func(_ context.Context, _ Identity, c Call) {
		if observe != nil {
			observe(c)
		}
	}}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Serve(w, r, alice, "A"); errors.Is(err, ErrToolDenied) {
			http.Error(w, "denied", http.StatusForbidden)
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	t.Cleanup(front.Close)
	return front
}

// On the per-app route a denied tool is neither listed nor callable, with
// JSON and with SSE responses; a tool result with isError is seen as such.
func TestProxyFiltersToolsListAndSeesToolErrors(t *testing.T) {
	for _, mode := range []struct {
		name string
		json bool
	}{{"sse", false}, {"json", true}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			calls := make(chan Call, 16)
			front := proxyFront(t, policyServer(t, mode.json).URL,
				func(_ Identity, app, tool string) bool { return app+"__"+tool != "A__delete_all" },
				func(c Call) {
					if c.RPCMethod == "tools/call" {
						calls <- c
					}
				})
			c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
			s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: front.URL, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			res, err := s.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range res.Tools {
				names = append(names, tool.Name)
			}
			if !slices.Equal(names, []string{"echo", "fail"}) {
				t.Fatalf("listed %v, want echo and fail", names)
			}
			if r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil || r.IsError {
				t.Fatalf("echo: %+v %v", r, err)
			}
			if r, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "fail"}); err != nil || !r.IsError {
				t.Fatalf("fail: %+v %v", r, err)
			}
			// Last: the SDK client closes its session on the 403.
			if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "delete_all"}); err == nil {
				t.Fatal("a denied tool was callable")
			}
			// A call is observed when its response stream ended, which may
			// be after the client saw the result.
			var got []string
			for range 3 {
				select {
				case c := <-calls:
					got = append(got, fmt.Sprintf("%s:%v:%v", c.Tool, c.ToolError, c.Err != nil))
				case <-time.After(10 * time.Second):
					t.Fatalf("observed only %v", got)
				}
			}
			slices.Sort(got)
			if want := []string{"delete_all:false:true", "echo:false:false", "fail:true:false"}; !slices.Equal(got, want) {
				t.Fatalf("observed %v, want %v", got, want)
			}
		})
	}
}

// A batch cannot smuggle a denied tools/call past the policy.
func TestProxyChecksEveryMessageOfABatch(t *testing.T) {
	// The test front answers 403 for a denied tool, 502 for other refusals.
	front := proxyFront(t, policyServer(t, true).URL, func(_ Identity, _, tool string) bool { return tool != "delete_all" }, nil)
	body := `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}},` +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}]`
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("batch with a denied tool: %d", resp.StatusCode)
	}
}

// feed writes s to ri in chunks of n bytes and returns what came out,
// chunk by chunk.
func feed(t *testing.T, ri *responseInspector, s string, n int) []string {
	t.Helper()
	var out []string
	ri.out = func(p []byte) error { out = append(out, string(p)); return nil }
	for len(s) > 0 {
		k := min(n, len(s))
		if err := ri.Write([]byte(s[:k])); err != nil {
			t.Fatal(err)
		}
		s = s[k:]
	}
	if err := ri.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func inspectorFor(t *testing.T, contentType, requestBody string, allowed func(string) bool) *responseInspector {
	t.Helper()
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {contentType}}}
	ri := newResponseInspector(resp, parseRPC([]byte(requestBody)), allowed, false)
	if ri == nil {
		t.Fatal("no inspector")
	}
	return ri
}

func denyDelete(tool string) bool { return tool != "delete_all" }

// Only the tools/list response is held and rewritten; a notification
// before it goes on as soon as its method is known, byte by byte.
func TestInspectorRewritesOnlyTheToolsListResponse(t *testing.T) {
	notification := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"data\":\"" + strings.Repeat("x", 100) + "\"}}\n\n"
	list := "event: message\r\nid: 7\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"L\",\"result\":{\"tools\":[{\"name\":\"echo\"},{\"name\":\"delete_all\"}],\"nextCursor\":\"c\"}}\r\n\r\n"
	ri := inspectorFor(t, "text/event-stream", `{"jsonrpc":"2.0","id":"L","method":"tools/list"}`, denyDelete)
	out := feed(t, ri, notification+list, 1)
	all := strings.Join(out, "")
	if !strings.HasPrefix(all, notification) {
		t.Fatalf("the notification was changed: %q", all)
	}
	// Byte-by-byte: the notification came out before it was complete.
	if len(out) < 50 {
		t.Fatalf("the notification was held whole (%d writes)", len(out))
	}
	rest := strings.TrimPrefix(all, notification)
	want := "event: message\nid: 7\ndata: {\"id\":\"L\",\"jsonrpc\":\"2.0\",\"result\":{\"nextCursor\":\"c\",\"tools\":[{\"name\":\"echo\"}]}}\n\n"
	if rest != want {
		t.Fatalf("rewritten event\n%q\nwant\n%q", rest, want)
	}
}

// A large tools/call result streams through (nothing held), and its
// isError is noticed at the end, across chunk boundaries.
func TestInspectorStreamsLargeResultsAndSeesIsError(t *testing.T) {
	big := strings.Repeat("y", 1<<20)
	for _, isErr := range []bool{false, true} {
		msg := fmt.Sprintf(`{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"%s \"isError\":true"}],"isError":%v}}`, big, isErr)
		ri := inspectorFor(t, "application/json", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`, denyDelete)
		out := feed(t, ri, msg, 4096)
		if len(out) < 200 || strings.Join(out, "") != msg {
			t.Fatalf("the result was held or changed (%d writes)", len(out))
		}
		if ri.toolError != isErr {
			t.Fatalf("toolError = %v, want %v", ri.toolError, isErr)
		}
	}
	// isError of a response to another request, or inside the content, is
	// not this call's.
	ri := inspectorFor(t, "text/event-stream", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`, nil)
	feed(t, ri, "data: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"isError\":true}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[{\"isError\":true}]}}\n\n", 7)
	if ri.toolError {
		t.Fatal("toolError from another message")
	}
}

// A JSON batch answering a tools/list among other requests is filtered.
func TestInspectorFiltersBatches(t *testing.T) {
	ri := inspectorFor(t, "application/json", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]`, denyDelete)
	out := strings.Join(feed(t, ri, `[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_all"},{"name":"echo"}]}}]`, 5), "")
	if out != `[{"jsonrpc":"2.0","id":1,"result":{}},{"id":2,"jsonrpc":"2.0","result":{"tools":[{"name":"echo"}]}}]` {
		t.Fatalf("batch %s", out)
	}
}

// A resumed stream (GET with Last-Event-ID) replays responses to requests
// this proxy never saw: any tools/list result in it is filtered.
func TestInspectorFiltersResumedStreams(t *testing.T) {
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}}
	ri := newResponseInspector(resp, rpcRequest{}, denyDelete, true)
	out := strings.Join(feed(t, ri, "id: 9\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"delete_all\"}]}}\n\n", 3), "")
	if strings.Contains(out, "delete_all") || !strings.Contains(out, `"tools":[]`) {
		t.Fatalf("resumed stream %q", out)
	}
}

// A tools/list response too large to hold is cut, never passed unfiltered.
func TestInspectorCutsAnUnfilterableList(t *testing.T) {
	ri := inspectorFor(t, "text/event-stream", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, denyDelete)
	var sent strings.Builder
	ri.out = func(p []byte) error { sent.Write(p); return nil }
	head := `data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all","description":"`
	if err := ri.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; err == nil && i < 10; i++ {
		err = ri.Write([]byte(strings.Repeat("z", 1<<20)))
	}
	if !errors.Is(err, errHeldTooLarge) || strings.Contains(sent.String(), "delete_all") {
		t.Fatalf("err %v, sent %d bytes", err, sent.Len())
	}
}

// Through the proxy, an SSE notification before the tools/list response
// reaches the client before the upstream sends the response.
func TestProxyFilterDoesNotHoldOtherEvents(t *testing.T) {
	seen := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-seen:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"echo\"},{\"name\":\"delete_all\"}]}}\n\n")
	}))
	defer srv.Close()
	front := proxyFront(t, srv.URL, func(_ Identity, _, tool string) bool { return tool != "delete_all" }, nil)
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for range 2 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	close(seen)
	rest, _ := io.ReadAll(br)
	if strings.Contains(string(rest), "delete_all") || !strings.Contains(string(rest), `"name":"echo"`) {
		t.Fatalf("the list came through as %q", rest)
	}
}

// What is not JSON in a stream answering a tools/list passes unchanged:
// no client reads a tools list from it, and the stream goes on.
func TestInspectorPassesNonJSONEvents(t *testing.T) {
	ri := inspectorFor(t, "text/event-stream", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, denyDelete)
	in := ": keep-alive\n\ndata: not json\n\nretry: 100\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_all\"}]}}\n\n"
	out := strings.Join(feed(t, ri, in, 2), "")
	want := ": keep-alive\n\ndata: not json\n\nretry: 100\n\ndata: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[]}}\n\n"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
}

// Whatever the MCP server sends, in whatever chunks, the inspector does
// not panic.
func FuzzInspector(f *testing.F) {
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_all\"}],\"isError\":true}}\n\n"), true, 3)
	f.Add([]byte(`[{"id":1,"result":{"isError":true}},{"method":"x","id":1}]`), false, 1)
	f.Add([]byte("data: {\"a\":[[[{\"id\":\"\\\"1\"}]]]}\r\n\r\n"), true, 5)
	f.Fuzz(func(t *testing.T, body []byte, sse bool, chunk int) {
		ct := "application/json"
		if sse {
			ct = "text/event-stream"
		}
		ri := newResponseInspector(&http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {ct}}},
			parseRPC([]byte(`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"x"}}]`)), denyDelete, false)
		ri.out = func([]byte) error { return nil }
		chunk = max(1, chunk%64)
		for len(body) > 0 {
			k := min(chunk, len(body))
			if ri.Write(body[:k]) != nil {
				return
			}
			body = body[k:]
		}
		_ = ri.Close()
	})
}

// With a policy, a body too large to read whole is refused, not sent
// unchecked; a tools/list response too large to filter is cut, and the
// request observed as failed.
func TestProxyRefusesWhatItCannotCheck(t *testing.T) {
	var upstreamCalls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls++
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, `data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all","description":"`)
		_, _ = io.WriteString(w, strings.Repeat("z", maxHeldMessage))
		_, _ = io.WriteString(w, "\"}]}}\n\n")
	}))
	defer srv.Close()
	observed := make(chan Call, 2)
	front := proxyFront(t, srv.URL, func(_ Identity, _, tool string) bool { return tool != "delete_all" }, func(c Call) { observed <- c })

	big := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all","arguments":{"pad":"` + strings.Repeat(" ", DefaultMaxReplayBody) + `"}}}`
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := <-observed; resp.StatusCode != http.StatusBadGateway || !errors.Is(c.Err, ErrBodyTooLarge) || upstreamCalls != 0 {
		t.Fatalf("a body too large to check: %d, %v, %d upstream calls", resp.StatusCode, c.Err, upstreamCalls)
	}

	resp, err = http.Post(front.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if c := <-observed; strings.Contains(string(body), "delete_all") || !errors.Is(c.Err, errHeldTooLarge) || c.Status != 200 {
		t.Fatalf("an unfilterable list: %d bytes through, observed %v", len(body), c.Err)
	}
}

// Names are read as the MCP server reads them: exactly. A call that names
// a denied tool under "name" and an allowed one under "NAME" is denied;
// a long denied name is checked whole; a body that is not JSON-RPC is
// refused while a policy is set.
func TestProxyReadsCallsAsTheServerDoes(t *testing.T) {
	long := "delete_" + strings.Repeat("x", 200)
	// The test front answers 403 for a denied tool, 502 for other refusals.
	front := proxyFront(t, policyServer(t, true).URL, func(_ Identity, _, tool string) bool {
		return tool != "delete_all" && tool != long
	}, nil)
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","NAME":"echo"}}`, http.StatusForbidden},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"delete_all","name":"echo"}}`, 0}, // echo: passed on
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + long + `"}}`, http.StatusForbidden},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}} trailing`, http.StatusBadGateway},
		{`"tools/call"`, http.StatusBadGateway},
	} {
		resp, err := http.Post(front.URL, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		passedOn := resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadGateway
		if c.want == 0 && !passedOn || c.want != 0 && resp.StatusCode != c.want {
			t.Errorf("%.60s: %d, want %d (0: passed on to the server)", c.body, resp.StatusCode, c.want)
		}
	}
}
