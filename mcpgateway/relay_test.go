package mcpgateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// relayApp is an app's SDK MCP server whose tools use what a tool call can
// produce besides its result: progress, log messages, sampling and
// elicitation requests, a stream closed mid-call (SEP-1699), a large
// argument, cancellation.
type relayApp struct {
	cancelled chan struct{} // the "wait" tool's context ended
	started   chan struct{} // the "wait" tool started
}

type relayIn struct {
	N      int    `json:"n,omitempty"`
	Data   string `json:"data,omitempty"`
	Digest string `json:"digest,omitempty"`
}

func newRelayApp(t *testing.T, token string, versions ...string) (*relayApp, *httptest.Server) {
	t.Helper()
	ra := &relayApp{cancelled: make(chan struct{}, 4), started: make(chan struct{}, 4)}
	s := mcp.NewServer(&mcp.Implementation{Name: "relay", Version: "1"},
		&mcp.ServerOptions{Capabilities: &mcp.ServerCapabilities{Logging: &mcp.LoggingCapabilities{}, Tools: &mcp.ToolCapabilities{}},
			SupportedProtocolVersions: versions})
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(s, &mcp.Tool{Name: "progress"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayIn) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		if tok == nil {
			return text("no progress token"), nil, nil
		}
		for i := 1; i <= in.N; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: float64(in.N), Message: fmt.Sprintf("step %d", i)}); err != nil {
				return nil, nil, err
			}
		}
		return text("done"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "log"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayIn) (*mcp.CallToolResult, any, error) {
		for i := 1; i <= in.N; i++ {
			_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Logger: "app", Data: fmt.Sprintf("info %d", i)})
			_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "debug", Logger: "app", Data: fmt.Sprintf("debug %d", i)})
		}
		return text("logged"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "sample"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayIn) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10,
			Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "say hi"}}}})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "sampling: " + err.Error()}}}, nil, nil
		}
		tc, _ := res.Content.(*mcp.TextContent)
		if tc == nil {
			return text("sampled: not text"), nil, nil
		}
		return text("sampled: " + tc.Text), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "ask"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayIn) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "your name?",
			RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}})
		if err != nil {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "elicit: " + err.Error()}}}, nil, nil
		}
		return text(fmt.Sprintf("%s %v", res.Action, res.Content["name"])), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "poll"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayIn) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= in.N; i++ {
			if tok != nil {
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i)})
			}
			if req.Extra != nil && req.Extra.CloseSSEStream != nil {
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: time.Millisecond})
			}
		}
		return text("polled"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "digest"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayIn) (*mcp.CallToolResult, any, error) {
		sum := sha256.Sum256([]byte(in.Data))
		if got := hex.EncodeToString(sum[:]); got != in.Digest {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("digest mismatch: %d bytes", len(in.Data))}}}, nil, nil
		}
		return text(fmt.Sprintf("whole: %d bytes", len(in.Data))), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "wait"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayIn) (*mcp.CallToolResult, any, error) {
		ra.started <- struct{}{}
		<-ctx.Done()
		ra.cancelled <- struct{}{}
		return nil, nil, ctx.Err()
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil), PropagateRequestCancellation: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return ra, srv
}

// relayFront serves an Aggregator whose user alice authorized the relay
// app as "App".
func relayFront(t *testing.T, versions ...string) (*relayApp, *httptest.Server) {
	t.Helper()
	ra, srv := newRelayApp(t, "at-relay", versions...)
	store := newStore(t, newMemKV(), "0123456789abcdef-secret")
	tokens := NewTokens(store, nil, time.Second, nil)
	if err := tokens.Save(context.Background(), alice, &Record{App: "App", ServerURL: srv.URL, AccessToken: "at-relay", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	agg := &Aggregator{Tokens: tokens}
	t.Cleanup(agg.Close)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), Identity{Tenant: "org", User: r.URL.Query().Get("user")})))
	}))
	t.Cleanup(front.Close)
	return ra, front
}

// relayClient is an agent with sampling and elicitation handlers, which
// counts what it receives.
type relayClient struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and renewed on each message
	progress []string
	logs     []string
	sampled  int
	elicited int
}

func (rc *relayClient) got() {
	if rc.changed != nil {
		close(rc.changed)
	}
	rc.changed = make(chan struct{})
}

