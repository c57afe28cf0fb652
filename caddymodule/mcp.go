package caddymodule

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(MCP{})
	httpcaddyfile.RegisterHandlerDirective("zapier_mcp", parseHandler[MCP])
	httpcaddyfile.RegisterDirectiveOrder("zapier_mcp", httpcaddyfile.Before, "respond")
}

const (
	mcpTokensPrefix      = "zapier/mcp/tokens"
	mcpResourceServer    = "server_url"
	mcpResourceAuthorize = "authorize_url"
	defaultMCPAppsTTL    = 10 * time.Minute
	mcpAppsMissRefetch   = 5 * time.Second
	mcpRefreshMargin     = 60 * time.Second
)

// MCP is the zapier_mcp handler: it authorizes an end user's Zapier MCP
// access per app (the White Label MCP OAuth flow, with the tokens kept by
// the gateway, encrypted in Caddy storage), and proxies Streamable HTTP MCP
// to each app's Zapier-hosted MCP server with the user's token. Routes,
// relative to where it is mounted (use handle_path):
//
//	GET    authorize?app=&return_to=  → 302 to the app's mcp_authorize_url
//	GET    callback?code=|error=&state= → exchanges the code, stores the tokens, 302 to return_to
//	GET    apps                       → the caller's authorized apps
//	DELETE apps/{app}                 → forgets one
//	POST|GET|DELETE {app}             → the app's MCP server, for the caller
//
// Every route needs the identity headers, exactly as zapier_auth does.
type MCP struct {
	// The redirect URI registered with Zapier for the MCP authorize flow:
	// the URL of this handler's callback route. Required.
	CallbackURL string `json:"callback_url,omitempty"`
	// Which link is the connect token's (and authorize and code exchange's)
	// resource: server_url (default) or authorize_url.
	Resource string `json:"resource,omitempty"`
	// Send a PKCE S256 challenge with the authorize redirect. Default off.
	PKCE bool `json:"pkce,omitempty"`
	// Scopes of the MCP connect token. Default connection:write mcp:run.
	Scopes []string `json:"scopes,omitempty"`
	// The secret the stored MCP tokens are encrypted with (placeholders
	// such as {env.X} are resolved). Default: derived from the client
	// secret, so changing that makes users authorize again.
	TokenKey string `json:"token_key,omitempty"`
	// How long a started authorize flow may take. Default 10m.
	StateTTL caddy.Duration `json:"state_ttl,omitempty"`
	// How long GET /v2/whitelabel/apps is cached. Default 10m.
	AppsCacheTTL caddy.Duration `json:"apps_cache_ttl,omitempty"`
	// Log tool-call arguments in the audit log. Default off.
	AuditPayloads bool `json:"audit_payloads,omitempty"`
	// Request bodies up to this size are buffered so they can be replayed
	// after a token refresh (and checked against the tool policy and cap:
	// with either configured, a larger body is refused). Default 1 MiB.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`
	// How long the aggregate endpoint reuses a user's tool list. Default 30s.
	AggregateListTTL caddy.Duration `json:"aggregate_list_ttl,omitempty"`
	// Aggregate sessions one identity may hold; a new one past it closes
	// the identity's oldest. Default 8.
	AggregateSessionsPerIdentity int `json:"aggregate_sessions_per_identity,omitempty"`
	// Aggregate sessions in all; a new one past it closes the least
	// recently used. Default 10000.
	AggregateSessionsMax int `json:"aggregate_sessions_max,omitempty"`
	// An aggregate session without a request for this long is closed.
	// Default 5m.
	AggregateIdleTimeout caddy.Duration `json:"aggregate_idle_timeout,omitempty"`
	// Per-app MCP streams (GET streams and POSTs in progress) one identity
	// may hold open; past it a request gets 429 mcp_too_many_streams.
	// Default 16.
	StreamsPerIdentity int `json:"streams_per_identity,omitempty"`
	// A write to a client of a per-app route that takes longer ends its
	// response (and the upstream request). Default 30s.
	StreamWriteTimeout caddy.Duration `json:"stream_write_timeout,omitempty"`
	// Cap on tool calls per user per minute (per-app routes and the
	// aggregate endpoint together). 0, the default, is no cap. With the
	// zapier app's cache.redis it is one window for every gateway sharing
	// that Redis; otherwise (and while Redis is away) each gateway's own.
	ToolCallsPerMinute int `json:"tool_calls_per_minute,omitempty"`
	// Tool policy for every tenant, and per tenant (both apply): a denied
	// tool is neither listed nor callable, on every route.
	Tools       *MCPToolPolicy            `json:"tools,omitempty"`
	TenantTools map[string]*MCPToolPolicy `json:"tenant_tools,omitempty"`

	app      *App
	rules    gateway.IdentityRules
	states   *stateKeeper
	tokens   *mcpgateway.Tokens
	proxy    *mcpgateway.Proxy
	agg      *mcpgateway.Aggregator
	catalog  *mcpCatalog
	pkceKey  []byte
	logger   *zap.Logger
	audit    *zap.Logger
	authBase string        // <mount>/authorize, from callback_url
	redis    *redis.Client // the shared tool-call cap's; nil without cache.redis
}

