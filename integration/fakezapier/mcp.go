package fakezapier

// White Label MCP (zapier-api-2026.md §1, §7, §8): the public app list with
// MCP links, the partner JWT → connect token exchange bound to an MCP
// resource, the authorize step (connect token, registered redirect_uri,
// optional PKCE) that redirects back with a single-use code, the code and
// refresh grants, and one MCP server per app, built with the official Go
// SDK, that accepts only live MCP access tokens bound to that app.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	mcpConnectPrefix = "fzmct_"
	mcpCodePrefix    = "fzmcode_"
	mcpAccessPrefix  = "fzmat_"
	mcpRefreshPrefix = "fzmrt_"
	mcpCodeTTL       = 10 * time.Minute
)

// MCPStats counts the MCP side of the fake.
type MCPStats struct {
	ConnectTokens  int // JWT → MCP connect token exchanges
	Authorizations int // codes issued by GET /oauth/authorize
	CodeExchanges  int // successful authorization_code grants
	Refreshes      int // successful refresh_token grants
	ToolCalls      int // tools/call served
	Unauthorized   int // MCP requests answered 401
}

type mcpApp struct {
	id, title string
	json      bool // answers POSTs with application/json rather than SSE
	only2026  bool // stateless, speaking 2026-07-28 only
	handler   http.Handler
}

type mcpGrant struct {
	tenant, user, app string
	resource          string
	redirectURI       string
	challenge         string
	expires           time.Time
	used              bool
	revoked           bool
}

type mcpState struct {
	mu           sync.Mutex
	apps         map[string]*mcpApp
	redirectURIs []string
	accessTTL    time.Duration
	connect      map[string]*mcpGrant // connect tokens
	codes        map[string]*mcpGrant
	access       map[string]*mcpGrant
	refresh      map[string]*mcpGrant
	stats        MCPStats
	steps        chan struct{} // ReleaseMCPStep
}

// The MCP state hangs off the Server without a field in it (server.go is
// shared): one entry per Server, created on first use.
var mcpStates sync.Map // *Server → *mcpState

func (s *Server) mcp() *mcpState {
	if v, ok := mcpStates.Load(s); ok {
		return v.(*mcpState)
	}
	v, _ := mcpStates.LoadOrStore(s, &mcpState{
		apps: map[string]*mcpApp{}, accessTTL: time.Hour,
		connect: map[string]*mcpGrant{}, codes: map[string]*mcpGrant{},
		access: map[string]*mcpGrant{}, refresh: map[string]*mcpGrant{},
		steps: make(chan struct{}, 1024),
	})
	return v.(*mcpState)
}

// RegisterMCPApp lists an app in GET /v2/whitelabel/apps and serves its MCP
// server at /mcp/<id>, answering with SSE streams.
func (s *Server) RegisterMCPApp(id, title string) { s.registerMCPApp(&mcpApp{id: id, title: title}) }

// RegisterMCPAppJSON is RegisterMCPApp for a server that answers POSTs
// with single JSON responses (Streamable HTTP allows either).
func (s *Server) RegisterMCPAppJSON(id, title string) {
	s.registerMCPApp(&mcpApp{id: id, title: title, json: true})
}

// RegisterMCPApp2026 adds an app whose MCP server is stateless and speaks
// only the 2026-07-28 revision (it refuses a request without Mcp-Method).
func (s *Server) RegisterMCPApp2026(id, title string) {
	s.registerMCPApp(&mcpApp{id: id, title: title, only2026: true})
}

func (s *Server) registerMCPApp(app *mcpApp) {
	st := s.mcp()
	app.handler = s.newMCPHandler(app)
	st.mu.Lock()
	st.apps[app.id] = app
	st.mu.Unlock()
}

// SetMCPRedirectURIs registers the redirect URIs the authorize step
// accepts (exact match). None are registered at first.
func (s *Server) SetMCPRedirectURIs(uris ...string) {
	st := s.mcp()
	st.mu.Lock()
	st.redirectURIs = append([]string(nil), uris...)
	st.mu.Unlock()
}

// SetMCPAccessTTL sets the expires_in of MCP access tokens (default 1h).
func (s *Server) SetMCPAccessTTL(d time.Duration) {
	st := s.mcp()
	st.mu.Lock()
	st.accessTTL = d
	st.mu.Unlock()
}