// waitFor waits until cond holds (checked with rc.mu held): the SDK client
// hands notifications to its handlers apart from the results.
func (rc *relayClient) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		rc.mu.Lock()
		if cond() {
			rc.mu.Unlock()
			return
		}
		if rc.changed == nil {
			rc.changed = make(chan struct{})
		}
		ch := rc.changed
		rc.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			rc.mu.Lock()
			defer rc.mu.Unlock()
			t.Fatalf("%s: never came (progress %v, logs %v)", what, rc.progress, rc.logs)
		}
	}
}

// sessionful is the newest revision with sessions (2025-11-25): what an
// app asks of the agent inside a tool call (sampling, elicitation) and the
// agent's log level are relayed over the agent's session; a 2026-07-28
// agent has none (its multi round-trip requests are not relayed yet).
var sessionful = &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"}

func (rc *relayClient) connect(t *testing.T, front *httptest.Server, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	if opts == nil {
		opts = &mcp.ClientOptions{}
	}
	opts.ProgressNotificationHandler = func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
		rc.mu.Lock()
		rc.progress = append(rc.progress, fmt.Sprintf("%v:%v", r.Params.ProgressToken, r.Params.Progress))
		rc.got()
		rc.mu.Unlock()
	}
	opts.LoggingMessageHandler = func(_ context.Context, r *mcp.LoggingMessageRequest) {
		rc.mu.Lock()
		rc.logs = append(rc.logs, fmt.Sprintf("%s:%v", r.Params.Level, r.Params.Data))
		rc.got()
		rc.mu.Unlock()
	}
	opts.CreateMessageHandler = func(_ context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
		rc.mu.Lock()
		rc.sampled++
		rc.mu.Unlock()
		return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "hi from the agent"}}, nil
	}
	opts.ElicitationHandler = func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		rc.mu.Lock()
		rc.elicited++
		rc.mu.Unlock()
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Alice"}}, nil
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, opts)
	s, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: front.URL + "?user=alice", MaxRetries: -1, DisableStandaloneSSE: true}, sessionful)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func relayText(t *testing.T) func(res *mcp.CallToolResult, err error) string {
	t.Helper()
	return func(res *mcp.CallToolResult, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("tools/call: %v", err)
		}
		if len(res.Content) != 1 {
			t.Fatalf("tools/call result %+v", res)
		}
		tc, ok := res.Content[0].(*mcp.TextContent)
		if !ok {
			t.Fatalf("content %T", res.Content[0])
		}
		if res.IsError {
			t.Fatalf("tool error: %s", tc.Text)
		}
		return tc.Text
	}
}

// Every protocol revision the upstream may speak: the relays work for each.
var relayVersions = [][]string{nil, {"2025-11-25"}, {"2025-06-18"}}

func TestAggregateRelaysProgressAndLogs(t *testing.T) {
	for _, versions := range relayVersions {
		t.Run(fmt.Sprint(versions), func(t *testing.T) {
			_, front := relayFront(t, versions...)
			rc := &relayClient{}
			s := rc.connect(t, front, nil)
			ctx := context.Background()
			params := &mcp.CallToolParams{Name: "App__progress", Arguments: map[string]any{"n": 3}}
			params.SetProgressToken("mine")
			relayText(t)(s.CallTool(ctx, params))
			rc.waitFor(t, "3 progress notifications", func() bool { return len(rc.progress) >= 3 })
			// No level set: no log messages; then info and above only.
			relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "App__log", Arguments: map[string]any{"n": 2}}))
			if err := s.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
				t.Fatal(err)
			}
			relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "App__log", Arguments: map[string]any{"n": 2}}))
			rc.waitFor(t, "2 log messages", func() bool { return len(rc.logs) >= 2 })
			// One more round trip: anything sent in excess is in by now.
			if err := s.Ping(ctx, nil); err != nil {
				t.Fatal(err)
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if got := strings.Join(rc.progress, ","); got != "mine:1,mine:2,mine:3" {
				t.Errorf("progress %q, want mine:1,mine:2,mine:3", got)
			}
			if got := strings.Join(rc.logs, ","); got != "info:info 1,info:info 2" {
				t.Errorf("logs %q, want info:info 1,info:info 2", got)
			}
		})
	}
}

