package mcpgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Relays of the aggregate endpoint: what an app's MCP server sends during
// a tool call besides its result (progress, log messages, sampling and
// elicitation requests, elicitation completions) reaches the agent's
// session that made the call, on that call's stream, and the agent's
// answers go back. To know which call a message belongs to, an upstream
// session serves one tool call at a time: a user's upstream sessions with
// an app are a small pool, a call takes one (or connects a new one) and
// gives it back when done.

// maxIdleUpstreams is how many idle upstream sessions a user keeps per app
// (more are connected for concurrent calls, and closed after them).
const maxIdleUpstreams = 4

// upstreamRetries is how many times an upstream stream the app closed
// without progress is resumed (Last-Event-ID); a resume that brings events
// does not count.
const upstreamRetries = 3

// upSession is one session with an app's MCP server.
type upSession struct {
	app string
	cs  *mcp.ClientSession
	// call is the tool call the session serves now, nil between calls:
	// what the app sends then is dropped.
	call atomic.Pointer[callRelay]
	// level is the log level last set at the app (logging/setLevel).
	level mcp.LoggingLevel
	// gen is the pool's generation it was connected in: a session of a
	// pool closed since is not given back.
	gen uint64

	// The SDK hands what the app sends to the handlers on a goroutine of
	// its own, so a call's result can be back before the messages that
	// preceded it are relayed: seen counts the messages to relay read off
	// the app's streams, handled those relayed; a call ends when they meet.
	mu      sync.Mutex
	seen    int64
	handled int64
	changed chan struct{}
}

// relayedMethods are the messages an upstream session relays.
var relayedMethods = map[string]bool{
	"notifications/progress": true, "notifications/message": true, "notifications/elicitation/complete": true,
	"sampling/createMessage": true, "elicitation/create": true,
}

func (up *upSession) count(seen, handled int64) {
	up.mu.Lock()
	up.seen += seen
	up.handled += handled
	if up.changed != nil {
		close(up.changed)
		up.changed = nil
	}
	up.mu.Unlock()
}

// drainBound bounds the wait for the relays of a call that has its
// result: a message miscounted must not hold the call.
const drainBound = 10 * time.Second

// drain waits until every message read off the app's streams so far has
// been relayed (or ctx ends).
func (up *upSession) drain(ctx context.Context) {
	var timeout <-chan time.Time
	for {
		up.mu.Lock()
		if up.handled >= up.seen {
			up.mu.Unlock()
			return
		}
		if up.changed == nil {
			up.changed = make(chan struct{})
		}
		ch := up.changed
		up.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(drainBound)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timeout:
			return
		}
	}
}

// relayCounter is the upstream sessions' receiving middleware: it counts
// the relayed messages handled.
func (up *upSession) relayCounter(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if relayedMethods[method] {
			up.count(0, 1)
		}
		return res, err
	}
}

// maxCountedEvent: an SSE event larger than this is not a message to relay
// (those are small); it is not decoded.
const maxCountedEvent = 64 << 10

// sseCounter reads an upstream SSE stream for the SDK and counts the
// messages to relay in it.
type sseCounter struct {
	io.ReadCloser
	up    *upSession
	line  []byte // the current line, up to maxCountedEvent
	long  bool   // the current line is longer
	data  []byte // the current event's data
	large bool   // the current event is larger than maxCountedEvent
}

func (c *sseCounter) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	buf := p[:n]
	for len(buf) > 0 {
		part, rest, eol := bytes.Cut(buf, []byte("\n"))
		buf = rest
		if room := maxCountedEvent - len(c.line); len(part) > room {
			c.line, c.long = append(c.line, part[:room]...), true
		} else {
			c.line = append(c.line, part...)
		}
		if eol {
			c.endLine()
		}
	}
	return n, err
}

// endLine takes one line of the stream: data is gathered, a blank line
// ends the event.
func (c *sseCounter) endLine() {
	line := bytes.TrimSuffix(c.line, []byte("\r"))
	switch {
	case len(line) == 0: // the event ends
		if !c.large && bytes.Contains(c.data, []byte(`"method"`)) {
			var m struct {
				Method string          `json:"method"`
				Result json.RawMessage `json:"result"`
			}
			if json.Unmarshal(c.data, &m) == nil && m.Result == nil && relayedMethods[m.Method] {
				c.up.count(1, 0)
			}
		}
		c.data, c.large = c.data[:0], false
	case bytes.HasPrefix(line, []byte("data:")):
		d := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
		if c.long || len(c.data)+len(d) > maxCountedEvent {
			c.large = true
		} else {
			c.data = append(c.data, d...)
		}
	}
	c.line, c.long = c.line[:0], false
}