// ExpireMCPAccessTokens makes every MCP access token of the identity
// expire now (its refresh tokens stay good) and returns how many it ended.
func (s *Server) ExpireMCPAccessTokens(tenant, user string) int {
	st := s.mcp()
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, g := range st.access {
		if g.tenant == tenant && g.user == user && s.now().Before(g.expires) {
			g.expires = s.now()
			n++
		}
	}
	return n
}

// RevokeMCPAuthorization revokes the identity's MCP access and refresh
// tokens for app, as when the user removes the connection at Zapier.
func (s *Server) RevokeMCPAuthorization(tenant, user, app string) {
	st := s.mcp()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range []map[string]*mcpGrant{st.access, st.refresh} {
		for _, g := range m {
			if g.tenant == tenant && g.user == user && g.app == app {
				g.revoked = true
			}
		}
	}
}

// ReleaseMCPStep lets the gated streaming tool go on after the progress
// notification it just sent.
func (s *Server) ReleaseMCPStep() { s.mcp().steps <- struct{}{} }

// MCPStats returns a snapshot of the MCP counters.
func (s *Server) MCPStats() MCPStats {
	st := s.mcp()
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stats
}

func baseURL(r *http.Request) string { return "http://" + r.Host }

func (st *mcpState) app(id string) *mcpApp {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.apps[id]
}

// serveWhitelabelApps is GET /v2/whitelabel/apps (no auth; search, limit,
// offset).
func (s *Server) serveWhitelabelApps(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	st := s.mcp()
	q := r.URL.Query()
	search := strings.ToLower(q.Get("search"))
	st.mu.Lock()
	ids := make([]string, 0, len(st.apps))
	for id, a := range st.apps {
		if search == "" || strings.Contains(strings.ToLower(a.title), search) {
			ids = append(ids, id)
		}
	}
	titles := map[string]string{}
	for _, id := range ids {
		titles[id] = st.apps[id].title
	}
	st.mu.Unlock()
	sort.Strings(ids)
	offset, limit := 0, 100
	fmt.Sscan(q.Get("offset"), &offset)
	fmt.Sscan(q.Get("limit"), &limit)
	offset = min(max(offset, 0), len(ids))
	ids = ids[offset:min(offset+max(limit, 1), len(ids))]
	base := baseURL(r)
	data := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		data = append(data, map[string]any{
			"id": id, "title": titles[id], "is_oauth": true, "has_fields": false, "has_byoc": false,
			"links": map[string]string{
				"mcp_authorize_url": base + "/oauth/authorize?app=" + url.QueryEscape(id),
				"mcp_server_url":    base + "/mcp/" + id,
			},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data, "links": map[string]any{"next": nil, "prev": nil},
		"meta": map[string]any{"count": len(data), "offset": offset, "limit": limit}})
}

// mcpResourceApp returns the app whose MCP server or authorize URL resource
// names.
func (st *mcpState) mcpResourceApp(resource string) (string, bool) {
	u, err := url.Parse(resource)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return "", false
	}
	id, ok := strings.CutPrefix(u.Path, "/mcp/")
	if !ok && u.Path == "/oauth/authorize" {
		id, ok = u.Query().Get("app"), true
	}
	return id, ok && st.app(id) != nil
}

// exchangeJWTForMCPConnect is partner JWT → connect token for MCP
// (zapier-api-2026.md §1.4): resource must name a registered app's MCP
// server (or authorize URL), scope connection:write or mcp:run.
func (s *Server) exchangeJWTForMCPConnect(w http.ResponseWriter, form url.Values) {
	st := s.mcp()
	resource := form.Get("resource")
	app, ok := st.mcpResourceApp(resource)
	if resource == "" || !ok {
		s.refuse(w, http.StatusBadRequest, "invalid_target", "resource must be a registered app's mcp_server_url or mcp_authorize_url")
		return
	}
	scopes, err := parseScopes(form.Get("scope"))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	if !slices.Contains(scopes, "connection:write") && !slices.Contains(scopes, "mcp:run") {
		s.refuse(w, http.StatusBadRequest, "invalid_scope", "an MCP connect token requires scope connection:write or mcp:run")
		return
	}
	v, err := s.verifyJWT(form.Get("subject_token"))
	if err != nil {
		s.mu.Lock()
		s.stats.JWTFailures++
		s.lastJWTFail = err.Error()
		s.mu.Unlock()
		s.refuse(w, http.StatusBadRequest, "invalid_grant", "partner JWT rejected: "+err.Error())
		return
	}
	tok := newToken(mcpConnectPrefix)
	st.mu.Lock()
	st.connect[tok] = &mcpGrant{tenant: v.tenant, user: v.user, app: app, resource: resource, expires: s.now().Add(s.cfg.ConnectTokenTTL)}
	st.stats.ConnectTokens++
	st.mu.Unlock()
	s.logf("fakezapier: exchange ok: MCP connect token for tenant=%q user=%q app=%q", v.tenant, v.user, app)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok, IssuedTokenType: s.cfg.ConnectTokenType,
		TokenType: "Bearer", ExpiresIn: expiresIn(s.cfg.ConnectTokenTTL), Scope: strings.Join(scopes, " ")})
}