func TestAggregateRelaysSamplingAndElicitation(t *testing.T) {
	for _, versions := range relayVersions {
		t.Run(fmt.Sprint(versions), func(t *testing.T) {
			_, front := relayFront(t, versions...)
			rc := &relayClient{}
			s := rc.connect(t, front, nil)
			ctx := context.Background()
			if got := relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "App__sample"})); got != "sampled: hi from the agent" {
				t.Errorf("sample: %q", got)
			}
			if got := relayText(t)(s.CallTool(ctx, &mcp.CallToolParams{Name: "App__ask"})); got != "accept Alice" {
				t.Errorf("ask: %q", got)
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if rc.sampled != 1 || rc.elicited != 1 {
				t.Errorf("the agent answered %d sampling and %d elicitation requests, want 1 and 1", rc.sampled, rc.elicited)
			}
		})
	}
}

// An agent without the capabilities gets a tool error at once, not a hang.
func TestAggregateSamplingWithoutCapability(t *testing.T) {
	_, front := relayFront(t)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{Capabilities: &mcp.ClientCapabilities{}})
	s, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: front.URL + "?user=alice", MaxRetries: -1, DisableStandaloneSSE: true}, sessionful)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "App__sample"})
	if err != nil || !res.IsError {
		t.Fatalf("sampling without the capability: %+v %v, want a tool error", res, err)
	}
}

// The app closes its stream after each event (SEP-1699): the gateway
// resumes it with Last-Event-ID and the call succeeds.
func TestAggregateResumesUpstreamStream(t *testing.T) {
	_, front := relayFront(t, "2025-11-25")
	rc := &relayClient{}
	s := rc.connect(t, front, nil)
	params := &mcp.CallToolParams{Name: "App__poll", Arguments: map[string]any{"n": 3}}
	params.SetProgressToken(7)
	if got := relayText(t)(s.CallTool(context.Background(), params)); got != "polled" {
		t.Fatalf("poll: %q", got)
	}
	rc.waitFor(t, "3 progress notifications", func() bool { return len(rc.progress) >= 3 })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if got := strings.Join(rc.progress, ","); got != "7:1,7:2,7:3" {
		t.Errorf("progress %q", got)
	}
}

// A 2 MiB argument reaches the app whole.
func TestAggregatePassesLargeCallsWhole(t *testing.T) {
	_, front := relayFront(t)
	s := (&relayClient{}).connect(t, front, nil)
	data := strings.Repeat("0123456789abcdef", 2<<20/16)
	sum := sha256.Sum256([]byte(data))
	got := relayText(t)(s.CallTool(context.Background(), &mcp.CallToolParams{Name: "App__digest",
		Arguments: map[string]any{"data": data, "digest": hex.EncodeToString(sum[:])}}))
	if got != fmt.Sprintf("whole: %d bytes", len(data)) {
		t.Fatalf("digest: %q", got)
	}
}

// The agent cancels a call: the app's handler is cancelled.
func TestAggregateRelaysCancellation(t *testing.T) {
	ra, front := relayFront(t)
	s := (&relayClient{}).connect(t, front, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "App__wait"})
		done <- err
	}()
	<-ra.started
	cancel()
	<-ra.cancelled
	if err := <-done; err == nil {
		t.Fatal("a cancelled call succeeded")
	}
	// The session goes on.
	if got := relayText(t)(s.CallTool(context.Background(), &mcp.CallToolParams{Name: "App__digest",
		Arguments: map[string]any{"data": "x", "digest": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}})); got != "whole: 1 bytes" {
		t.Fatalf("after the cancel: %q", got)
	}
}

// The counter finds the messages to relay in an SSE stream however its
// reads split it: notifications and requests, not responses, not events
// too large to be one.
func TestSSECounterCountsRelayedMessages(t *testing.T) {
	big := strings.Repeat("x", maxCountedEvent)
	stream := "id: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"a\",\"progress\":1}}\r\n\r\n" +
		": comment\n\n" +
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"sampling/createMessage\",\"params\":{}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"" + big + "\"}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"\\\"method\\\":\\\"notifications/progress\\\"\"}]}}\n\n"
	for _, chunk := range []int{1, 7, 4096, len(stream)} {
		up := &upSession{}
		c := &sseCounter{ReadCloser: io.NopCloser(&chunkReader{s: stream, n: chunk}), up: up}
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatal(err)
		}
		if up.seen != 2 {
			t.Errorf("reads of %d bytes: counted %d messages to relay, want 2", chunk, up.seen)
		}
	}
}

type chunkReader struct {
	s string
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.s)
	r.s = r.s[n:]
	return n, nil
}
