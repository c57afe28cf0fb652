package mcpgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultMaxReplayBody is how much of a request body is buffered so the
// request can be replayed after a token refresh.
const DefaultMaxReplayBody = 1 << 20

// Request headers passed to the MCP server; everything else (Authorization,
// Cookie, identity headers, hop-by-hop headers) is dropped.
var passRequest = []string{"Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id"}

// Response headers passed back to the client.
var passResponse = []string{"Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Cache-Control", "Allow"}

// ErrUpstream wraps a failure to reach the MCP server.
var ErrUpstream = errors.New("mcpgateway: the MCP server could not be reached")

// ErrRetry means the token was refreshed but the request, too large to
// buffer, cannot be replayed: the client should send it again.
var ErrRetry = errors.New("mcpgateway: the MCP token was refreshed; send the request again")

// Call describes one proxied request, for metrics and audit.
type Call struct {
	App       string
	RPCMethod string // the JSON-RPC method of a single request ("" otherwise)
	Tool      string // for tools/call
	Tools     int    // tools/call messages in the request (a batch may hold several)
	Arguments json.RawMessage
	Status    int           // upstream status (0 when none)
	ToolError bool          // a tools/call result said isError: true
	Refreshed bool          // a 401 caused a refresh and a replay
	Duration  time.Duration // until the response body ended
	Err       error         // why it failed; for a response the gateway cut (a tools/list too large to filter), set with Status
}

// Proxy is a Streamable HTTP proxy to each app's MCP server.
type Proxy struct {
	Tokens *Tokens
	// Client sends upstream requests; default NewTransport in a client
	// without a timeout (SSE streams are long; the caller's context bounds
	// them).
	Client *http.Client
	// MaxReplayBody: default DefaultMaxReplayBody.
	MaxReplayBody int64
	// Observe, if set, is called once per request after the body was
	// copied (or the request failed).
	Observe func(ctx context.Context, id Identity, c Call)
	// Policy, if set, refuses a tools/call of a tool it does not allow
	// (ErrToolDenied) before anything is sent, and removes such tools
	// from tools/list responses.
	Policy Policy
	// Limit, if set, caps tools/call per user (a *LimitError).
	Limit *CallLimiter
	// StreamsPerIdentity caps an identity's GET streams and POSTs in
	// progress (each POST may answer with a stream) on the per-app routes;
	// past it a request gets ErrTooManyStreams. Default
	// DefaultStreamsPerIdentity.
	StreamsPerIdentity int
	// WriteTimeout bounds each write to the client: a client that stops
	// reading loses its response, and the upstream request ends with it.
	// Default DefaultStreamWriteTimeout.
	WriteTimeout time.Duration

	streamsMu sync.Mutex
	streams   map[Identity]int
	open      int
}

// Defaults of the per-app routes' stream bounds.
const (
	DefaultStreamsPerIdentity = 64
	DefaultStreamWriteTimeout = 30 * time.Second
)

// ErrTooManyStreams is a request past StreamsPerIdentity.
var ErrTooManyStreams = errors.New("mcpgateway: the identity has too many MCP streams open")

// takeStream counts one of id's streams, or refuses it past the cap.
func (p *Proxy) takeStream(id Identity) (func(), error) {
	limit := p.StreamsPerIdentity
	if limit <= 0 {
		limit = DefaultStreamsPerIdentity
	}
	p.streamsMu.Lock()
	defer p.streamsMu.Unlock()
	if p.streams[id] >= limit {
		return nil, ErrTooManyStreams
	}
	if p.streams == nil {
		p.streams = map[Identity]int{}
	}
	p.streams[id]++
	p.open++
	return func() {
		p.streamsMu.Lock()
		defer p.streamsMu.Unlock()
		p.open--
		if p.streams[id]--; p.streams[id] <= 0 {
			delete(p.streams, id)
		}
	}, nil
}

// OpenStreams counts the GET streams and POSTs in progress of every
// identity.
func (p *Proxy) OpenStreams() int {
	p.streamsMu.Lock()
	defer p.streamsMu.Unlock()
	return p.open
}

// ErrBodyTooLarge is a request body over MaxReplayBody while a tool policy
// or cap is configured: it cannot be checked, so it is not sent.
var ErrBodyTooLarge = errors.New("mcpgateway: the request body is too large to check against the tool policy")

// ErrBodyUnreadable is a request body that is not JSON-RPC while a tool
// policy or cap is configured: it cannot be checked, so it is not sent.
var ErrBodyUnreadable = errors.New("mcpgateway: the request body is not JSON-RPC, so the tool policy cannot check it")