// CaddyModule returns the Caddy module information.
func (MCP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_mcp",
		New: func() caddy.Module { return new(MCP) },
	}
}

// Provision checks the options and builds the token store and the proxy.
func (h *MCP) Provision(ctx caddy.Context) error {
	if h.CallbackURL == "" {
		return errors.New("zapier_mcp: callback_url is required (the MCP redirect URI registered with Zapier)")
	}
	if err := zapierapi.CheckURL(h.CallbackURL); err != nil {
		return fmt.Errorf("zapier_mcp: callback_url: %w", err)
	}
	switch h.Resource {
	case "":
		h.Resource = mcpResourceServer
	case mcpResourceServer, mcpResourceAuthorize:
	default:
		return fmt.Errorf("zapier_mcp: resource must be %s or %s", mcpResourceServer, mcpResourceAuthorize)
	}
	if len(h.Scopes) == 0 {
		h.Scopes = zapierapi.DefaultMCPConnectScopes
	}
	if h.StateTTL == 0 {
		h.StateTTL = caddy.Duration(connect.DefaultStateTTL)
	}
	if h.StateTTL < 0 || time.Duration(h.StateTTL) > connect.MaxStateTTL {
		return fmt.Errorf("zapier_mcp: state_ttl must be between 0 and %s", connect.MaxStateTTL)
	}
	if h.AppsCacheTTL <= 0 {
		h.AppsCacheTTL = caddy.Duration(defaultMCPAppsTTL)
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	h.rules = app.identityRules()
	h.logger = ctx.Logger()
	h.audit = h.logger.Named("audit")

	secret := caddy.NewReplacer().ReplaceKnown(h.TokenKey, "")
	if h.TokenKey == "" {
		secret = "client secret: " + app.clientSecret
	} else if len(secret) < 16 {
		return errors.New("zapier_mcp: token_key must be at least 16 bytes")
	}
	store, err := mcpgateway.NewStore(ctx.Storage(), []byte(secret), mcpTokensPrefix)
	if err != nil {
		return fmt.Errorf("zapier_mcp: %w", err)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("caddy-zapier mcp pkce"))
	h.pkceKey = m.Sum(nil)
	policy, err := h.provisionPolicy()
	if err != nil {
		return err
	}
	if h.ToolCallsPerMinute < 0 {
		return errors.New("zapier_mcp: tool_calls_per_minute must not be negative")
	}
	if h.AggregateSessionsPerIdentity < 0 || h.AggregateSessionsMax < 0 || h.AggregateIdleTimeout < 0 ||
		h.StreamsPerIdentity < 0 || h.StreamWriteTimeout < 0 {
		return errors.New("zapier_mcp: aggregate_sessions_per_identity, aggregate_sessions_max, aggregate_idle_timeout, streams_per_identity and stream_write_timeout must not be negative")
	}
	limit := &mcpgateway.CallLimiter{PerMinute: h.ToolCallsPerMinute}
	if err := h.shareToolCallCap(limit, store); err != nil {
		return err
	}
	h.states = newStateKeeper(ctx, ctx.Storage(), time.Duration(h.StateTTL))
	store.Owners = gateway.NewNamespace(gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
		keys, err := h.states.Keys(ctx)
		if err != nil {
			return nil, err
		}
		return keys.NamesKey(), nil
	}))
	h.tokens = mcpgateway.NewTokens(store, h.refresh, mcpRefreshMargin, nil)
	h.proxy = &mcpgateway.Proxy{Tokens: h.tokens, MaxReplayBody: h.MaxReplayBody, Observe: h.observe,
		Client: &http.Client{Transport: mcpTransport}, Policy: policy, Limit: limit,
		StreamsPerIdentity: h.StreamsPerIdentity, WriteTimeout: time.Duration(h.StreamWriteTimeout)}
	h.provisionAggregate(policy, limit)
	app.registerUserStore(gateway.PhaseLocal, mcpgateway.AuthorizationStore{Tokens: h.tokens, Aggregator: h.agg,
		Unattributed: func(n int) {
			h.logger.Warn("offboarding a tenant: MCP authorizations from before sealed owners, unused since, cannot be attributed; they may be the tenant's (forget its users one by one)",
				zap.Int("records", n))
		}})
	app.registerUserStore(gateway.PhaseLocal, mcpgateway.SessionStore{Aggregator: h.agg})
	h.catalog = &mcpCatalog{ttl: time.Duration(h.AppsCacheTTL)}
	if base, ok := strings.CutSuffix(h.CallbackURL, "/callback"); ok {
		h.authBase = base + "/authorize"
	}
	registerMCPMetrics(ctx)
	return nil
}

