package mcpgateway

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/gateway"
)

// DefaultListTTL is how long a user's aggregated tool list is reused.
const DefaultListTTL = 30 * time.Second

// Defaults of the aggregate endpoint's session bounds.
const (
	// DefaultSessionsPerIdentity: an identity's sessions past it evict its
	// oldest (an agent rarely needs more than a few at once).
	DefaultSessionsPerIdentity = 8
	// DefaultMaxSessions: sessions past it, of any identity, evict the
	// least recently used.
	DefaultMaxSessions = 10000
	// DefaultIdleTimeout: a session without a request for this long is
	// closed (a request in progress keeps it; an agent pings to keep an
	// idle one).
	DefaultIdleTimeout = 5 * time.Minute
)

// Policy says whether a tool of an app may be listed and called for an
// identity. nil allows everything.
type Policy func(id Identity, app, tool string) bool

// Aggregator is one MCP server per user (built on the official SDK) whose
// tools are the tools of every app the user authorized, named
// <app>__<tool>. A tools/call is routed to an upstream session with the
// app's MCP server, made with the user's token (refreshed and replayed on
// a 401 like the proxy's requests).
type Aggregator struct {
	Tokens *Tokens
	// Base sends the upstream requests; default NewTransport().
	Base http.RoundTripper
	// ListTTL: default DefaultListTTL.
	ListTTL time.Duration
	// Policy filters tools; nil allows all.
	Policy Policy
	// Observe, if set, sees each routed tool call.
	Observe func(ctx context.Context, id Identity, c Call)
	// Limit, if set, caps tool calls per user.
	Limit *CallLimiter
	// SessionsPerIdentity: default DefaultSessionsPerIdentity.
	SessionsPerIdentity int
	// MaxSessions: default DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout: default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Connect, if set, issues the links a call of an app the user must
	// authorize (again) answers with (elicit.go); ExpiredTools is
	// ExpiredMark (the default) or ExpiredHide.
	Connect      ConnectFunc
	ExpiredTools string

	clock func() time.Time // the shared records' clock; default time.Now

	once      sync.Once
	handler   http.Handler // stateful: the 2025 revisions
	stateless http.Handler // 2026-07-28

	mu       sync.Mutex
	users    map[string]*userAgg    // by subject: users with sessions or requests
	sessions map[string]*aggSession // by session id
	lru      *list.List             // of *aggSession, the most recently used first
	closed   bool
}

type toolRoute struct {
	app, tool string
	expired   bool // the app's authorization expired: a call answers with a link
}

type userAgg struct {
	a       *Aggregator
	id      Identity
	subject string

	server *mcp.Server

	// Guarded by a.mu: the user's sessions, oldest first; requests being
	// served; requests that may be creating a session.
	live     []*aggSession
	refs     int
	creating int
	// lingerUntil: a 2026-07-28 request's state is held (by one ref, one
	// timer) until then; zero when none is held.
	lingerUntil time.Time

	// createMu: one session created or restored at a time, its params
	// (newSession) read by admit (the SDK's GetSessionID) on the same
	// goroutine.
	createMu   sync.Mutex
	newSession *pendingSession

	mu     sync.Mutex
	routes map[string]toolRoute // exposed name → upstream
	listed time.Time
	// known are the tools each app listed last; expired the apps whose
	// authorization expired since (their tools are marked or hidden).
	known   map[string][]*mcp.Tool
	expired map[string]bool

	// The upstream sessions (relay.go): idle ones by app; poolGen counts
	// the pool's closings.
	poolMu  sync.Mutex
	pool    map[string][]*upSession
	poolGen uint64
	nextTok atomic.Uint64
	// pending are the elicitations waiting on an app's authorization
	// (elicit.go), guarded by poolMu.
	pending map[string][]pendingElicitation
}

type identityKey struct{}