// serveMCPAuthorize is GET /oauth/authorize: the user (approving at once)
// is sent back to redirect_uri with a code, or with an error.
func (s *Server) serveMCPAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	st := s.mcp()
	q := r.URL.Query()
	redirectURI, state := q.Get("redirect_uri"), q.Get("state")
	st.mu.Lock()
	registered := slices.Contains(st.redirectURIs, redirectURI)
	st.mu.Unlock()
	if !registered {
		// Never redirect to an unregistered URI.
		http.Error(w, "redirect_uri is not registered", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		if state != "" {
			params.Set("state", state)
		}
		sep := "?"
		if strings.Contains(redirectURI, "?") {
			sep = "&"
		}
		w.Header().Set("Location", redirectURI+sep+params.Encode())
		w.WriteHeader(http.StatusFound)
	}
	fail := func(code, desc string) {
		s.logf("fakezapier: MCP authorize refused: %s: %s", code, desc)
		back(url.Values{"error": {code}, "error_description": {desc}})
	}
	app := q.Get("app")
	if st.app(app) == nil {
		fail("invalid_request", "Invalid app")
		return
	}
	if q.Get("response_type") != "" && q.Get("response_type") != "code" {
		fail("unsupported_response_type", "response_type must be code")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	if challenge != "" && method != "S256" {
		fail("invalid_request", "code_challenge_method must be S256")
		return
	}
	st.mu.Lock()
	g, ok := st.connect[q.Get("token")]
	var why string
	switch {
	case !ok:
		why = "Invalid token"
	case g.used:
		why = "Invalid token"
	case !s.now().Before(g.expires):
		why = "Token expired"
	case g.app != app:
		why = "Invalid token"
	case q.Get("resource") != "" && q.Get("resource") != g.resource:
		why = "Invalid token"
	}
	if why != "" {
		st.mu.Unlock()
		fail("invalid_request", why)
		return
	}
	g.used = true
	code := newToken(mcpCodePrefix)
	st.codes[code] = &mcpGrant{tenant: g.tenant, user: g.user, app: app, resource: g.resource,
		redirectURI: redirectURI, challenge: challenge, expires: s.now().Add(mcpCodeTTL)}
	st.stats.Authorizations++
	st.mu.Unlock()
	back(url.Values{"code": {code}})
}

// serveMCPGrant handles grant_type authorization_code and refresh_token
// (the client is already authenticated).
func (s *Server) serveMCPGrant(w http.ResponseWriter, form url.Values) {
	st := s.mcp()
	st.mu.Lock()
	var g *mcpGrant
	var why string
	switch form.Get("grant_type") {
	case "authorization_code":
		c, ok := st.codes[form.Get("code")]
		verifier := form.Get("code_verifier")
		switch {
		case !ok || c.used:
			why = "code unknown or already used"
		case !s.now().Before(c.expires):
			why = "code expired"
		case form.Get("redirect_uri") != c.redirectURI:
			why = "redirect_uri does not match the authorize request"
		case form.Get("resource") != "" && form.Get("resource") != c.resource:
			why = "resource does not match"
		case c.challenge != "" && !pkceMatches(c.challenge, verifier):
			why = "code_verifier does not match the code_challenge"
		case c.challenge == "" && verifier != "":
			why = "code_verifier sent for a code issued without a challenge"
		}
		if ok {
			c.used = true // spent even when refused
		}
		g = c
		if why == "" {
			st.stats.CodeExchanges++
		}
	case "refresh_token":
		rt, ok := st.refresh[form.Get("refresh_token")]
		switch {
		case !ok || rt.used:
			why = "refresh token unknown or already used"
		case rt.revoked:
			why = "refresh token revoked"
		}
		if ok {
			rt.used = true // rotated
		}
		g = rt
		if why == "" {
			st.stats.Refreshes++
		}
	}
	if why != "" {
		st.mu.Unlock()
		s.refuse(w, http.StatusBadRequest, "invalid_grant", why)
		return
	}
	access, refresh := newToken(mcpAccessPrefix), newToken(mcpRefreshPrefix)
	ttl := st.accessTTL
	st.access[access] = &mcpGrant{tenant: g.tenant, user: g.user, app: g.app, resource: g.resource, expires: s.now().Add(ttl)}
	st.refresh[refresh] = &mcpGrant{tenant: g.tenant, user: g.user, app: g.app, resource: g.resource}
	st.mu.Unlock()
	s.logf("fakezapier: MCP %s ok for tenant=%q user=%q app=%q", form.Get("grant_type"), g.tenant, g.user, g.app)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": access, "token_type": "Bearer",
		"expires_in": *expiresIn(ttl), "refresh_token": refresh, "scope": "mcp:run"})
}