// ErrDuplicateMember is a JSON-RPC message (or its params) that names a
// member twice while a tool policy or cap is configured: parsers disagree
// on which of the two counts, so the policy cannot check it.
var ErrDuplicateMember = errors.New("mcpgateway: a JSON-RPC message names a member twice, so the tool policy cannot check it")

// ErrToolDenied is a tools/call the tool policy does not allow.
var ErrToolDenied = errors.New("mcpgateway: the tool policy does not allow this tool")

// NewTransport is the upstream transport: no compression (SSE must flow as
// it comes), bounded dials and TLS handshakes, no overall timeout.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
}

// Serve proxies r for id to app's MCP server. It returns an error only when
// nothing was written yet (ErrAuthorizationRequired, ErrUpstream, ErrRetry,
// or a storage failure), so the caller can answer it; once the response has
// started it returns nil.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, id Identity, app string) error {
	start := time.Now()
	call := Call{App: app}
	err := p.serve(w, r, id, app, &call)
	if err != nil {
		call.Err = err
	}
	call.Duration = time.Since(start)
	if p.Observe != nil {
		p.Observe(r.Context(), id, call)
	}
	return err
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, id Identity, app string, call *Call) error {
	ctx := r.Context()
	if r.Method == http.MethodGet || r.Method == http.MethodPost {
		release, err := p.takeStream(id)
		if err != nil {
			return err
		}
		defer release()
	}
	rec, err := p.Tokens.Current(ctx, id, app)
	if err != nil {
		return err
	}
	limit := p.MaxReplayBody
	if limit <= 0 {
		limit = DefaultMaxReplayBody
	}
	var buffered []byte
	replayable := true
	var rest io.Reader
	if r.Body != nil && r.Body != http.NoBody {
		buffered, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			return err
		}
		if int64(len(buffered)) > limit {
			replayable, rest = false, r.Body
		}
	}
	// A body too large to read whole, or that is not JSON-RPC, cannot be
	// checked against the tool policy or the cap: it is refused rather
	// than let through unchecked (the MCP server's parser might read
	// something in it).
	checking := p.Policy != nil || p.Limit.active()
	if !replayable && checking {
		return ErrBodyTooLarge
	}
	// A batch's messages are checked too: a denied tool is not callable
	// in any form.
	rpc := parseRPC(buffered)
	if !rpc.ok && checking {
		return ErrBodyUnreadable
	}
	if rpc.duplicate && checking {
		return ErrDuplicateMember
	}
	if err := checkRoutingHeaders(r.Header, rpc); err != nil {
		return err
	}
	call.RPCMethod, call.Tool, call.Arguments, call.Tools = rpc.method, rpc.tool, rpc.arguments, len(rpc.tools)
	for _, tool := range rpc.tools {
		if p.Policy != nil && !p.Policy(id, app, tool) {
			return ErrToolDenied
		}
	}
	for range rpc.tools {
		if err := p.Limit.Allow(ctx, id); err != nil {
			return err
		}
	}
	var allowed func(string) bool
	if p.Policy != nil {
		allowed = func(tool string) bool { return p.Policy(id, app, tool) }
	}
	// A GET with Last-Event-ID replays responses to earlier requests.
	resumed := r.Method == http.MethodGet && r.Header.Get("Last-Event-Id") != ""
	client := p.Client
	if client == nil {
		client = &http.Client{Transport: NewTransport()}
	}
	for attempt := 0; ; attempt++ {
		var body io.Reader
		if buffered != nil {
			body = bytes.NewReader(buffered)
			if rest != nil {
				body = io.MultiReader(body, rest)
			}
		}
		req, err := http.NewRequestWithContext(ctx, r.Method, rec.ServerURL, body)
		if err != nil {
			return errors.Join(ErrUpstream, err)
		}
		if buffered != nil && rest == nil {
			req.ContentLength = int64(len(buffered))
		}
		for _, h := range passRequest {
			if v := r.Header.Values(h); len(v) > 0 {
				req.Header[h] = append([]string(nil), v...)
			}
		}
		passRoutingHeaders(req.Header, r.Header)
		req.Header.Set("Authorization", "Bearer "+rec.AccessToken)
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errors.Join(ErrUpstream, err)
		}
		call.Status = resp.StatusCode
		if resp.StatusCode == http.StatusUnauthorized {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if attempt > 0 {
				// A freshly refreshed token refused too: authorize again.
				_, _ = p.Tokens.Forget(context.WithoutCancel(ctx), id, app)
				return ErrAuthorizationRequired
			}
			rec, err = p.Tokens.Refresh(ctx, id, app, rec.AccessToken)
			if err != nil {
				return err
			}
			call.Refreshed = true
			if !replayable {
				return ErrRetry
			}
			continue
		}
		defer resp.Body.Close()
		insp := newResponseInspector(resp, rpc, allowed, resumed)
		writeTimeout := p.WriteTimeout
		if writeTimeout <= 0 {
			writeTimeout = DefaultStreamWriteTimeout
		}
		call.Err = copyResponse(w, resp, insp, writeTimeout) // the response has started: observed, not returned
		call.ToolError = insp != nil && insp.toolError
		return nil
	}
}

