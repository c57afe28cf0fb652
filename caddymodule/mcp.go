package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(MCP{})
	httpcaddyfile.RegisterHandlerDirective("zapier_mcp", parseHandler[MCP])
	httpcaddyfile.RegisterDirectiveOrder("zapier_mcp", httpcaddyfile.Before, "respond")
}

const mcpTokensPrefix = "zapier/mcp/tokens"

// MCPToolPolicy allows and denies tools by patterns on "<app>__<tool>"
// (mcpgateway.ToolPolicy).
type MCPToolPolicy = mcpgateway.ToolPolicy

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
// Every route needs the identity headers, exactly as zapier_auth does. The
// routes are served by mcpgateway.Handler.
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
	// What the aggregate's tools/list does with the tools of an app whose
	// authorization expired: "mark" (the default: listed, the description
	// says so) or "hide". A call of one answers with a link either way.
	ExpiredTools string `json:"expired_tools,omitempty"`
	// How long the single-use authorize link a tool call answers with
	// stays valid. Default 10m.
	ConnectLinkTTL caddy.Duration `json:"connect_link_ttl,omitempty"`
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
	// How long a decrypted token record is used from memory without news
	// of a change from the other gateways (with the zapier app's
	// cache.redis they tell each other at once). Default 2s; negative
	// ("off" in the Caddyfile): every request reads the storage.
	TokenCacheTTL caddy.Duration `json:"token_cache_ttl,omitempty"`

	handler *mcpgateway.Handler
	audit   *zap.Logger
	redis   *redis.Client // the shared tool-call cap's; nil without cache.redis
	bus     *redis.Client // the token cache's invalidations; nil without cache.redis
}

// CaddyModule returns the Caddy module information.
func (MCP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_mcp",
		New: func() caddy.Module { return new(MCP) },
	}
}

// Provision checks the options and builds the handler from the app's
// pieces: the token store, the state keeper, the tool-call cap.
func (h *MCP) Provision(ctx caddy.Context) error {
	if h.CallbackURL == "" {
		return errors.New("zapier_mcp: callback_url is required (the MCP redirect URI registered with Zapier)")
	}
	if err := zapierapi.CheckURL(h.CallbackURL); err != nil {
		return fmt.Errorf("zapier_mcp: callback_url: %w", err)
	}
	cfg := mcpgateway.HandlerConfig{
		CallbackURL: h.CallbackURL, Resource: h.Resource, Scopes: h.Scopes, PKCE: h.PKCE,
		AppsCacheTTL: time.Duration(h.AppsCacheTTL), MaxReplayBody: h.MaxReplayBody,
		Limit:              &mcpgateway.CallLimiter{PerMinute: h.ToolCallsPerMinute},
		StreamsPerIdentity: h.StreamsPerIdentity, StreamWriteTimeout: time.Duration(h.StreamWriteTimeout),
		AggregateListTTL: time.Duration(h.AggregateListTTL), AggregateSessionsPerIdentity: h.AggregateSessionsPerIdentity,
		AggregateSessionsMax: h.AggregateSessionsMax, AggregateIdleTimeout: time.Duration(h.AggregateIdleTimeout),
		ExpiredTools: h.ExpiredTools, LinkTTL: time.Duration(h.ConnectLinkTTL),
	}
	if err := cfg.Check(); err != nil {
		return fmt.Errorf("zapier_mcp: %w", err)
	}
	h.Resource, h.Scopes, h.AppsCacheTTL = cfg.Resource, cfg.Scopes, caddy.Duration(cfg.AppsCacheTTL)
	if h.StateTTL == 0 {
		h.StateTTL = caddy.Duration(connect.DefaultStateTTL)
	}
	if h.StateTTL < 0 || time.Duration(h.StateTTL) > connect.MaxStateTTL {
		return fmt.Errorf("zapier_mcp: state_ttl must be between 0 and %s", connect.MaxStateTTL)
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	logger := ctx.Logger()
	h.audit = logger.Named("audit")

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
	if cfg.Tools, err = mcpgateway.NewPolicy(h.Tools, h.TenantTools); err != nil {
		return fmt.Errorf("zapier_mcp: %w", err)
	}
	if err := h.shareToolCallCap(app, cfg.Limit, store); err != nil {
		return err
	}
	if h.bus, err = h.tokenCache(app, &cfg); err != nil {
		return err
	}
	states := newStateKeeper(ctx, ctx.Storage(), time.Duration(h.StateTTL))
	store.Owners = gateway.NewNamespace(gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
		keys, err := states.Keys(ctx)
		if err != nil {
			return nil, err
		}
		return keys.NamesKey(), nil
	}))
	cfg.Policy, cfg.Caller, cfg.Exchange = app.policy, app.caller(), app.limitedExchange
	cfg.SignJWT = app.mintJWT
	cfg.Store, cfg.States, cfg.PKCEKey = store, sweptStates{states}, mcpgateway.PKCEKey([]byte(secret))
	cfg.StateTTL, cfg.ReturnOrigins = time.Duration(h.StateTTL), app.ReturnOrigins
	cfg.Transport, cfg.Logger, cfg.Observe = mcpTransport, logger, h.observe
	cfg.Authorized = func(o mcpgateway.AuthOutcome) { metrics.MCP.Authorizations.WithLabelValues(string(o)).Inc() }
	if app.meter != nil {
		app.meter.MeterMCP(&cfg) // usage counting and quota
	}
	handler, err := mcpgateway.NewHandler(cfg)
	if err != nil {
		return fmt.Errorf("zapier_mcp: %w", err)
	}
	h.handler = handler
	for _, s := range handler.UserStores() {
		app.registerUserStore(gateway.PhaseLocal, s)
	}
	metrics.RegisterMCP(ctx.GetMetricsRegistry())
	return nil
}