// WithIdentity puts the caller's identity in ctx for ServeHTTP.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// ServeHTTP serves the aggregate Streamable HTTP endpoint for the identity
// in the request's context (WithIdentity). A session belongs to the
// identity that created it: another identity's requests for it are refused.
// Sessions are bounded (SessionsPerIdentity, MaxSessions, IdleTimeout), and
// the errors the SDK would answer in text are the gateway's JSON envelope.
// Any gateway sharing the storage serves any session (state.go); a
// 2026-07-28 request has no session at all.
func (a *Aggregator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := r.Context().Value(identityKey{}).(Identity)
	if !ok {
		writeEnvelope(w, http.StatusUnauthorized, "identity_missing", "no identity")
		return
	}
	a.once.Do(a.build)
	if stateless(r) {
		a.serveStateless(w, r, id)
		return
	}
	ctx := r.Context()
	sessionID := r.Header.Get("Mcp-Session-Id")
	get := r.Method == http.MethodGet
	creating := sessionID == "" && r.Method == http.MethodPost
	subject := a.Tokens.Store().Subject(id)
	var claims sessionClaims
	if sessionID != "" {
		if claims, ok = a.openSessionID(ctx, subject, sessionID); !ok {
			writeSessionNotFound(w)
			return
		}
	}
	u, sess := a.acquire(id, sessionID, creating, get)
	defer a.release(u, sess, sessionID, creating, get)
	if sessionID != "" {
		if err := a.check(ctx, u, sess, subject, claims); err != nil {
			if errors.Is(err, errSessionGone) {
				writeSessionNotFound(w)
			} else {
				writeEnvelope(w, http.StatusInternalServerError, "internal_error", "the MCP session could not be served")
			}
			return
		}
		if sess == nil && r.Method == http.MethodDelete {
			// Held by no one here: ending it is deleting its record.
			if err := a.ended(ctx, subject, claims.N); err != nil {
				writeEnvelope(w, http.StatusInternalServerError, "internal_error", "the MCP session could not be ended")
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if sess == nil {
			if err := a.restore(ctx, u, sessionID, claims); err != nil {
				writeSessionNotFound(w)
				return
			}
			u2, s2 := a.acquire(id, sessionID, false, get)
			defer a.release(u2, s2, sessionID, false, get)
		}
		if r.Method == http.MethodDelete {
			if err := a.ended(ctx, subject, claims.N); err != nil {
				writeEnvelope(w, http.StatusInternalServerError, "internal_error", "the MCP session could not be ended")
				return
			}
		}
	}
	r = r.Clone(context.WithValue(ctx, userKey{}, u))
	r.Header.Set("Authorization", "Bearer "+u.subject)
	if creating {
		// The new session's id carries the client's initialize params:
		// admit (the SDK's GetSessionID, called while this request is
		// served) seals them. One creation at a time per user.
		var params json.RawMessage
		if r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(io.LimitReader(r.Body, mcp.DefaultMaxRequestBodyBytes+1))
			if err != nil {
				writeEnvelope(w, http.StatusBadRequest, "bad_request", "the MCP request body could not be read")
				return
			}
			params = initializeParams(body)
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		}
		u.createMu.Lock()
		u.newSession = &pendingSession{ctx: ctx, params: params}
		defer func() {
			u.newSession = nil
			u.createMu.Unlock()
		}()
	}
	ew := &envelopeWriter{ResponseWriter: w}
	a.handler.ServeHTTP(ew, r)
	ew.finish()
	if creating {
		a.initialized(u, w.Header().Get("Mcp-Session-Id"))
	}
}

// build makes the SDK handlers: stateful for the 2025 revisions, stateless
// for 2026-07-28, both serving each user's server.
func (a *Aggregator) build() {
	server := func(r *http.Request) *mcp.Server {
		if u, ok := r.Context().Value(userKey{}).(*userAgg); ok {
			return u.server
		}
		return nil
	}
	// The SDK binds a session to TokenInfo.UserID: the identity's
	// subject hash, passed as a bearer token the handler alone sees.
	bind := auth.RequireBearerToken(func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		return &auth.TokenInfo{UserID: token, Expiration: time.Now().Add(24 * time.Hour)}, nil
	}, nil)
	a.handler = bind(mcp.NewStreamableHTTPHandler(server, &mcp.StreamableHTTPOptions{DisableLocalhostProtection: true}))
	// A 2026-07-28 call lives as long as its POST: a client gone ends it.
	a.stateless = bind(mcp.NewStreamableHTTPHandler(server, &mcp.StreamableHTTPOptions{DisableLocalhostProtection: true, Stateless: true,
		PropagateRequestCancellation: true}))
}