func pkceMatches(challenge, verifier string) bool {
	sum := sha256.Sum256([]byte(verifier))
	return verifier != "" && subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// serveMCP is /mcp/<app>: the app's MCP server behind a bearer check.
func (s *Server) serveMCP(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/mcp/")
	app := s.mcp().app(id)
	if app == nil {
		http.NotFound(w, r)
		return
	}
	app.handler.ServeHTTP(w, r)
}

// whoami is the identity a tool call runs for, from the bearer check.
func whoami(req *mcp.CallToolRequest) string {
	if req.Extra != nil && req.Extra.TokenInfo != nil {
		return req.Extra.TokenInfo.UserID
	}
	return ""
}

type echoArgs struct {
	Text string `json:"text" jsonschema:"what to echo"`
}

type streamArgs struct {
	Steps int  `json:"steps" jsonschema:"how many progress notifications to send"`
	Gated bool `json:"gated,omitempty" jsonschema:"after each step, wait for ReleaseMCPStep"`
}

func (s *Server) newMCPHandler(app *mcpApp) http.Handler {
	var opts *mcp.ServerOptions
	if app.only2026 {
		opts = &mcp.ServerOptions{SupportedProtocolVersions: []string{"2026-07-28"}}
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "fakezapier-" + app.id, Version: "1.0.0"}, opts)
	count := func() {
		st := s.mcp()
		st.mu.Lock()
		st.stats.ToolCalls++
		st.mu.Unlock()
	}
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "the user and app this MCP token belongs to"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			count()
			return text(whoami(req) + " " + app.id), nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
			count()
			return text(in.Text), nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "fail", Description: "always fails: a result with isError"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			count()
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "the app refused"}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "stream", Description: "sends progress notifications over SSE"},
		func(ctx context.Context, req *mcp.CallToolRequest, in streamArgs) (*mcp.CallToolResult, any, error) {
			count()
			tok := req.Params.GetProgressToken()
			for i := 1; i <= in.Steps; i++ {
				if tok != nil {
					_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: tok, Progress: float64(i), Total: float64(in.Steps), Message: fmt.Sprintf("step %d", i)})
				}
				if in.Gated {
					select {
					case <-s.mcp().steps:
					case <-ctx.Done():
						return nil, nil, ctx.Err()
					}
				}
			}
			return text(fmt.Sprintf("streamed %d steps", in.Steps)), nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{JSONResponse: app.json, Stateless: app.only2026})
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		st := s.mcp()
		st.mu.Lock()
		defer st.mu.Unlock()
		g, ok := st.access[token]
		if !ok || g.revoked || g.app != app.id || !s.now().Before(g.expires) {
			st.stats.Unauthorized++
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{Scopes: []string{"mcp:run"}, Expiration: g.expires, UserID: g.tenant + "/" + g.user}, nil
	}
	return auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{Scopes: []string{"mcp:run"}})(h)
}
