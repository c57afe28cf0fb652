package mcpgateway

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

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// The resources an MCP connect token (and the authorize and the code
// exchange) may be bound to: the app's MCP server URL or its authorize URL.
const (
	ResourceServer    = "server_url"
	ResourceAuthorize = "authorize_url"
)

// Defaults of the handler's own options.
const (
	DefaultAppsCacheTTL = 10 * time.Minute
	// appsMissRefetch is how soon an unknown app name may fetch the app
	// list again.
	appsMissRefetch = 5 * time.Second
	// refreshMargin: a token expiring within it is refreshed before use.
	refreshMargin = 60 * time.Second
)

// Exchange kinds of the MCP flow (the gateway counts exchanges by kind).
const (
	ExchangeConnectToken = "mcp_connect_token" // partner JWT → MCP connect token
	ExchangeCode         = "mcp_code"          // authorization code → MCP tokens
	ExchangeRefresh      = "mcp_refresh"       // refresh token → MCP tokens
)

// ExchangeKinds are all the exchange kinds (metrics pre-register them).
var ExchangeKinds = []string{ExchangeConnectToken, ExchangeCode, ExchangeRefresh}

// AuthOutcome is how an MCP authorize callback ended (the metric's label).
type AuthOutcome string

// The outcomes of an MCP authorize callback.
const (
	AuthSuccess      AuthOutcome = "success"
	AuthStateInvalid AuthOutcome = "state_invalid"
	AuthError        AuthOutcome = "authorization_error" // ?error= from Zapier
	AuthFailed       AuthOutcome = "failed"
)

// AuthOutcomes lists every AuthOutcome.
var AuthOutcomes = []AuthOutcome{AuthSuccess, AuthStateInvalid, AuthError, AuthFailed}

// Exchanger runs one token exchange of kind for id (within the gateway's
// limit on concurrent exchanges, through the token endpoint's breaker,
// counted and traced): call makes it.
type Exchanger func(ctx context.Context, id gateway.Identity, kind string, call func(ctx context.Context) (zapierapi.Token, error)) (zapierapi.Token, error)

// States is what the authorize flow needs of the state keeper (Spend may
// add a background sweep).
type States interface {
	Issue(ctx context.Context, st *connect.State, tenant, user string) (state, nonce string, err error)
	Open(ctx context.Context, r *http.Request, raw string, flow connect.Flow, tenant, user string) (*connect.State, error)
	Spend(ctx context.Context, st *connect.State) error
}

// HandlerConfig is what the zapier_mcp handler is built from: the core's
// route policy and Zapier caller, the token store and state keeper, and
// the few things of the gateway that are not in the core, as funcs.
type HandlerConfig struct {
	// Policy serves every route (method, Host and Origin, identity, the
	// limits of the route's class).
	Policy *gateway.Policy
	// Caller's Client, APIURL and Breaker make the calls to Zapier (the
	// White Label app list, the MCP exchanges).
	Caller *gateway.Caller
	// Exchange runs the MCP token exchanges.
	Exchange Exchanger
	// SignJWT mints the partner JWT for id (the connect-token exchange).
	SignJWT func(ctx context.Context, id gateway.Identity) (string, error)
	// Store keeps the users' MCP tokens; States the authorize flows.
	Store  *Store
	States States

	// CallbackURL is the redirect URI registered with Zapier (this
	// handler's callback route); Resource which link the tokens are bound
	// to (ResourceServer by default); Scopes the connect token's.
	CallbackURL string
	Resource    string
	Scopes      []string
	// PKCE sends an S256 challenge, with verifiers derived from PKCEKey.
	PKCE    bool
	PKCEKey []byte
	// StateTTL is how long a started flow may take (the flow cookie's age);
	// AppsCacheTTL how long GET /v2/whitelabel/apps is reused.
	StateTTL     time.Duration
	AppsCacheTTL time.Duration
	// ReturnOrigins are where a flow may return to besides this site.
	ReturnOrigins []string

	// The per-app proxy and the aggregate endpoint: Transport sends the
	// upstream requests (shared across configs so a reload keeps
	// connections); Tools is the tool policy (nil allows all); Limit the
	// tool-call cap (nil is none).
	Transport                    http.RoundTripper
	Tools                        Policy
	Limit                        *CallLimiter
	MaxReplayBody                int64
	StreamsPerIdentity           int
	StreamWriteTimeout           time.Duration
	AggregateListTTL             time.Duration
	AggregateSessionsPerIdentity int
	AggregateSessionsMax         int
	AggregateIdleTimeout         time.Duration
	// ExpiredTools is what the aggregate's tools/list does with the tools
	// of an expired authorization (ExpiredMark or ExpiredHide); LinkTTL
	// how long the authorize link a tool call answers with stays valid
	// (DefaultLinkTTL).
	ExpiredTools string
	LinkTTL      time.Duration
	// TokenCacheTTL bounds how long a decrypted token record is used from
	// memory without a live Invalidations channel (DefaultTokenCacheTTL
	// when 0; negative: no cache, every request reads the storage).
	// Invalidations, if set, carry forgets and refreshes between the
	// gateways sharing the storage (RedisInvalidations).
	TokenCacheTTL time.Duration
	Invalidations Invalidations

	// Logger logs refusals and offboarding warnings; nil is a no-op.
	Logger *zap.Logger
	// Observe hears of every proxied request (metrics, audit, spans); may
	// be nil.
	Observe func(ctx context.Context, id Identity, c Call)
	// Authorized counts a finished authorize callback; may be nil.
	Authorized func(AuthOutcome)
}