// copyBuffers are copyResponse's read buffers, reused across requests.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// streamFlushDelay is how long bytes of an SSE stream may wait in the
// response buffer for more: a tool call's answer is an event and, at once,
// the end of the stream, which then go out in one write (with the
// headers) instead of three. An event followed by silence (a progress
// notification, a stream kept open) goes out this much later at most.
var streamFlushDelay = time.Millisecond

// copyResponse writes the upstream answer through, with the server's own
// write deadline replaced by one per write (writeTimeout from each write's
// start): a long stream lives, a client that stops reading does not hold
// the upstream response. An SSE stream (and any GET) is flushed within
// streamFlushDelay of each write and at once when nothing more comes
// (its headers too); another answer (one JSON document) goes out when it
// ended. insp, when set, sees every byte and decides what goes on when;
// when it fails (a tools/list response it cannot filter) the response is
// cut rather than passed unfiltered, and that error is returned (not the
// client's going away).
func copyResponse(w http.ResponseWriter, resp *http.Response, insp *responseInspector, writeTimeout time.Duration) error {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_ = rc.SetReadDeadline(time.Time{})
	for _, h := range passResponse {
		if v := resp.Header.Values(h); len(v) > 0 {
			w.Header()[h] = append([]string(nil), v...)
		}
	}
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(resp.StatusCode)
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || resp.Request != nil && resp.Request.Method == http.MethodGet
	f := &delayedFlusher{rc: rc, writeTimeout: writeTimeout}
	defer f.stop()
	if stream {
		f.schedule() // the headers, unless an event comes with them
	}
	write := func(p []byte) error {
		if stream {
			return f.write(w, p)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := w.Write(p)
		return err
	}
	var clientErr error
	if insp != nil {
		insp.out = func(p []byte) error {
			clientErr = write(p)
			return clientErr
		}
	}
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if insp == nil {
				if write(buf[:n]) != nil {
					return nil
				}
			} else if ierr := insp.Write(buf[:n]); ierr != nil {
				if clientErr != nil {
					return nil
				}
				return ierr
			}
		}
		if errors.Is(err, io.EOF) && insp != nil {
			if ierr := insp.Close(); ierr != nil && clientErr == nil {
				return ierr
			}
		}
		if err != nil {
			// The rest goes out as the handler returns, in one write with
			// the end of the response.
			return nil
		}
	}
}

// delayedFlusher flushes a response streamFlushDelay after the first
// byte not yet flushed (never later: a steady stream is not held back),
// from a timer: the writes and flushes are serialized by mu, and none
// happens after stop (the handler may return then).
type delayedFlusher struct {
	rc           *http.ResponseController
	writeTimeout time.Duration

	mu      sync.Mutex
	timer   *time.Timer
	armed   bool
	stopped bool
	err     error // of a flush: the client is gone
}

func (f *delayedFlusher) write(w http.ResponseWriter, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	_ = f.rc.SetWriteDeadline(time.Now().Add(f.writeTimeout))
	if _, err := w.Write(p); err != nil {
		return err
	}
	f.scheduleLocked()
	return nil
}

func (f *delayedFlusher) schedule() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scheduleLocked()
}

func (f *delayedFlusher) scheduleLocked() {
	if f.armed || f.stopped {
		return
	}
	f.armed = true
	if f.timer == nil {
		f.timer = time.AfterFunc(streamFlushDelay, f.flush)
	} else {
		f.timer.Reset(streamFlushDelay)
	}
}

func (f *delayedFlusher) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || !f.armed {
		return
	}
	f.armed = false
	_ = f.rc.SetWriteDeadline(time.Now().Add(f.writeTimeout))
	if err := f.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.err = err
	}
}

// stop ends the flushes: what is left goes out as the handler returns.
func (f *delayedFlusher) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	if f.timer != nil {
		f.timer.Stop()
	}
}

func boundedName(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.ToValidUTF8(s, "?")
}