// serveStateless serves a 2026-07-28 request: no session, every request
// says who the client is; the user's server and upstream sessions serve it.
func (a *Aggregator) serveStateless(w http.ResponseWriter, r *http.Request, id Identity) {
	u, _ := a.acquire(id, "", false, false)
	// No session keeps the user's state (tool list, upstream sessions):
	// it is kept a while after each request, so the next call reuses it
	// and a call the client cancelled still gets its cancellation to the
	// app (the SDK sends it after the call has returned).
	defer a.linger(u)
	r = r.Clone(context.WithValue(r.Context(), userKey{}, u))
	r.Header.Set("Authorization", "Bearer "+u.subject)
	ew := &envelopeWriter{ResponseWriter: w}
	a.stateless.ServeHTTP(ew, r)
	ew.finish()
}

// statelessLinger is how long a 2026-07-28 client's state outlives its
// request.
const statelessLinger = 30 * time.Second

type userKey struct{}

// linger hands the reference of a 2026-07-28 request on to the user's
// linger: held until statelessLinger after its last request, by one
// reference and one timer per user whatever the request rate.
func (a *Aggregator) linger(u *userAgg) {
	a.mu.Lock()
	held := !u.lingerUntil.IsZero()
	u.lingerUntil = time.Now().Add(statelessLinger)
	a.mu.Unlock()
	if held { // the linger holds one already: this request's goes
		a.release(u, nil, "", false, false)
		return
	}
	var expire func()
	expire = func() {
		a.mu.Lock()
		if left := time.Until(u.lingerUntil); left > 0 {
			a.mu.Unlock()
			time.AfterFunc(left, expire)
			return
		}
		u.lingerUntil = time.Time{}
		a.mu.Unlock()
		a.release(u, nil, "", false, false)
	}
	time.AfterFunc(statelessLinger, expire)
}

// userOf is id's state on this gateway; nil when it has none.
func (a *Aggregator) userOf(id Identity) *userAgg {
	subject := a.Tokens.Store().Subject(id)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.users[subject]
}

// Close ends every session and every upstream session.
func (a *Aggregator) Close() {
	a.mu.Lock()
	users := a.users
	var live []*aggSession
	for _, u := range users {
		live = append(live, u.live...)
		u.live = nil
	}
	a.users, a.sessions, a.lru, a.closed = map[string]*userAgg{}, map[string]*aggSession{}, list.New(), true
	a.mu.Unlock()
	for _, s := range live {
		s.stop()
		s.u.closeServerSession(s.id, true)
	}
	for _, u := range users {
		u.closeSessions()
	}
}

// Invalidate makes the next tools/list or tools/call of id rebuild its
// tool set: an app was just authorized or forgotten, and the agent should
// see it at once, not after ListTTL.
func (a *Aggregator) Invalidate(id Identity) {
	u := a.userOf(id)
	if u == nil {
		return
	}
	u.mu.Lock()
	u.listed = time.Time{}
	u.mu.Unlock()
}

// newUser builds id's MCP server. Called with a.mu held.
func (a *Aggregator) newUser(id Identity, subject string) *userAgg {
	u := &userAgg{a: a, id: id, subject: subject, pool: map[string][]*upSession{}, routes: map[string]toolRoute{},
		known: map[string][]*mcp.Tool{}, expired: map[string]bool{}}
	u.server = mcp.NewServer(&mcp.Implementation{Name: "caddy-zapier", Title: "Zapier (all apps)", Version: "1.0.0"},
		&mcp.ServerOptions{Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}, Logging: &mcp.LoggingCapabilities{}},
			GetSessionID: func() string { return a.admit(u) }})
	u.server.AddReceivingMiddleware(relayMiddleware)
	u.server.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" || method == "tools/call" {
				u.sync(ctx, method == "tools/list")
			}
			if r, ok := req.(*mcp.CallToolRequest); ok && method == "tools/call" {
				if res, err, ok := u.unlistedCall(ctx, r); ok {
					if err != nil {
						return nil, err
					}
					return res, nil
				}
			}
			return next(ctx, method, req)
		}
	})
	return u
}

// exposedName is <app>__<tool> with characters outside [A-Za-z0-9_.-]
// replaced, so the name is a valid MCP tool name.
func exposedName(app, tool string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' {
				return r
			}
			return '_'
		}, s)
	}
	return clean(app) + "__" + clean(tool)
}

