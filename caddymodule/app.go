// Package caddymodule is the Caddy adapter of caddy-zapier: the `zapier` app,
// the zapier_auth and zapier_jwks handlers, their Caddyfile syntax, the admin
// API and the metrics. The work itself is done by the plain-Go packages jwks,
// tokencache and zapierapi.
package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/actionclaims"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/jwks"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/tokenstore"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults, filled in Provision so Caddyfile and JSON users get the same
// behaviour and adapted JSON stays minimal.
const (
	defaultAudience     = "connect.zapier.com"
	defaultUserClaim    = "sub"
	defaultTenantClaim  = "org_id"
	defaultJWTTTL       = 5 * time.Minute
	maxJWTTTL           = 5 * time.Minute
	defaultSigningAlg   = "ES256"
	defaultKeyRotation  = 30 * 24 * time.Hour
	defaultKeyOverlap   = 24 * time.Hour
	defaultKeySync      = time.Minute
	minKeySync          = 100 * time.Millisecond
	defaultTokenURL     = "https://zapier.com/oauth/token"
	defaultAPIURL       = "https://api.zapier.com"
	defaultConnectURL   = "https://connect.zapier.com"
	defaultClientAuth   = "post"
	defaultTimeout      = 10 * time.Second
	defaultMaxInflight  = 16
	defaultUserHeader   = "X-Zapier-User"
	defaultTenantHeader = "X-Zapier-Tenant"
	defaultCacheSize    = 100000
	defaultRefreshAhead = 60 * time.Second
	defaultTokenTTL     = 10 * time.Minute
	defaultNegativeTTL  = 10 * time.Second
	// expiryMargin keeps a token that is about to expire from being injected
	// into a request that would reach Zapier after it expired.
	expiryMargin   = 5 * time.Second
	keysStorageKey = "zapier/keys.json"
)

var (
	defaultScopes         = []string{"external", "connection:read", "connection:write", "zap", "zap:write", "action:run"}
	defaultTrustedSources = []string{"127.0.0.0/8", "::1/128"}
)