// Handler serves zapier_mcp's routes, relative to where it is mounted:
//
//	GET    authorize?app=&return_to=  → 302 to the app's mcp_authorize_url
//	GET    callback?code=|error=&state= → exchanges the code, stores the tokens, 302 to return_to
//	GET    apps                       → the caller's authorized apps
//	DELETE apps/{app}                 → forgets one
//	POST|GET|DELETE {app}             → the app's MCP server, for the caller
//	POST|GET|DELETE (the root)        → one MCP server with every authorized app's tools
//
// Every route needs the identity.
type Handler struct {
	cfg      HandlerConfig
	logger   *zap.Logger
	tokens   *Tokens
	proxy    *Proxy
	agg      *Aggregator
	catalog  catalog
	authBase string     // <mount>/authorize, from the callback URL
	links    *linkStore // the authorize links' one-time tokens; nil without a namespace
}

// NewHandler builds the handler; its error is a configuration mistake.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Policy == nil || cfg.Caller == nil || cfg.Exchange == nil || cfg.SignJWT == nil || cfg.Store == nil || cfg.States == nil {
		return nil, errors.New("mcpgateway: Policy, Caller, Exchange, SignJWT, Store and States are required")
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport()
	}
	if cfg.Limit == nil {
		cfg.Limit = &CallLimiter{}
	}
	h := &Handler{cfg: cfg, logger: cfg.Logger, catalog: catalog{ttl: cfg.AppsCacheTTL}}
	if h.logger == nil {
		h.logger = zap.NewNop()
	}
	h.tokens = NewTokens(cfg.Store, h.refresh, refreshMargin, nil)
	if cfg.TokenCacheTTL >= 0 {
		h.tokens.EnableCache(cfg.TokenCacheTTL, cfg.Invalidations)
	}
	h.proxy = &Proxy{Tokens: h.tokens, MaxReplayBody: cfg.MaxReplayBody, Observe: cfg.Observe,
		Client: &http.Client{Transport: cfg.Transport}, Policy: cfg.Tools, Limit: cfg.Limit,
		StreamsPerIdentity: cfg.StreamsPerIdentity, WriteTimeout: cfg.StreamWriteTimeout}
	h.agg = &Aggregator{Tokens: h.tokens, Base: cfg.Transport, ListTTL: cfg.AggregateListTTL,
		Policy: cfg.Tools, Observe: cfg.Observe, Limit: cfg.Limit, SessionsPerIdentity: cfg.AggregateSessionsPerIdentity,
		MaxSessions: cfg.AggregateSessionsMax, IdleTimeout: cfg.AggregateIdleTimeout, ExpiredTools: cfg.ExpiredTools}
	if base, ok := strings.CutSuffix(cfg.CallbackURL, "/callback"); ok {
		h.authBase = base + "/authorize"
	}
	if cfg.Store.Owners != nil {
		h.links = &linkStore{kv: cfg.Store.kv, names: cfg.Store.Owners, ttl: cfg.LinkTTL}
		h.agg.Connect = h.connectLink
	}
	return h, nil
}