// sync rebuilds the user's tool set when it is older than ListTTL (or
// force and older than a second): every authorized app's tools/list, the
// policy applied, names made unique.
func (u *userAgg) sync(ctx context.Context, force bool) {
	ttl := u.a.ListTTL
	if ttl <= 0 {
		ttl = DefaultListTTL
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	age := time.Since(u.listed)
	if !u.listed.IsZero() && age < ttl && !(force && age > time.Second) {
		return
	}
	recs, err := u.a.Tokens.Store().List(ctx, u.id)
	if err != nil {
		return
	}
	type entry struct {
		name  string
		route toolRoute
		tool  *mcp.Tool
	}
	var entries []entry
	add := func(app string, tools []*mcp.Tool, expired bool) {
		for _, t := range tools {
			if u.a.Policy != nil && !u.a.Policy(u.id, app, t.Name) {
				continue
			}
			entries = append(entries, entry{name: exposedName(app, t.Name), route: toolRoute{app, t.Name, expired}, tool: t})
		}
	}
	authorized := map[string]bool{}
	for _, rec := range recs {
		authorized[rec.App] = true
		up, err := u.take(ctx, rec.App)
		if errors.Is(err, ErrAuthorizationRequired) {
			u.expired[rec.App] = u.known[rec.App] != nil
			continue
		}
		if err != nil {
			continue // not reachable now: its tools are not listed
		}
		res, err := up.cs.ListTools(ctx, nil)
		if err != nil {
			u.discard(up)
			u.dropApp(rec.App)
			continue
		}
		u.put(up)
		u.known[rec.App], u.expired[rec.App] = res.Tools, false
		add(rec.App, res.Tools, false)
	}
	// An app listed before whose authorization is gone (refused, expired,
	// revoked): its tools are marked (or hidden), and a call of one
	// answers with a link to authorize it again.
	for app, tools := range u.known {
		if !authorized[app] {
			u.expired[app] = true
		}
		if u.expired[app] && u.a.ExpiredTools != ExpiredHide {
			add(app, tools, true)
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].name != entries[j].name {
			return entries[i].name < entries[j].name
		}
		return entries[i].route.app+"\x00"+entries[i].route.tool < entries[j].route.app+"\x00"+entries[j].route.tool
	})
	routes := map[string]toolRoute{}
	var tools []*mcp.Tool
	for _, e := range entries {
		name := e.name
		for n := 2; ; n++ { // collisions: <name>_2, <name>_3, … in a stable order
			if _, taken := routes[name]; !taken {
				break
			}
			name = fmt.Sprintf("%s_%d", e.name, n)
		}
		schema := e.tool.InputSchema
		if m, ok := schema.(map[string]any); !ok || m["type"] != "object" {
			schema = map[string]any{"type": "object"}
		}
		routes[name] = e.route
		desc := "[" + e.route.app + "] " + e.tool.Description
		if e.route.expired {
			desc += expiredNote
		}
		tools = append(tools, &mcp.Tool{Name: name, Title: e.tool.Title, Annotations: e.tool.Annotations, InputSchema: schema,
			Description: desc})
	}
	var stale []string
	for name := range u.routes {
		if _, ok := routes[name]; !ok {
			stale = append(stale, name)
		}
	}
	if len(stale) > 0 {
		u.server.RemoveTools(stale...)
	}
	for _, t := range tools {
		u.addTool(t)
	}
	u.routes, u.listed = routes, time.Now()
}

// addTool adds t; a tool the SDK refuses (its schema) is left out.
func (u *userAgg) addTool(t *mcp.Tool) {
	defer func() { _ = recover() }()
	u.server.AddTool(t, u.callHandler(t.Name))
}