// mcpTransport is shared by every config, so a reload keeps the upstream
// connections (and never cuts a running stream).
var mcpTransport = mcpgateway.NewTransport()

func (h *MCP) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	p := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case p == "authorize":
		return h.withIdentity(w, r, mcpBrowserRoute, h.serveAuthorize)
	case p == "callback":
		return h.withIdentity(w, r, mcpBrowserRoute, h.serveCallback)
	case p == "apps":
		return h.withIdentity(w, r, gateway.Route{Methods: []string{http.MethodGet}}, h.serveApps)
	case strings.HasPrefix(p, "apps/"):
		app := strings.TrimPrefix(p, "apps/")
		return h.withIdentity(w, r, gateway.Route{Methods: []string{http.MethodDelete}}, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
			return h.serveForget(w, r, key, app)
		})
	case p == "":
		return h.withIdentity(w, r, mcpAgentRoute, h.serveAggregate)
	case !strings.Contains(p, "/") && validAppName(p):
		return h.withIdentity(w, r, mcpAgentRoute, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
			return h.serveMCP(w, r, key, p)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_mcp route (authorize, callback, apps, apps/{app}, {app})"})
	return nil
}

// The MCP routes' classes. The authorize flow and the apps list spend Zapier
// calls per request like Connect's routes, so they are limited; an agent's
// MCP messages are chatty by nature (a message per request), and tool calls
// have their own cap.
var (
	mcpBrowserRoute = gateway.Route{Methods: []string{http.MethodGet}, Browser: true}
	mcpAgentRoute   = gateway.Route{Methods: []string{http.MethodPost, http.MethodGet, http.MethodDelete}, Class: gateway.Agent}
)

// withIdentity serves an MCP route for the caller's identity.
func (h *MCP) withIdentity(w http.ResponseWriter, r *http.Request, rt gateway.Route, next identityHandler) error {
	return h.app.serveRoute(w, r, rt, next)
}

func mcpIdentity(key tokencache.Key) mcpgateway.Identity {
	return mcpgateway.Identity{Tenant: key.Tenant, User: key.User}
}