// UserStores are the handler's stores offboarding walks: the users' MCP
// authorizations and their aggregate sessions.
func (h *Handler) UserStores() []gateway.UserStore {
	return []gateway.UserStore{
		AuthorizationStore{Tokens: h.tokens, Aggregator: h.agg, Unattributed: func(n int) {
			h.logger.Warn("offboarding a tenant: MCP authorizations from before sealed owners, unused since, cannot be attributed; they may be the tenant's (forget its users one by one)",
				zap.Int("records", n))
		}},
		SessionStore{Aggregator: h.agg},
		LinkStore{links: h.links},
	}
}

// Close ends the aggregate endpoint's upstream sessions and stops
// listening for token invalidations.
func (h *Handler) Close() {
	h.agg.Close()
	h.tokens.Close()
}

// The routes' classes. The authorize flow and the apps list spend Zapier
// calls per request like Connect's routes, so they are limited; an agent's
// MCP messages are chatty by nature (a message per request), and tool calls
// have their own cap.
var (
	browserRoute = gateway.Route{Methods: []string{http.MethodGet}, Browser: true}
	agentRoute   = gateway.Route{Methods: []string{http.MethodPost, http.MethodGet, http.MethodDelete}, Class: gateway.Agent}
)

// ServeHTTP serves r as a plain http.Handler; what Serve leaves unanswered
// is answered as gateway.Unanswered does (Caddy calls Serve and logs it).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gateway.Unanswered(w, h.Serve(w, r))
}

// Serve serves r. It answers everything itself but internal failures and
// callers gone away, which it returns as *gateway.HandlerError for the
// server (Caddy) to log and answer.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request) error {
	p := strings.TrimPrefix(r.URL.Path, "/")
	serve := h.cfg.Policy.Serve
	switch {
	case p == "authorize":
		return serve(w, r, browserRoute, h.serveAuthorize)
	case p == "callback":
		return serve(w, r, browserRoute, h.serveCallback)
	case p == "apps":
		return serve(w, r, gateway.Route{Methods: []string{http.MethodGet}}, h.serveApps)
	case strings.HasPrefix(p, "apps/"):
		app := strings.TrimPrefix(p, "apps/")
		return serve(w, r, gateway.Route{Methods: []string{http.MethodDelete}}, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
			return h.serveForget(w, r, id, app)
		})
	case p == "":
		return serve(w, r, agentRoute, h.serveAggregate)
	case !strings.Contains(p, "/") && gateway.ValidAppName(p):
		return serve(w, r, agentRoute, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
			return h.serveMCP(w, r, id, p)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_mcp route (authorize, callback, apps, apps/{app}, {app})"})
	return nil
}

func identityOf(id gateway.Identity) Identity { return Identity{Tenant: id.Tenant, User: id.User} }

// serveAggregate is the mount's root: one MCP server with the tools of
// every app the caller authorized.
func (h *Handler) serveAggregate(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	h.agg.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), identityOf(id))))
	return nil
}

// serveMCP proxies to the app's MCP server with the caller's MCP token.
func (h *Handler) serveMCP(w http.ResponseWriter, r *http.Request, id gateway.Identity, app string) error {
	err := h.proxy.Serve(w, r, identityOf(id), app)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrAuthorizationRequired):
		h.writeAuthorizationRequired(w, app)
		return nil
	}
	if e := proxyError(err); e != nil {
		gateway.WriteError(w, e)
		return nil
	}
	return gateway.Fail(w, r, refreshError(err))
}

