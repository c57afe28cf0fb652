package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Issue #26 item 3: through the aggregate root, what an app's tool call
// produces besides its result reaches the agent (progress, log messages,
// sampling and elicitation requests and their answers, cancellation), an
// app stream closed mid-call is resumed, and a large call arrives whole.
// The app is an MCP server of the test's own (the official Go SDK) behind
// the fake's token check.

const (
	mcpRelayApp   = "RelayAPI"
	mcpRelayOld   = "RelayOldAPI" // speaks 2025-11-25 only: SSE polling (SEP-1699)
	relayLogLevel = "info"
)

type relayArgs struct {
	N      int    `json:"n,omitempty"`
	Data   string `json:"data,omitempty"`
	Digest string `json:"digest,omitempty"`
}

// relayUpstream counts what its tools sent and saw.
type relayUpstream struct {
	mu        sync.Mutex
	progress  int // progress notifications sent
	logs      int // log messages sent at relayLogLevel or above
	answers   []string
	started   chan struct{}
	cancelled chan struct{}
}

func newRelayServer(u *relayUpstream, versions ...string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "relay", Version: "1"},
		&mcp.ServerOptions{Capabilities: &mcp.ServerCapabilities{Logging: &mcp.LoggingCapabilities{}, Tools: &mcp.ToolCapabilities{}},
			SupportedProtocolVersions: versions})
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	fail := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(s, &mcp.Tool{Name: "progress"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayArgs) (*mcp.CallToolResult, any, error) {
		tok := req.Params.GetProgressToken()
		for i := 1; i <= in.N && tok != nil; i++ {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: float64(in.N)}); err == nil {
				u.mu.Lock()
				u.progress++
				u.mu.Unlock()
			}
			if req.Extra != nil && req.Extra.CloseSSEStream != nil && in.Data == "poll" {
				req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: time.Millisecond})
			}
		}
		return text("done"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "log"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayArgs) (*mcp.CallToolResult, any, error) {
		for i := 1; i <= in.N; i++ {
			_ = req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "debug", Data: fmt.Sprintf("debug %d", i)})
			if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "warning", Data: fmt.Sprintf("warning %d", i)}); err == nil {
				u.mu.Lock()
				u.logs++
				u.mu.Unlock()
			}
		}
		return text("logged"), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "sample"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayArgs) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{MaxTokens: 10,
			Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "say hi"}}}})
		if err != nil {
			return fail("sampling: " + err.Error()), nil, nil
		}
		tc, _ := res.Content.(*mcp.TextContent)
		if tc == nil {
			return fail("sampling: not text"), nil, nil
		}
		u.mu.Lock()
		u.answers = append(u.answers, "sampled "+tc.Text)
		u.mu.Unlock()
		return text("sampled: " + tc.Text), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "ask"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayArgs) (*mcp.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "your name?",
			RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}})
		if err != nil {
			return fail("elicit: " + err.Error()), nil, nil
		}
		u.mu.Lock()
		u.answers = append(u.answers, fmt.Sprintf("elicited %s %v", res.Action, res.Content["name"]))
		u.mu.Unlock()
		return text(fmt.Sprintf("%s %v", res.Action, res.Content["name"])), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "digest"}, func(ctx context.Context, req *mcp.CallToolRequest, in relayArgs) (*mcp.CallToolResult, any, error) {
		sum := sha256.Sum256([]byte(in.Data))
		if hex.EncodeToString(sum[:]) != in.Digest {
			return fail(fmt.Sprintf("digest mismatch: %d bytes arrived", len(in.Data))), nil, nil
		}
		return text(fmt.Sprintf("whole: %d bytes", len(in.Data))), nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "wait"}, func(ctx context.Context, req *mcp.CallToolRequest, _ relayArgs) (*mcp.CallToolResult, any, error) {
		u.started <- struct{}{}
		<-ctx.Done()
		u.cancelled <- struct{}{}
		return nil, nil, ctx.Err()
	})
	return s
}

// relayAgent is an agent with sampling and elicitation handlers that
// counts the notifications it receives.
type relayAgent struct {
	mu       sync.Mutex
	changed  chan struct{}
	progress int
	logs     []string
}

func (a *relayAgent) got(f func()) {
	a.mu.Lock()
	f()
	if a.changed != nil {
		close(a.changed)
	}
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// waitFor waits until cond holds: the SDK client hands notifications to
// its handlers apart from the results.
func (a *relayAgent) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		a.mu.Lock()
		if cond() {
			a.mu.Unlock()
			return
		}
		if a.changed == nil {
			a.changed = make(chan struct{})
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s never came", what)
		}
	}
}

func (a *relayAgent) options() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) {
			a.got(func() { a.progress++ })
		},
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			a.got(func() { a.logs = append(a.logs, fmt.Sprint(r.Params.Data)) })
		},
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "hi from the agent"}}, nil
		},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Alice"}}, nil
		},
	}
}