// serveMCP proxies to the app's MCP server with the caller's MCP token.
func (h *MCP) serveMCP(w http.ResponseWriter, r *http.Request, key tokencache.Key, app string) error {
	err := h.proxy.Serve(w, r, mcpIdentity(key), app)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mcpgateway.ErrAuthorizationRequired):
		h.writeAuthorizationRequired(w, app)
		return nil
	case errors.Is(err, mcpgateway.ErrToolCallLimit):
		var le *mcpgateway.LimitError
		retry := time.Second
		if errors.As(err, &le) {
			retry = max(le.RetryAfter, time.Second)
		}
		gateway.WriteError(w, &gateway.Error{Status: http.StatusTooManyRequests, Code: "mcp_tool_call_limit",
			Message: "the user's cap on tool calls per minute is reached; retry later", RetryAfter: retry})
		return nil
	case errors.Is(err, mcpgateway.ErrBodyTooLarge):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusRequestEntityTooLarge, Code: "mcp_request_too_large",
			Message: "the request body is larger than max_replay_body, so the tool policy cannot check it"})
		return nil
	case errors.Is(err, mcpgateway.ErrBodyUnreadable):
		gateway.WriteError(w, gateway.BadRequest("the request body is not JSON-RPC, so the tool policy cannot check it"))
		return nil
	case errors.Is(err, mcpgateway.ErrDuplicateMember):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusBadRequest, Code: "mcp_request_ambiguous",
			Message: "a JSON-RPC message (or its params) names a member twice, so the tool policy cannot check it"})
		return nil
	case errors.Is(err, mcpgateway.ErrTooManyStreams):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusTooManyRequests, Code: "mcp_too_many_streams",
			Message: "the user has too many MCP streams and requests open on the per-app routes; close one and retry", RetryAfter: time.Second})
		return nil
	case errors.Is(err, mcpgateway.ErrToolDenied):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusForbidden, Code: "mcp_tool_denied",
			Message: "the gateway's tool policy does not allow this tool"})
		return nil
	case errors.Is(err, mcpgateway.ErrRetry):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusServiceUnavailable, Code: "mcp_retry",
			Message: "the MCP token was refreshed but the request was too large to replay; send it again", RetryAfter: time.Second})
		return nil
	case errors.Is(err, mcpgateway.ErrUpstream):
		gateway.WriteError(w, &gateway.Error{Status: http.StatusBadGateway, Code: "mcp_upstream_failed",
			Message: "the app's MCP server could not be reached"})
		return nil
	}
	return failConnect(w, r, mcpRefreshError(err))
}