// mcpTransport is shared by every config, so a reload keeps the upstream
// connections (and never cuts a running stream).
var mcpTransport = mcpgateway.NewTransport()

// ServeHTTP delegates to the handler; what it leaves unanswered (internal
// failures, callers gone) Caddy logs and answers.
func (h *MCP) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return caddyError(h.handler.Serve(w, withUsageTickets(r)))
}

// shareToolCallCap makes tool_calls_per_minute one window per user for
// every gateway sharing the Redis of cache.redis, with the api_budget's
// Redis window (a sorted set per user, under the same prefix and
// timeout). No network I/O here: the client connects on first use.
func (h *MCP) shareToolCallCap(app *App, limit *mcpgateway.CallLimiter, store *mcpgateway.Store) error {
	r := app.Cache.Redis
	if limit.PerMinute <= 0 || r == nil {
		return nil
	}
	client, err := sharedtokens.NewClient(caddy.NewReplacer().ReplaceKnown(r.URL, ""), time.Duration(r.Timeout))
	if err != nil {
		return fmt.Errorf("zapier_mcp: tool_calls_per_minute: %w", err)
	}
	h.redis = client
	prefix := cmp.Or(r.Prefix, sharedtokens.DefaultPrefix) + hashHex(app.ClientID)[:16] + ":"
	timeout := cmp.Or(time.Duration(r.Timeout), sharedtokens.DefaultTimeout)
	limit.Shared = func(ctx context.Context, id mcpgateway.Identity, perMinute int) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		// The user is named by the store's keyed hash, never in clear.
		window := budget.NewRedisWindow(client, prefix, "mcp_tool_calls:"+store.Subject(id))
		return window.Take(ctx, budget.Limit{Requests: perMinute, Per: time.Minute}, 1)
	}
	return nil
}

// Cleanup ends the aggregate endpoint's upstream sessions.
func (h *MCP) Cleanup() error {
	if h.handler != nil {
		h.handler.Close()
	}
	if h.bus != nil {
		_ = h.bus.Close()
	}
	if h.redis != nil {
		return h.redis.Close()
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*MCP)(nil)
	_ caddy.CleanerUpper          = (*MCP)(nil)
	_ caddyhttp.MiddlewareHandler = (*MCP)(nil)
	_ caddyfile.Unmarshaler       = (*MCP)(nil)
)