// callRelay is where one upstream tool call's messages go: the agent's
// session, in the call's context (so the SDK sends them on the call's
// stream), progress under the agent's token.
type callRelay struct {
	ctx      context.Context
	session  *mcp.ServerSession
	upToken  string // the progress token sent upstream
	agentTok any    // the agent's
}

// levels are the log levels agents set with logging/setLevel, by session.
var levels sync.Map // *mcp.ServerSession → mcp.LoggingLevel

// relayMiddleware records logging/setLevel (the SDK keeps the level, but
// does not say it).
func relayMiddleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		if method == "logging/setLevel" && err == nil {
			if r, ok := req.(*mcp.ServerRequest[*mcp.SetLoggingLevelParams]); ok && r.Params != nil && r.Session != nil {
				if _, had := levels.Swap(r.Session, r.Params.Level); !had {
					go func(ss *mcp.ServerSession) { _ = ss.Wait(); levels.Delete(ss) }(r.Session)
				}
			}
		}
		return res, err
	}
}

// agentLevel is the log level the agent asked for: the request's own
// (2026-07-28 _meta) or the session's (logging/setLevel); "" sends none.
func agentLevel(req *mcp.CallToolRequest) mcp.LoggingLevel {
	if req.Params != nil {
		if v, ok := req.Params.GetMeta()["io.modelcontextprotocol/logLevel"].(string); ok {
			return mcp.LoggingLevel(v)
		}
	}
	if req.Session != nil {
		if v, ok := levels.Load(req.Session); ok {
			return v.(mcp.LoggingLevel)
		}
	}
	return ""
}

// clientOptions are the handlers of an upstream session: each passes what
// the app sends to the call the session serves.
func (up *upSession) clientOptions() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{
			Sampling:    &mcp.SamplingCapabilities{},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			c := up.call.Load()
			if c == nil || c.upToken == "" || fmt.Sprint(r.Params.ProgressToken) != c.upToken {
				return
			}
			_ = c.session.NotifyProgress(c.ctx, &mcp.ProgressNotificationParams{ProgressToken: c.agentTok,
				Progress: r.Params.Progress, Total: r.Params.Total, Message: r.Params.Message})
		},
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			if c := up.call.Load(); c != nil {
				_ = c.session.Log(c.ctx, r.Params) // the SDK applies the agent's level
			}
		},
		CreateMessageHandler: func(_ context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			c := up.call.Load()
			if c == nil {
				return nil, errNoCall
			}
			if p := c.session.InitializeParams(); p == nil || p.Capabilities == nil || p.Capabilities.Sampling == nil {
				return nil, errors.New("the agent does not support sampling")
			}
			return c.session.CreateMessage(c.ctx, r.Params)
		},
		ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			c := up.call.Load()
			if c == nil {
				return nil, errNoCall
			}
			return c.session.Elicit(c.ctx, r.Params)
		},
		ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
			if c := up.call.Load(); c != nil {
				_ = c.session.NotifyElicitationComplete(c.ctx, r.Params)
			}
		},
	}
}

// isRPCError: the app answered with a JSON-RPC error (its session is
// sound).
func isRPCError(err error) bool {
	var e *jsonrpc.Error
	return errors.As(err, &e)
}

// countRelays wraps an upstream response's body so the messages to relay
// in it are counted (SSE streams only: a JSON answer is the result alone).
func countRelays(resp *http.Response, up *upSession) {
	if up == nil || resp == nil || resp.StatusCode != http.StatusOK ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return
	}
	resp.Body = &sseCounter{ReadCloser: resp.Body, up: up}
}

var errNoCall = errors.New("no tool call in progress on this session")

// take returns an idle upstream session with app, or connects one.
func (u *userAgg) take(ctx context.Context, app string) (*upSession, error) {
	u.poolMu.Lock()
	if idle := u.pool[app]; len(idle) > 0 {
		up := idle[len(idle)-1]
		u.pool[app] = idle[:len(idle)-1]
		u.poolMu.Unlock()
		return up, nil
	}
	gen := u.poolGen
	u.poolMu.Unlock()
	up, err := u.connect(ctx, app)
	if err != nil {
		return nil, err
	}
	up.gen = gen
	return up, nil
}