// writeAuthorizationRequired answers 401 mcp_authorization_required with
// where to send the user, in the gateway's error shape.
func (h *MCP) writeAuthorizationRequired(w http.ResponseWriter, app string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="mcp_authorization_required"`)
	body := map[string]any{"code": "mcp_authorization_required",
		"message": "the user has not authorized MCP access to " + app + " (or it was revoked); send them to authorize_url", "app": app}
	if h.authBase != "" {
		body["authorize_url"] = h.authBase + "?app=" + url.QueryEscape(app)
	}
	writeConnectJSONStatus(w, http.StatusUnauthorized, map[string]any{"error": body})
}

func writeConnectJSONStatus(w http.ResponseWriter, status int, v any) { writeConnectJSON(w, status, v) }

// mcpRefreshError maps a failed refresh (or storage failure) to an answer.
func mcpRefreshError(err error) error {
	if _, ok := zapierapi.AsError(err); ok {
		return gateway.ExchangeError(err)
	}
	return err
}

// refresh is the Tokens' refresh call: the refresh grant, as one limited,
// counted exchange. A refusal means the user must authorize again.
func (h *MCP) refresh(ctx context.Context, id mcpgateway.Identity, rec mcpgateway.Record) (mcpgateway.Record, error) {
	key := tokencache.Key{Tenant: id.Tenant, User: id.User}
	var out zapierapi.MCPToken
	_, err := h.app.limitedExchange(ctx, key, exchangeKindMCPRefresh, func(ctx context.Context) (zapierapi.Token, error) {
		var err error
		out, err = h.app.client.RefreshMCPToken(ctx, rec.RefreshToken, rec.Resource)
		return out.Token, err
	})
	if zerr, ok := zapierapi.AsError(err); ok && zerr.Kind == zapierapi.KindRejected {
		return mcpgateway.Record{}, fmt.Errorf("%w: the refresh token was refused", mcpgateway.ErrAuthorizationRequired)
	}
	if err != nil {
		return mcpgateway.Record{}, err
	}
	rec.AccessToken, rec.RefreshToken, rec.Expiry = out.AccessToken, out.RefreshToken, out.Expiry
	if out.Scope != "" {
		rec.Scope = out.Scope
	}
	return rec, nil
}

// pkceVerifier is derived from the flow's state id, so nothing about it is
// stored or sent to the browser.
func (h *MCP) pkceVerifier(stateID string) string {
	m := hmac.New(sha256.New, h.pkceKey)
	m.Write([]byte(stateID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// mcpCatalog caches GET /v2/whitelabel/apps.
type mcpCatalog struct {
	ttl time.Duration

	mu      sync.Mutex
	fetched time.Time
	apps    map[string]zapierapi.WhitelabelApp // by id and by key
}

// resolveApp finds an app by id or key in Zapier's White Label app list.
func (h *MCP) resolveApp(ctx context.Context, key tokencache.Key, name string) (zapierapi.WhitelabelApp, error) {
	if !validAppName(name) {
		return zapierapi.WhitelabelApp{}, gateway.BadRequest(fmt.Sprintf("app must be 1-%d letters, digits or _-.@: (the app's id or key)", gateway.MaxAppID))
	}
	c := h.catalog
	c.mu.Lock()
	defer c.mu.Unlock()
	app, ok := c.apps[name]
	age := time.Since(c.fetched)
	if ok && age < c.ttl {
		return app, nil
	}
	if !ok && c.apps != nil && age < mcpAppsMissRefetch {
		return zapierapi.WhitelabelApp{}, errUnknownMCPApp(name)
	}
	var list []zapierapi.WhitelabelApp
	err := gateway.Guard(h.app.tokens.apiBreaker, func() (err error) {
		list, err = h.app.client.ListWhitelabelApps(gateway.WithTenant(ctx, key.Tenant), h.app.APIURL, "")
		return err
	})
	if err != nil {
		return zapierapi.WhitelabelApp{}, gateway.CallError(err)
	}
	c.apps, c.fetched = map[string]zapierapi.WhitelabelApp{}, time.Now()
	for _, a := range list {
		if zapierapi.CheckURL(a.Links.MCPServerURL) != nil || zapierapi.CheckURL(a.Links.MCPAuthorizeURL) != nil || !validAppName(a.ID) {
			continue // no MCP for this app
		}
		c.apps[a.ID] = a
		if a.Key != "" {
			c.apps[a.Key] = a
		}
	}
	if app, ok := c.apps[name]; ok {
		return app, nil
	}
	return zapierapi.WhitelabelApp{}, errUnknownMCPApp(name)
}

func errUnknownMCPApp(name string) *gateway.Error {
	return &gateway.Error{Status: http.StatusNotFound, Code: "mcp_app_unknown",
		Message: "no White Label app " + name + " with an MCP server in GET /v2/whitelabel/apps"}
}

func (h *MCP) resource(app zapierapi.WhitelabelApp) string {
	if h.Resource == mcpResourceAuthorize {
		return app.Links.MCPAuthorizeURL
	}
	return app.Links.MCPServerURL
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*MCP)(nil)
	_ caddy.CleanerUpper          = (*MCP)(nil)
	_ caddyhttp.MiddlewareHandler = (*MCP)(nil)
	_ caddyfile.Unmarshaler       = (*MCP)(nil)
)