// callHandler routes one exposed tool to its upstream session.
func (u *userAgg) callHandler(name string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		start := time.Now()
		u.mu.Lock()
		route, ok := u.routes[name]
		u.mu.Unlock()
		errResult := func(msg string) *mcp.CallToolResult {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
		}
		call := Call{App: route.app, RPCMethod: "tools/call", Tool: route.tool, Arguments: req.Params.Arguments, Tools: 1}
		// Refusals are observed too, as on the per-app routes.
		refuse := func(err error, msg string) (*mcp.CallToolResult, error) {
			call.Err, call.Duration = err, time.Since(start)
			if u.a.Observe != nil {
				u.a.Observe(ctx, u.id, call)
			}
			return errResult(msg), nil
		}
		if !ok {
			call.Tool = boundedName(name)
			return refuse(ErrToolDenied, "tool "+name+" is not available")
		}
		if u.a.Policy != nil && !u.a.Policy(u.id, route.app, route.tool) {
			return refuse(ErrToolDenied, "tool "+name+" is not available")
		}
		if route.expired {
			// Authorized again meanwhile (perhaps through another sidecar)?
			if _, err := u.a.Tokens.Current(ctx, u.id, route.app); err != nil {
				call.Err, call.Duration = ErrAuthorizationRequired, time.Since(start)
				if u.a.Observe != nil {
					u.a.Observe(ctx, u.id, call)
				}
				return u.authorizationRequired(ctx, req, route.app)
			}
			u.mu.Lock()
			u.expired[route.app], u.listed = false, time.Time{}
			u.mu.Unlock()
		}
		if err := u.a.Limit.Allow(ctx, u.id); err != nil {
			if ge := (*gateway.Error)(nil); errors.As(err, &ge) {
				return refuse(err, ge.Code+": "+ge.Message) // the tenant's quota
			}
			return refuse(err, "mcp_tool_call_limit: the user's cap on tool calls per minute is reached; retry later")
		}
		res, err := u.callUpstream(ctx, req, route)
		call.Duration, call.Err = time.Since(start), err
		if err == nil {
			call.Status, call.ToolError = http.StatusOK, res != nil && res.IsError
		}
		if u.a.Observe != nil {
			u.a.Observe(ctx, u.id, call)
		}
		if errors.Is(err, ErrAuthorizationRequired) {
			u.mu.Lock()
			u.expired[route.app] = true
			u.listed = time.Time{} // the tool list shows it at once
			u.mu.Unlock()
			return u.authorizationRequired(ctx, req, route.app)
		}
		if err != nil {
			return errResult("the call to " + route.app + " failed"), nil
		}
		return res, nil
	}
}

func (u *userAgg) callUpstream(ctx context.Context, req *mcp.CallToolRequest, route toolRoute) (*mcp.CallToolResult, error) {
	for attempt := 0; ; attempt++ {
		up, err := u.take(ctx, route.app)
		if err != nil {
			return nil, err
		}
		res, err := u.callOnce(ctx, up, req, route)
		if err == nil || ctx.Err() != nil || isRPCError(err) {
			u.put(up) // the session is sound: the app answered (or was told the call is cancelled)
			return res, err
		}
		u.discard(up) // the session broke: the next call opens a new one
		if errors.Is(err, ErrAuthorizationRequired) {
			u.dropApp(route.app)
			return nil, err
		}
		// Only a session the server no longer knows (404) proves the tool did
		// not run; after any other failure it may have (a message sent, a
		// side effect done), and a tool call is at most once.
		if attempt == 0 && errors.Is(err, mcp.ErrSessionMissing) {
			continue
		}
		return res, err
	}
}

type authErr struct{}

func (*authErr) Error() string { return ErrAuthorizationRequired.Error() }

func (*authErr) Unwrap() error { return ErrAuthorizationRequired }

// tokenTransport injects the user's MCP token and, on a 401, refreshes it
// (coalesced in Tokens) and replays the request once.
type tokenTransport struct {
	tokens *Tokens
	id     Identity
	app    string
	base   http.RoundTripper
	up     *upSession // counts the relays in the answers (relay.go)
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	rec, err := t.tokens.Current(ctx, t.id, t.app)
	if err != nil {
		return nil, wrapAuth(err)
	}
	// The body is the SDK's message, already in memory (the agent's request
	// was bounded when read): kept whole to replay it after a refresh.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		body, err = io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		req := r.Clone(ctx)
		if body != nil {
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		req.Header.Set("Authorization", "Bearer "+rec.AccessToken)
		resp, err := t.base.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			if err == nil && resp.StatusCode == http.StatusUnauthorized {
				resp.Body.Close()
				_, _ = t.tokens.Forget(context.WithoutCancel(ctx), t.id, t.app)
				return nil, &authErr{}
			}
			if err == nil {
				countRelays(resp, t.up)
			}
			return resp, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if rec, err = t.tokens.Refresh(ctx, t.id, t.app, rec.AccessToken); err != nil {
			return nil, wrapAuth(err)
		}
	}
}

func wrapAuth(err error) error {
	if errors.Is(err, ErrAuthorizationRequired) {
		return &authErr{}
	}
	return err
}