// proxyError is the answer to a proxy failure of the gateway's own, or nil.
func proxyError(err error) *gateway.Error {
	switch {
	case errors.Is(err, ErrToolCallLimit):
		var le *LimitError
		retry := time.Second
		if errors.As(err, &le) {
			retry = max(le.RetryAfter, time.Second)
		}
		return &gateway.Error{Status: http.StatusTooManyRequests, Code: "mcp_tool_call_limit",
			Message: "the user's cap on tool calls per minute is reached; retry later", RetryAfter: retry}
	case errors.Is(err, ErrBodyTooLarge):
		return &gateway.Error{Status: http.StatusRequestEntityTooLarge, Code: "mcp_request_too_large",
			Message: "the request body is larger than max_replay_body, so the tool policy cannot check it"}
	case errors.Is(err, ErrBodyUnreadable):
		return gateway.BadRequest("the request body is not JSON-RPC, so the tool policy cannot check it")
	case errors.Is(err, ErrDuplicateMember):
		return &gateway.Error{Status: http.StatusBadRequest, Code: "mcp_request_ambiguous",
			Message: "a JSON-RPC message (or its params) names a member twice, so the tool policy cannot check it"}
	case errors.Is(err, ErrHeaderMismatch):
		return &gateway.Error{Status: http.StatusBadRequest, Code: "mcp_header_mismatch",
			Message: "the Mcp-Method or Mcp-Name header does not match the JSON-RPC message in the body"}
	case errors.Is(err, ErrTooManyStreams):
		return &gateway.Error{Status: http.StatusTooManyRequests, Code: "mcp_too_many_streams",
			Message: "the user has too many MCP streams and requests open on the per-app routes; close one and retry", RetryAfter: time.Second}
	case errors.Is(err, ErrToolDenied):
		return &gateway.Error{Status: http.StatusForbidden, Code: "mcp_tool_denied",
			Message: "the gateway's tool policy does not allow this tool"}
	case errors.Is(err, ErrRetry):
		return &gateway.Error{Status: http.StatusServiceUnavailable, Code: "mcp_retry",
			Message: "the MCP token was refreshed but the request was too large to replay; send it again", RetryAfter: time.Second}
	case errors.Is(err, ErrUpstream):
		return &gateway.Error{Status: http.StatusBadGateway, Code: "mcp_upstream_failed",
			Message: "the app's MCP server could not be reached"}
	}
	return nil
}

// writeAuthorizationRequired answers 401 mcp_authorization_required with
// where to send the user, in the gateway's error shape.
func (h *Handler) writeAuthorizationRequired(w http.ResponseWriter, app string) {
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
	gateway.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": body})
}

// refreshError maps a failed refresh (or storage failure) to an answer.
func refreshError(err error) error {
	if _, ok := zapierapi.AsError(err); ok {
		return gateway.ExchangeError(err)
	}
	return err
}

// refresh is the Tokens' refresh call: the refresh grant, as one limited,
// counted exchange. A refusal means the user must authorize again.
func (h *Handler) refresh(ctx context.Context, id Identity, rec Record) (Record, error) {
	var out zapierapi.MCPToken
	_, err := h.cfg.Exchange(ctx, gateway.Identity{Tenant: id.Tenant, User: id.User}, ExchangeRefresh, func(ctx context.Context) (zapierapi.Token, error) {
		var err error
		out, err = h.cfg.Caller.Client.RefreshMCPToken(ctx, rec.RefreshToken, rec.Resource)
		return out.Token, err
	})
	if zerr, ok := zapierapi.AsError(err); ok && zerr.Kind == zapierapi.KindRejected {
		return Record{}, fmt.Errorf("%w: the refresh token was refused", ErrAuthorizationRequired)
	}
	if err != nil {
		return Record{}, err
	}
	rec.AccessToken, rec.RefreshToken, rec.Expiry = out.AccessToken, out.RefreshToken, out.Expiry
	if out.Scope != "" {
		rec.Scope = out.Scope
	}
	return rec, nil
}

// PKCEKey derives the key PKCE verifiers are derived with from the token
// key's secret.
func PKCEKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("caddy-zapier mcp pkce"))
	return m.Sum(nil)
}