// upstreams counts the user's idle upstream sessions.
func (u *userAgg) upstreams() int {
	u.poolMu.Lock()
	defer u.poolMu.Unlock()
	n := 0
	for _, idle := range u.pool {
		n += len(idle)
	}
	return n
}

// put gives up back to the pool (or closes it when the pool is full).
func (u *userAgg) put(up *upSession) {
	up.call.Store(nil)
	u.poolMu.Lock()
	if up.gen == u.poolGen && len(u.pool[up.app]) < maxIdleUpstreams {
		u.pool[up.app] = append(u.pool[up.app], up)
		up = nil
	}
	u.poolMu.Unlock()
	if up != nil {
		go up.cs.Close()
	}
}

// discard closes a broken upstream session; dropApp closes the idle ones
// with app (its authorization changed).
func (u *userAgg) discard(up *upSession) {
	up.call.Store(nil)
	go up.cs.Close()
}

func (u *userAgg) dropApp(app string) {
	u.poolMu.Lock()
	u.poolGen++
	idle := u.pool[app]
	delete(u.pool, app)
	u.poolMu.Unlock()
	for _, up := range idle {
		go up.cs.Close()
	}
}

// closeSessions closes every idle upstream session; sessions in use are
// closed when their call ends (they are not given back).
func (u *userAgg) closeSessions() {
	u.poolMu.Lock()
	pool := u.pool
	u.pool = map[string][]*upSession{}
	u.poolGen++
	u.poolMu.Unlock()
	for _, idle := range pool {
		for _, up := range idle {
			_ = up.cs.Close()
		}
	}
}

// connect opens a session with app's MCP server with the user's token.
// A stream the app closes mid-call is resumed (Last-Event-ID).
func (u *userAgg) connect(ctx context.Context, app string) (*upSession, error) {
	rec, err := u.a.Tokens.Current(ctx, u.id, app)
	if err != nil {
		return nil, err
	}
	base := u.a.Base
	if base == nil {
		base = NewTransport()
	}
	up := &upSession{app: app}
	client := mcp.NewClient(&mcp.Implementation{Name: "caddy-zapier", Version: "1.0.0"}, up.clientOptions())
	client.AddReceivingMiddleware(up.relayCounter)
	// The upstream session outlives this request, and carries none of its
	// context's values (the SDK would take the caller's protocol version
	// in them for the upstream handshake's).
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint:             rec.ServerURL,
		HTTPClient:           &http.Client{Transport: &tokenTransport{tokens: u.a.Tokens, id: u.id, app: app, base: base, up: up}},
		MaxRetries:           upstreamRetries,
		DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		var tt *authErr
		if errors.As(err, &tt) {
			return nil, ErrAuthorizationRequired
		}
		return nil, err
	}
	up.cs = cs
	return up, nil
}

// callOnce makes one tool call on up for the agent's request: its
// messages relayed, the agent's log level set at the app first.
func (u *userAgg) callOnce(ctx context.Context, up *upSession, req *mcp.CallToolRequest, route toolRoute) (*mcp.CallToolResult, error) {
	c := &callRelay{ctx: ctx, session: req.Session}
	params := &mcp.CallToolParams{Name: route.tool, Arguments: req.Params.Arguments}
	if tok := req.Params.GetProgressToken(); tok != nil && req.Session != nil {
		c.upToken, c.agentTok = fmt.Sprintf("agg-%d", u.nextTok.Add(1)), tok
		params.SetProgressToken(c.upToken)
	}
	level := agentLevel(req)
	if level != "" {
		meta := params.GetMeta()
		if meta == nil {
			meta = map[string]any{}
		}
		meta["io.modelcontextprotocol/logLevel"] = string(level)
		params.SetMeta(meta)
	}
	if req.Session != nil {
		up.call.Store(c)
	}
	if init := up.cs.InitializeResult(); level != "" && level != up.level && init != nil && init.Capabilities != nil &&
		init.Capabilities.Logging != nil && init.ProtocolVersion < "2026-07-28" {
		if err := up.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
			return nil, err
		}
		up.level = level
	}
	res, err := up.cs.CallTool(ctx, params)
	up.drain(ctx)
	return res, err
}