func TestMCPAggregateRelaysToolCalls(t *testing.T) {
	g := startMCPGateway(t, "")
	up := &relayUpstream{started: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
	g.fake.RegisterMCPAppServer(mcpRelayApp, "Relay", newRelayServer(up), nil)
	g.fake.RegisterMCPAppServer(mcpRelayOld, "Relay (2025)", newRelayServer(up, "2025-11-25"),
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
	g.mcpAuthorize("org", "alice", mcpRelayApp)
	g.mcpAuthorize("org", "alice", mcpRelayOld)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	agent := &relayAgent{}
	s := g.mustMCPSession(ctx, "org", "alice", "", agent.options(), sessionful)

	// Progress: as many notifications reach the agent as the app sent.
	params := &mcp.CallToolParams{Name: mcpRelayApp + "__progress", Arguments: map[string]any{"n": 5}}
	params.SetProgressToken("p1")
	if got := callText(t, ctx, s, params); got != "done" {
		t.Fatalf("progress: %q", got)
	}
	agent.waitFor(t, "5 progress notifications", func() bool { return agent.progress >= 5 })

	// Logging at the agent's level: what the app sent at it or above.
	if err := s.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: relayLogLevel}); err != nil {
		t.Fatal(err)
	}
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpRelayApp + "__log", Arguments: map[string]any{"n": 3}}); got != "logged" {
		t.Fatalf("log: %q", got)
	}
	agent.waitFor(t, "3 log messages", func() bool { return len(agent.logs) >= 3 })

	// Sampling and elicitation answered by the agent reach the app's tool.
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpRelayApp + "__sample"}); got != "sampled: hi from the agent" {
		t.Fatalf("sample: %q", got)
	}
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpRelayApp + "__ask"}); got != "accept Alice" {
		t.Fatalf("ask: %q", got)
	}

	// The 2025-11-25 app closes its stream after each event (SEP-1699):
	// the gateway resumes it and the call succeeds with every event.
	params = &mcp.CallToolParams{Name: mcpRelayOld + "__progress", Arguments: map[string]any{"n": 3, "data": "poll"}}
	params.SetProgressToken("p2")
	if got := callText(t, ctx, s, params); got != "done" {
		t.Fatalf("polled progress: %q", got)
	}
	agent.waitFor(t, "8 progress notifications", func() bool { return agent.progress >= 8 })

	// A 2 MiB call arrives whole.
	data := strings.Repeat("0123456789abcdef", 2<<20/16)
	sum := sha256.Sum256([]byte(data))
	if got := callText(t, ctx, s, &mcp.CallToolParams{Name: mcpRelayApp + "__digest",
		Arguments: map[string]any{"data": data, "digest": hex.EncodeToString(sum[:])}}); got != fmt.Sprintf("whole: %d bytes", len(data)) {
		t.Fatalf("digest: %q", got)
	}

	// The agent cancels a call: the app's tool is cancelled.
	callCtx, cancelCall := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.CallTool(callCtx, &mcp.CallToolParams{Name: mcpRelayApp + "__wait"})
		done <- err
	}()
	<-up.started
	cancelCall()
	select {
	case <-up.cancelled:
	case <-ctx.Done():
		t.Fatal("the cancellation never reached the app")
	}
	if err := <-done; err == nil {
		t.Fatal("a cancelled call succeeded")
	}

	// One more round trip, then the counts are equal: nothing lost, nothing
	// doubled (a resumed stream replays nothing twice).
	if err := s.Ping(ctx, nil); err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	agent.mu.Lock()
	defer agent.mu.Unlock()
	if agent.progress != up.progress || up.progress != 8 {
		t.Errorf("progress notifications: the app sent %d, the agent got %d", up.progress, agent.progress)
	}
	if len(agent.logs) != up.logs || up.logs != 3 {
		t.Errorf("log messages: the app sent %d at %s or above, the agent got %v", up.logs, relayLogLevel, agent.logs)
	}
	if got := strings.Join(up.answers, ","); got != "sampled hi from the agent,elicited accept Alice" {
		t.Errorf("the app got the answers %q", got)
	}
}

// A call larger than the MCP transport takes (4 MiB) is refused whole
// with the gateway's envelope, never cut.
func TestMCPAggregateRefusesTooLargeCall(t *testing.T) {
	g := startMCPGateway(t, "")
	g.mcpAuthorize("org", "alice", mcpSlack)
	id := g.mcpInitialize("org", "alice", "")
	body := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"` + mcpSlack + `__echo","arguments":{"text":"` +
		strings.Repeat("x", 5<<20) + `"}}}`
	status, hdr, resp := g.mcpPost("org", "alice", "", id, body)
	envelope(t, "a 5 MiB tools/call", status, hdr, resp, http.StatusRequestEntityTooLarge, "mcp_request_too_large")
}