// pkceVerifier is derived from the flow's state id, so nothing about it is
// stored or sent to the browser.
func (h *Handler) pkceVerifier(stateID string) string {
	m := hmac.New(sha256.New, h.cfg.PKCEKey)
	m.Write([]byte(stateID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func pkceChallenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// catalog caches GET /v2/whitelabel/apps.
type catalog struct {
	ttl time.Duration

	mu      sync.Mutex
	fetched time.Time
	apps    map[string]zapierapi.WhitelabelApp // by id and by key
}

// resolveApp finds an app by id or key in Zapier's White Label app list.
func (h *Handler) resolveApp(ctx context.Context, id gateway.Identity, name string) (zapierapi.WhitelabelApp, error) {
	if !gateway.ValidAppName(name) {
		return zapierapi.WhitelabelApp{}, gateway.BadRequest(fmt.Sprintf("app must be 1-%d letters, digits or _-.@: (the app's id or key)", gateway.MaxAppID))
	}
	c := &h.catalog
	c.mu.Lock()
	defer c.mu.Unlock()
	app, ok := c.apps[name]
	age := time.Since(c.fetched)
	if ok && age < c.ttl {
		return app, nil
	}
	if !ok && c.apps != nil && age < appsMissRefetch {
		return zapierapi.WhitelabelApp{}, errUnknownApp(name)
	}
	var list []zapierapi.WhitelabelApp
	caller := h.cfg.Caller
	err := gateway.Guard(caller.Breaker, func() (err error) {
		list, err = caller.Client.ListWhitelabelApps(gateway.WithTenant(ctx, id.Tenant), caller.APIURL, "")
		return err
	})
	if err != nil {
		return zapierapi.WhitelabelApp{}, gateway.CallError(err)
	}
	c.apps, c.fetched = map[string]zapierapi.WhitelabelApp{}, time.Now()
	for _, a := range list {
		if zapierapi.CheckURL(a.Links.MCPServerURL) != nil || zapierapi.CheckURL(a.Links.MCPAuthorizeURL) != nil || !gateway.ValidAppName(a.ID) {
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
	return zapierapi.WhitelabelApp{}, errUnknownApp(name)
}

func errUnknownApp(name string) *gateway.Error {
	return &gateway.Error{Status: http.StatusNotFound, Code: "mcp_app_unknown",
		Message: "no White Label app " + name + " with an MCP server in GET /v2/whitelabel/apps"}
}

func (h *Handler) resource(app zapierapi.WhitelabelApp) string {
	if h.cfg.Resource == ResourceAuthorize {
		return app.Links.MCPAuthorizeURL
	}
	return app.Links.MCPServerURL
}

// Check sets the defaults of the handler's own options and checks them
// (nothing is stored or called); NewHandler checks them too.
func (cfg *HandlerConfig) Check() error {
	switch cfg.Resource {
	case "":
		cfg.Resource = ResourceServer
	case ResourceServer, ResourceAuthorize:
	default:
		return fmt.Errorf("resource must be %s or %s", ResourceServer, ResourceAuthorize)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = zapierapi.DefaultMCPConnectScopes
	}
	if cfg.AppsCacheTTL <= 0 {
		cfg.AppsCacheTTL = DefaultAppsCacheTTL
	}
	switch cfg.ExpiredTools {
	case "":
		cfg.ExpiredTools = ExpiredMark
	case ExpiredMark, ExpiredHide:
	default:
		return fmt.Errorf("expired_tools must be %s or %s", ExpiredMark, ExpiredHide)
	}
	if cfg.LinkTTL < 0 {
		return errors.New("connect_link_ttl must not be negative")
	}
	if cfg.LinkTTL == 0 {
		cfg.LinkTTL = DefaultLinkTTL
	}
	if cfg.Limit != nil && cfg.Limit.PerMinute < 0 {
		return errors.New("tool_calls_per_minute must not be negative")
	}
	if cfg.AggregateSessionsPerIdentity < 0 || cfg.AggregateSessionsMax < 0 || cfg.AggregateIdleTimeout < 0 ||
		cfg.StreamsPerIdentity < 0 || cfg.StreamWriteTimeout < 0 {
		return errors.New("aggregate_sessions_per_identity, aggregate_sessions_max, aggregate_idle_timeout, streams_per_identity and stream_write_timeout must not be negative")
	}
	return nil
}