// App is the `zapier` app: the partner's Zapier White Label credentials, the
// signing keys, and the per-(tenant, user) access token cache that the
// zapier_* handlers share.
type App struct {
	// The client id Zapier issued to the partner. Placeholders such as
	// {env.ZAPIER_CLIENT_ID} are resolved at provision time. Required.
	ClientID string `json:"client_id,omitempty"`
	// The client secret. Use {env.*} or {file.*}; it is never logged. Required.
	ClientSecret string `json:"client_secret,omitempty"`
	// The `iss` registered with Zapier. Required.
	Issuer string `json:"issuer,omitempty"`
	// The `aud` of minted JWTs. Default: connect.zapier.com.
	Audience string `json:"audience,omitempty"`
	// The claim carrying the user id. Default: sub.
	UserClaim string `json:"user_claim,omitempty"`
	// The claim carrying the tenant id. Default: org_id.
	TenantClaim string `json:"tenant_claim,omitempty"`
	// Lifetime of minted JWTs. Default 5m, which is also the maximum.
	JWTTTL caddy.Duration `json:"jwt_ttl,omitempty"`
	// ES256 (default), ES384, ES512, RS256, RS384 or RS512.
	SigningAlg string `json:"signing_alg,omitempty"`
	// Scheduled key rotation period. Default 30d; 0 turns it off.
	KeyRotation *caddy.Duration `json:"key_rotation,omitempty"`
	// How long a next key is published before it signs, and a retired key
	// after it stopped. Default 24h.
	KeyOverlap caddy.Duration `json:"key_overlap,omitempty"`
	// How often the key set is re-read from storage: the bound on how long
	// a rotation made by another gateway sharing the storage takes to show
	// here. Default 1m, and at most key_overlap/4.
	KeySync caddy.Duration `json:"key_sync,omitempty"`
	// Scopes requested for user access tokens.
	Scopes []string `json:"scopes,omitempty"`
	// Zapier's token endpoint. Default https://zapier.com/oauth/token.
	TokenURL string `json:"token_url,omitempty"`
	// Zapier's API. Default https://api.zapier.com.
	APIURL string `json:"api_url,omitempty"`
	// Zapier's Connect UI. Default https://connect.zapier.com.
	ConnectURL string `json:"connect_url,omitempty"`
	// The redirect flow's callback URL registered with Zapier.
	CallbackURL string `json:"callback_url,omitempty"`
	// Origins a finished connect flow may return to.
	ReturnOrigins []string `json:"return_origins,omitempty"`

	Exchange *ExchangeConfig `json:"exchange,omitempty"`
	Identity *IdentityConfig `json:"identity,omitempty"`
	Cache    *CacheConfig    `json:"cache,omitempty"`
	// The request budget in front of Zapier's API (budget.go). On by
	// default with Zapier's documented limits.
	APIBudget *APIBudgetConfig `json:"api_budget,omitempty"`
	// Per-identity and per-tenant limits of the end-user routes (ratelimit.go).
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`
	// The billing and rate_limit claims of zapier_actions' tokens (claims.go).
	Claims *actionclaims.Config `json:"claims,omitempty"`
	// Usage counting and the tenants' task quotas (usage.go).
	Usage *UsageConfig `json:"usage,omitempty"`
	Quota *QuotaConfig `json:"quota,omitempty"`

	clientSecret string // resolved; never logged
	trusted      []netip.Prefix
	userHeader   string // canonical header names
	tenantHeader string
	poolKey      string

	ctx       caddy.Context
	logger    *zap.Logger
	keys      *jwks.Manager
	client    *zapierapi.Client
	appDir    *gateway.AppDirectory // app keys ↔ UUIDs from GET /v2/apps (connect_apps.go)
	tokens    *tokenstore.Store
	metrics   *metrics.Set
	events    *appEvents // events.go
	inflight  chan struct{}
	shared    *sharedtokens.Tier // the Redis token tier; nil when off (sharedtokens.go)
	budget    *pooledBudget      // nil when api_budget is off (budget.go)
	gate      *gateway.APIGate   // the way out to Zapier's API: budget, breaker, counts
	budgetKey string
	limits    *endUserLimits  // ratelimit.go
	policy    *gateway.Policy // every end-user route's (routes.go)
	meter     *usageMeter     // nil with usage off (usage.go)

	claimsPolicy *actionclaims.Policy // nil: no claims (claims.go)

	keysLoad *keysLoad
	// userStores is every store holding per-user data; offboarding walks it
	// (offboard.go). Handlers register theirs in their Provision.
	userStores *gateway.Registry
}

// keysLoad guards the one-time load of the key set.
type keysLoad struct {
	mu     sync.Mutex
	loaded atomic.Bool
}

// ExchangeConfig holds the token-exchange wire values, which Zapier's public
// documentation does not pin, and the exchange limits.
type ExchangeConfig struct {
	GrantType        string `json:"grant_type,omitempty"`
	SubjectTokenType string `json:"subject_token_type,omitempty"`
	AccessTokenType  string `json:"access_token_type,omitempty"`
	ConnectTokenType string `json:"connect_token_type,omitempty"`
	// post (form fields, default) or basic (HTTP Basic).
	ClientAuth string `json:"client_auth,omitempty"`
	// Timeout of one attempt. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Concurrent exchanges. Default 16.
	MaxInflight int `json:"max_inflight,omitempty"`
}

// IdentityConfig says where the end user's identity comes from and which
// peers may assert it.
type IdentityConfig struct {
	UserHeader   string `json:"user_header,omitempty"`
	TenantHeader string `json:"tenant_header,omitempty"`
	// CIDRs (or single addresses) of peers whose identity headers are
	// honoured. Default loopback only.
	TrustedSources []string `json:"trusted_sources,omitempty"`
	// Host names a request from a loopback source may name in Host (and
	// browser-facing routes accept in Origin) besides loopback names, the
	// site's own names, callback_url's host and return_origins: a DNS
	// rebinding page names its own host and is refused.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
}

// CacheConfig sizes the access token cache.
type CacheConfig struct {
	Size         int            `json:"size,omitempty"`
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`
	DefaultTTL   caddy.Duration `json:"default_ttl,omitempty"`
	NegativeTTL  caddy.Duration `json:"negative_ttl,omitempty"`
	// Redis turns on the token tier shared by several gateways (sharedtokens.go).
	Redis *RedisConfig `json:"redis,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "zapier",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision fills defaults, resolves secrets and builds the key manager,
// Zapier client and token cache. It does no network I/O.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.keysLoad = new(keysLoad)
	a.userStores = new(gateway.Registry)
	a.setDefaults()

	repl := caddy.NewReplacer()
	a.ClientID = repl.ReplaceKnown(a.ClientID, "")
	a.clientSecret = repl.ReplaceKnown(a.ClientSecret, "")
	a.Issuer = repl.ReplaceKnown(a.Issuer, "")
	if err := a.validateConfig(); err != nil {
		return err
	}
	if err := a.provisionClaims(); err != nil {
		return err
	}
	if gateway.TrustsEveryone(a.trusted) {
		a.logger.Warn("identity.trusted_sources trusts every address: any client that reaches this server can act as any user",
			zap.Strings("trusted_sources", a.Identity.TrustedSources))
	}

	var err error
	a.keys, err = jwks.NewManager(ctx.Storage(), jwks.Config{
		Alg:         a.SigningAlg,
		Rotation:    time.Duration(*a.KeyRotation),
		Overlap:     time.Duration(a.KeyOverlap),
		Issuer:      a.Issuer,
		Audience:    a.Audience,
		UserClaim:   a.UserClaim,
		TenantClaim: a.TenantClaim,
		TTL:         time.Duration(a.JWTTTL),
		StorageKey:  keysStorageKey,
		OnError: func(err error) {
			a.logger.Error("maintaining signing keys", zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("configuring signing keys: %w", err)
	}

	a.appDir = &gateway.AppDirectory{}
	// Every API call spends budget, passes the breaker and is counted
	// (gateway.APIGate); the budget and breaker are filled in below.
	a.gate = &gateway.APIGate{APIURL: a.APIURL, TokenURL: a.TokenURL, Observe: metrics.APICall, RateLimited: a.rateLimited}
	a.client, err = zapierapi.New(zapierapi.Config{
		TokenURL:         a.TokenURL,
		ClientID:         a.ClientID,
		ClientSecret:     a.clientSecret,
		GrantType:        a.Exchange.GrantType,
		SubjectTokenType: a.Exchange.SubjectTokenType,
		AccessTokenType:  a.Exchange.AccessTokenType,
		ConnectTokenType: a.Exchange.ConnectTokenType,
		Scopes:           a.Scopes,
		ClientAuth:       a.Exchange.ClientAuth,
		Timeout:          time.Duration(a.Exchange.Timeout),
		DefaultTTL:       time.Duration(a.Cache.DefaultTTL),
		// Traced, carries traceparent (tracing.go); API calls spend budget.
		HTTPClient: &http.Client{Transport: a.gate.Transport(tracing.ZapierTransport())},
	})
	if err != nil {
		return fmt.Errorf("configuring the Zapier client: %w", err)
	}
	a.gate.RetryAfter = a.client.RetryAfter
	a.inflight = make(chan struct{}, a.Exchange.MaxInflight)
	if err := a.provisionSharedTokens(ctx); err != nil {
		return err
	}
	if err := a.provisionRateLimits(ctx); err != nil {
		return err
	}
	a.policy = a.newPolicy()
	a.registerCoreStores()

	a.metrics, err = metrics.RegisterCore(ctx.GetMetricsRegistry())
	if err != nil {
		return err
	}
	if err := a.provisionEvents(ctx); err != nil {
		return err
	}
	if err := a.provisionBudget(ctx); err != nil {
		return err
	}
	if err := a.provisionUsage(ctx); err != nil {
		return err
	}

	a.poolKey = a.cachePoolKey()
	val, loaded, err := cachePool.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		return newTokenStore(a)
	})
	if err != nil {
		return fmt.Errorf("creating the token cache: %w", err)
	}
	a.tokens = val.(*tokenstore.Store)
	if !loaded {
		a.tokens.Use(a.tokenGeneration())
	}
	a.gate.Breaker = a.tokens.APIBreaker
	return a.metrics.ObserveCache(ctx.GetMetricsRegistry(), a.tokens.Cache, a.keys)
}

func (a *App) setDefaults() {
	setDefault(&a.Audience, defaultAudience)
	setDefault(&a.UserClaim, defaultUserClaim)
	setDefault(&a.TenantClaim, defaultTenantClaim)
	setDefault(&a.SigningAlg, defaultSigningAlg)
	setDefault(&a.TokenURL, defaultTokenURL)
	setDefault(&a.APIURL, defaultAPIURL)
	setDefault(&a.ConnectURL, defaultConnectURL)
	if a.JWTTTL == 0 {
		a.JWTTTL = caddy.Duration(defaultJWTTTL)
	}
	if a.KeyRotation == nil {
		d := caddy.Duration(defaultKeyRotation)
		a.KeyRotation = &d
	}
	if a.KeyOverlap == 0 {
		a.KeyOverlap = caddy.Duration(defaultKeyOverlap)
	}
	if a.KeySync == 0 {
		a.KeySync = min(caddy.Duration(defaultKeySync), a.KeyOverlap/4)
	}
	if len(a.Scopes) == 0 {
		a.Scopes = defaultScopes
	}
	if a.Exchange == nil {
		a.Exchange = new(ExchangeConfig)
	}
	setDefault(&a.Exchange.GrantType, "urn:ietf:params:oauth:grant-type:token-exchange")
	setDefault(&a.Exchange.SubjectTokenType, "urn:ietf:params:oauth:token-type:external-jwt")
	setDefault(&a.Exchange.AccessTokenType, "urn:ietf:params:oauth:token-type:access-token")
	setDefault(&a.Exchange.ConnectTokenType, "urn:ietf:params:oauth:token-type:connect-token")
	setDefault(&a.Exchange.ClientAuth, defaultClientAuth)
	if a.Exchange.Timeout == 0 {
		a.Exchange.Timeout = caddy.Duration(defaultTimeout)
	}
	if a.Exchange.MaxInflight == 0 {
		a.Exchange.MaxInflight = defaultMaxInflight
	}
	if a.Identity == nil {
		a.Identity = new(IdentityConfig)
	}
	setDefault(&a.Identity.UserHeader, defaultUserHeader)
	setDefault(&a.Identity.TenantHeader, defaultTenantHeader)
	if a.Identity.TrustedSources == nil {
		a.Identity.TrustedSources = defaultTrustedSources
	}
	if a.Cache == nil {
		a.Cache = new(CacheConfig)
	}
	if a.Cache.Size == 0 {
		a.Cache.Size = defaultCacheSize
	}
	if a.Cache.RefreshAhead == 0 {
		a.Cache.RefreshAhead = caddy.Duration(defaultRefreshAhead)
	}
	if a.Cache.DefaultTTL == 0 {
		a.Cache.DefaultTTL = caddy.Duration(defaultTokenTTL)
	}
	if a.Cache.NegativeTTL == 0 {
		a.Cache.NegativeTTL = caddy.Duration(defaultNegativeTTL)
	}
	a.setBudgetDefaults()
}

func setDefault(field *string, value string) {
	if *field == "" {
		*field = value
	}
}

// validateConfig checks the provisioned values. Every message names the
// option, so `caddy validate` points at the line to fix.
func (a *App) validateConfig() error {
	var errs []error
	if a.ClientID == "" {
		errs = append(errs, errors.New("client_id is required (empty after resolving placeholders)"))
	}
	if a.clientSecret == "" {
		errs = append(errs, errors.New("client_secret is required (empty after resolving placeholders)"))
	}
	if a.Issuer == "" {
		errs = append(errs, errors.New("issuer is required"))
	}
	if a.JWTTTL < 0 || time.Duration(a.JWTTTL) > maxJWTTTL {
		errs = append(errs, fmt.Errorf("jwt_ttl %s is out of range: Zapier accepts at most %s", time.Duration(a.JWTTTL), maxJWTTTL))
	}
	if !jwks.ValidAlg(a.SigningAlg) {
		errs = append(errs, fmt.Errorf("signing_alg %q is not one of %s", a.SigningAlg, strings.Join(jwks.Algorithms, ", ")))
	}
	if *a.KeyRotation < 0 {
		errs = append(errs, errors.New("key_rotation must not be negative"))
	}
	if a.KeyOverlap < 0 {
		errs = append(errs, errors.New("key_overlap must not be negative"))
	}
	if a.KeyOverlap < a.JWTTTL {
		// A retired key must outlive every JWT it signed.
		errs = append(errs, fmt.Errorf("key_overlap (%s) must be at least jwt_ttl (%s)", time.Duration(a.KeyOverlap), time.Duration(a.JWTTTL)))
	}
	if a.KeySync < caddy.Duration(minKeySync) || a.KeySync > a.KeyOverlap/4 {
		// A rotation must reach every gateway well before the next key signs.
		errs = append(errs, fmt.Errorf("key_sync (%s) must be between %s and key_overlap/4 (%s)", time.Duration(a.KeySync), minKeySync, time.Duration(a.KeyOverlap/4)))
	}
	if *a.KeyRotation > 0 && *a.KeyRotation <= a.KeyOverlap {
		errs = append(errs, fmt.Errorf("key_rotation (%s) must be longer than key_overlap (%s)", time.Duration(*a.KeyRotation), time.Duration(a.KeyOverlap)))
	}
	for name, u := range map[string]string{"token_url": a.TokenURL, "api_url": a.APIURL, "connect_url": a.ConnectURL, "callback_url": a.CallbackURL} {
		if u == "" && name == "callback_url" {
			continue
		}
		if err := zapierapi.CheckURL(u); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, u, err))
		}
	}
	for _, o := range a.ReturnOrigins {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("return_origins: %w", err))
		}
	}
	switch a.Exchange.ClientAuth {
	case "post", "basic":
	default:
		errs = append(errs, fmt.Errorf("exchange.client_auth %q must be post or basic", a.Exchange.ClientAuth))
	}
	if a.Exchange.Timeout < 0 {
		errs = append(errs, errors.New("exchange.timeout must not be negative"))
	}
	if a.Exchange.MaxInflight < 0 {
		errs = append(errs, errors.New("exchange.max_inflight must not be negative"))
	}
	a.userHeader = http.CanonicalHeaderKey(a.Identity.UserHeader)
	a.tenantHeader = http.CanonicalHeaderKey(a.Identity.TenantHeader)
	if !validHeaderName(a.userHeader) || !validHeaderName(a.tenantHeader) || a.userHeader == a.tenantHeader {
		errs = append(errs, fmt.Errorf("identity.user_header %q and identity.tenant_header %q must be two distinct header names", a.Identity.UserHeader, a.Identity.TenantHeader))
	}
	trusted, err := gateway.ParseTrustedSources(a.Identity.TrustedSources)
	if err != nil {
		errs = append(errs, fmt.Errorf("identity.trusted_sources: %w", err))
	}
	a.trusted = trusted
	if a.Cache.Size < 0 {
		errs = append(errs, errors.New("cache.size must not be negative"))
	}
	if a.Cache.RefreshAhead < 0 || a.Cache.DefaultTTL < 0 || a.Cache.NegativeTTL < 0 {
		errs = append(errs, errors.New("cache durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("zapier: %w", err)
	}
	return nil
}

func checkOrigin(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an origin (scheme://host[:port])", raw)
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '-' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func (a *App) identityRules() gateway.IdentityRules {
	return gateway.NewIdentityRules(a.userHeader, a.tenantHeader, a.trusted)
}

// cachePoolKey identifies token caches that may be shared across reloads:
// tokens stay valid only while the credentials, issuer, claims and scopes
// they were obtained with are unchanged.
func (a *App) cachePoolKey() string {
	h := sha256.New()
	for _, part := range []string{
		a.TokenURL, a.ClientID, a.clientSecret, a.Issuer, a.Audience, a.UserClaim, a.TenantClaim,
		strings.Join(a.Scopes, " "), a.Exchange.GrantType, a.Exchange.SubjectTokenType, a.Exchange.AccessTokenType,
		fmt.Sprint(a.Cache.Size, a.Cache.RefreshAhead, a.Cache.NegativeTTL),
	} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Start loads the signing keys and starts their maintenance (scheduled
// rotation, pruning, and picking up rotations made by other instances).
func (a *App) Start() error {
	// From now on the shared cache exchanges with this config's client.
	a.tokens.Use(a.tokenGeneration())
	if err := a.ensureKeys(a.ctx); err != nil {
		return err
	}
	go a.keys.Run(a.ctx, 0)
	go a.syncKeys(a.ctx) // keysync.go
	return nil
}

// Stop is a no-op: the maintenance loop ends with the config's context.
func (a *App) Stop() error { return nil }

// Cleanup releases this config's reference to the shared token cache.
func (a *App) Cleanup() error {
	a.closeSharedTokens()
	if err := a.cleanupBudget(); err != nil {
		return err
	}
	if a.poolKey == "" || a.tokens == nil {
		return nil
	}
	_, err := cachePool.Delete(a.poolKey)
	return err
}

// ensureKeys loads the key set once. Handlers call it too, because apps
// start in no set order and a request may arrive before Start ran.
func (a *App) ensureKeys(ctx context.Context) error {
	l := a.keysLoad
	if l.loaded.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loaded.Load() {
		return nil
	}
	if err := a.keys.Load(ctx); err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	l.loaded.Store(true)
	return nil
}

// exchange mints a JWT for the identity and trades it for an access token
// (the core's Exchanger). It is the token cache's fetch function.
func (a *App) exchange(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
	return a.exchanger().Access(ctx, key)
}

// limitedExchange runs one token exchange of kind for key through the
// core's Exchanger: within max_inflight, through the breaker, in a span that
// is a child of the request's, counted, and logged when it fails.
func (a *App) limitedExchange(ctx context.Context, key tokencache.Key, kind string, call func(context.Context) (zapierapi.Token, error)) (zapierapi.Token, error) {
	return a.exchanger().Run(ctx, key, kind, call)
}

// exchanger is the core's Exchanger over this config's limit, client and
// keys, and the token cache's breaker (which outlives reloads).
func (a *App) exchanger() *gateway.Exchanger {
	return &gateway.Exchanger{Inflight: a.inflight, Breaker: a.tokens.Breaker, Client: a.client,
		Mint: a.mintJWT,
		Trace: func(ctx context.Context, id gateway.Identity, kind string) (context.Context, func(error)) {
			ctx, span := tracing.StartExchange(ctx, kind)
			if span.IsRecording() {
				span.SetAttributes(tracing.AttrIdentity.String(gateway.LogHash(id.Tenant, id.User)))
			}
			return ctx, func(err error) { tracing.EndExchange(span, err) }
		},
		Done: func(id gateway.Identity, kind string, err error, took time.Duration) {
			a.metrics.ObserveExchange(kind, err, took)
			if err != nil {
				a.logExchangeFailure(id, err)
			}
		},
	}
}

// mintJWT signs the partner JWT for id (loading the key set first if
// needed), in a span, with the claims of an Actions token.
func (a *App) mintJWT(ctx context.Context, id gateway.Identity) (string, error) {
	if err := a.ensureKeys(ctx); err != nil {
		return "", err
	}
	// An Actions key names its tenant's claim set (actionclaims).
	plain, extra, err := actionclaims.Mint(id)
	if err != nil {
		return "", err
	}
	return tracing.SignJWT(ctx, a.SigningAlg, func() (string, error) { return a.keys.MintWith(plain.Tenant, plain.User, extra) })
}

// caller is the core's Zapier caller over this config's token cache,
// breaker and client.
func (a *App) caller() *gateway.Caller {
	return &gateway.Caller{Tokens: appTokens{a}, Breaker: a.tokens.APIBreaker, Client: a.client, APIURL: a.APIURL}
}

// appTokens is the token cache as the core's TokenSource.
type appTokens struct{ a *App }

func (t appTokens) Token(ctx context.Context, id gateway.Identity) (string, error) {
	return t.a.accessToken(ctx, id)
}
func (t appTokens) Evict(id gateway.Identity, token string) { t.a.tokens.EvictToken(id, token) }

func (a *App) breakerOpened(openFor time.Duration) {
	a.logger.Warn("Zapier keeps failing: circuit breaker opened; calls fail fast until it half-opens",
		zap.Duration("open_for", openFor))
	a.emitBreakerOpened(openFor) // metric and zapier_breaker_opened event (events.go)
}

func (a *App) logExchangeFailure(key tokencache.Key, err error) {
	level := zapcore.ErrorLevel
	fields := []zap.Field{zap.String("identity", gateway.LogHash(key.Tenant, key.User)), zap.Error(err)}
	if zerr, ok := zapierapi.AsError(err); ok {
		fields = append(fields, zap.String("kind", zerr.Kind.String()), zap.Int("status", zerr.StatusCode), zap.Int("attempts", zerr.Attempts))
		if zerr.Kind == zapierapi.KindUnavailable {
			level = zapcore.DebugLevel // the breaker's own line already said why
		}
	}
	if ce := a.logger.Check(level, "token exchange failed"); ce != nil {
		ce.Write(fields...)
	}
}

// registerUserStore adds a store holding per-user data to those offboarding
// walks. Every handler that keeps such data calls it from Provision; a store
// that does not is found by the offboarding test (it leaves the user's data
// behind).
func (a *App) registerUserStore(phase gateway.Phase, s gateway.UserStore) {
	if a.userStores == nil { // an App built without Provision (unit tests)
		a.userStores = new(gateway.Registry)
	}
	a.userStores.Register(phase, s)
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
