// Package fakezapier is a stand-in for Zapier's White Label endpoints, for
// end-to-end tests of the gateway and for demos.
//
// One http.Handler serves the three Zapier hosts' path sets:
//
//   - zapier.com:         POST /oauth/token (token exchange; see oauth.go)
//   - api.zapier.com:     /v2/... (see api.go)
//   - connect.zapier.com: GET /to/{app}, the Connect UI (see connect.go)
//
// and GET /.well-known/jwks.json, the key set that verifies its action-run
// callbacks (callbacks.go), whose real URL Zapier does not document.
//
// The fake verifies the gateway's partner JWTs with its own JOSE code (jwt.go,
// jwks.go), written on the standard library only, so that a bug in the
// gateway's signing library cannot be masked by the same library verifying.
// Everything here follows Zapier's public White Label documentation
// (https://docs.zapier.com/powered-by-zapier); where Zapier's docs are
// silent, the fake is strict rather than lenient so that gateway bugs
// surface in tests.
package fakezapier

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Wire defaults (zapier-api.md §1.3; the gateway makes them configurable).
const (
	DefaultGrantType        = "urn:ietf:params:oauth:grant-type:token-exchange"
	DefaultSubjectTokenType = "urn:ietf:params:oauth:token-type:external-jwt"
	DefaultAccessTokenType  = "urn:ietf:params:oauth:token-type:access-token"
	DefaultConnectTokenType = "urn:ietf:params:oauth:token-type:connect-token"
	DefaultAudience         = "connect.zapier.com"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// ClientID and ClientSecret are the partner credentials the token
	// endpoint requires, as form fields (client_secret_post) or HTTP Basic.
	ClientID, ClientSecret string
	// Issuer is the expected iss of partner JWTs. If empty, any non-empty
	// iss is accepted (not recommended).
	Issuer string
	// Audience is the expected aud; default "connect.zapier.com".
	Audience string
	// UserClaim and TenantClaim name the identity claims; defaults "sub"
	// and "org_id".
	UserClaim   string
	TenantClaim string
	// JWKSURL is the gateway's JWKS URL; it can be set later with SetJWKSURL.
	JWKSURL string
	// AccessTokenTTL is the lifetime (and expires_in) of access tokens;
	// default 1h.
	AccessTokenTTL time.Duration
	// OmitExpiresIn makes access-token responses carry no expires_in (the
	// token still expires after AccessTokenTTL).
	OmitExpiresIn bool
	// ConnectTokenTTL is the lifetime of connect tokens; default 360s.
	ConnectTokenTTL time.Duration
	// MaxJWTLifetime bounds exp - iat; default 5m.
	MaxJWTLifetime time.Duration
	// ClockSkew is tolerated on iat and nbf; default 30s. exp is checked
	// without skew (exp must be after now).
	ClockSkew time.Duration
	// Expected wire values; defaults are the Default* constants.
	GrantType, SubjectTokenType, AccessTokenType, ConnectTokenType string
	// Logf, if set, receives one line per exchange, refusal and JWKS fetch.
	// Token values, JWTs and secrets are never passed to it.
	Logf func(format string, args ...any)

	// Additions beyond the original contract.

	// Now is the clock (default time.Now). Tests can use it to expire
	// tokens without sleeping; JWTs are checked against it too.
	Now func() time.Time
	// JWKSMaxAge is how long a fetched JWKS is used before it is fetched
	// again on the next verification; default 5m. An unknown kid triggers
	// an earlier refetch regardless (rate limited by JWKSRefetchInterval).
	JWKSMaxAge time.Duration
	// JWKSRefetchInterval limits refetches caused by one unknown kid;
	// default 1s.
	JWKSRefetchInterval time.Duration
	// HTTPClient fetches the JWKS; default a client with a 10s timeout.
	HTTPClient *http.Client
	// MaxRecorded bounds the Requests() ring; default 10000.
	MaxRecorded int

	// RateLimits, if set, are in force from the start (as if SetRateLimits
	// were called); nil leaves them off. &DocumentedRateLimits turns on
	// Zapier's documented limits.
	RateLimits *RateLimits

	// EchoStateOnSuccess makes the Connect UI's redirect pattern echo
	// state on success too. Zapier documents the success redirect as
	// ?authentication_id=12345&service=SlackAPI, and state as echoed on
	// errors only (zapier-api.md §3.3, §3.5), so by default it does not.
	EchoStateOnSuccess bool

	// Action-run callbacks (zapier-api-2026.md §2; callbacks.go).

	// CallbackAllowHosts exempts these callback_url hosts (names or IP
	// literals, matched exactly, names case-insensitively) from the
	// public-address rule, e.g. a test receiver on 127.0.0.1. They must
	// still be https.
	CallbackAllowHosts []string
	// CallbackRetryBase is the wait before the second attempt, doubled
	// before each later one; default 500ms.
	CallbackRetryBase time.Duration
	// CallbackTimeout bounds each attempt; default 10s.
	CallbackTimeout time.Duration
	// CallbackHTTPClient sends callbacks, connection webhooks and inbox
	// notifications (everything the fake POSTs to the partner); default a
	// plain client. Whatever the client, callbacks follow no redirects and
	// CallbackTimeout applies.
	CallbackHTTPClient *http.Client

	// RateLimitExemptGranted grants this partner the rate-limit exemption:
	// only then does a token's rate_limit.exempt lift the stored-actions
	// limit (claims.go).
	RateLimitExemptGranted bool
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Audience, DefaultAudience)
	def(&c.UserClaim, "sub")
	def(&c.TenantClaim, "org_id")
	def(&c.GrantType, DefaultGrantType)
	def(&c.SubjectTokenType, DefaultSubjectTokenType)
	def(&c.AccessTokenType, DefaultAccessTokenType)
	def(&c.ConnectTokenType, DefaultConnectTokenType)
	defDur(&c.AccessTokenTTL, time.Hour)
	defDur(&c.ConnectTokenTTL, 360*time.Second)
	defDur(&c.MaxJWTLifetime, 5*time.Minute)
	defDur(&c.ClockSkew, 30*time.Second)
	defDur(&c.JWKSMaxAge, 5*time.Minute)
	defDur(&c.JWKSRefetchInterval, time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.MaxRecorded <= 0 {
		c.MaxRecorded = 10000
	}
	defDur(&c.CallbackRetryBase, 500*time.Millisecond)
	defDur(&c.CallbackTimeout, 10*time.Second)
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Exchanges        int // successful JWT→access-token exchanges
	ConnectExchanges int // successful access→connect-token exchanges
	ExchangeErrors   int // refused /oauth/token requests (incl. FailNextTokenRequests answers)
	JWTFailures      int // JWTs that failed verification (signature, kid, alg, claims, JWKS)
	JWKSFetches      int // HTTP requests made for the JWKS (incl. 304 and failures)
	APIRequests      int // /v2/* requests
	Unauthorized     int // /v2/* requests answered 401

	// Additions.
	TokenRequests        int // every request that reached /oauth/token
	FaultsInjected       int // token requests answered by a fault (FailNext, empty, garbage, reset)
	ConnectTokensUsed    int // connect tokens consumed by ConsumeConnectToken
	JWKSNotModified      int // JWKS fetches answered 304 Not Modified
	TokenRequestsAborted int // token requests whose client went away during SetTokenDelay
	TokenConcurrencyPeak int // most token requests in progress at once
}

// Server is the fake. It is an http.Handler and safe for concurrent use.
type Server struct {
	cfg Config

	jwks *jwksCache

	mu              sync.Mutex // guards everything below
	stats           Stats
	tokenInProgress int // guarded by mu
	exchangesBy     map[identity]int
	lastJWTFail     string
	access          map[string]*accessToken
	connect         map[string]*connectToken
	connections     map[string]*connection // by id
	nextConnID      int
	authDeletes     int // authentications deleted by DELETE /v2/authentications/{id}
	// The next deleteFaults DELETE /v2/authentications/{id} answer
	// deleteFaultStatus (FailNextAuthenticationDeletes).
	deleteFaults, deleteFaultStatus int
	issued                          int // tokens issued since the last sweep of expired ones
	recorded                        []RecordedRequest
	recNext                         int
	recFull                         bool
	faults                          faults
	userClaim                       string // Config.UserClaim, changeable by SetClaimNames
	tenantClaim                     string
	jwtLog                          []VerifiedJWT

	ui      connectUI    // the Connect UI's partner registration and outcomes (connect.go)
	actions actionsState // actions and action runs (actions.go, runs.go)

	// Each has its own lock; none is held while taking another.
	rate       rateState     // rate limits (ratelimit.go)
	calls      callCounter   // CallCounts (counts.go)
	apiLatency atomic.Int64  // SetAPILatency, in ns
	cb         callbackState // action-run callbacks (callbacks.go)
	inbox      inboxState    // Trigger Inbox (inbox.go)

	usage usageState // billing and rate_limit claims; guarded by mu (claims.go)
}

type identity struct{ tenant, user string }

// New returns a Server for cfg.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:         cfg,
		exchangesBy: map[identity]int{},
		access:      map[string]*accessToken{},
		connect:     map[string]*connectToken{},
		connections: map[string]*connection{},
		nextConnID:  100000,
		userClaim:   cfg.UserClaim,
		tenantClaim: cfg.TenantClaim,
	}
	s.jwks = newJWKSCache(s, cfg.JWKSURL)
	s.usage.granted = cfg.RateLimitExemptGranted
	s.faults.accessTTL = cfg.AccessTokenTTL
	if cfg.RateLimits != nil {
		s.SetRateLimits(*cfg.RateLimits)
	}
	s.initCallbacks()
	return s
}

// ServeHTTP routes a request to the zapier.com, api.zapier.com or
// connect.zapier.com path sets.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.countCall(r)
	p := r.URL.Path
	switch {
	case p == CallbackJWKSPath:
		s.serveCallbackJWKS(w, r)
	case p == "/oauth/token" || p == "/oauth/token/":
		s.serveToken(w, r)
	case p == "/oauth/authorize":
		s.serveMCPAuthorize(w, r)
	case strings.HasPrefix(p, "/mcp/"):
		s.serveMCP(w, r)
	case p == "/v2" || strings.HasPrefix(p, "/v2/") || strings.HasPrefix(p, "/actions/v1/"):
		s.serveAPI(w, r) // the Actions API v1 (stored actions) authenticates the same way
	case strings.HasPrefix(p, "/trigger-inbox/"):
		s.serveInbox(w, r) // inbox.go
	case strings.HasPrefix(p, "/connections/v1/"):
		s.serveConnWebhooks(w, r) // connwebhooks.go
	case strings.HasPrefix(p, "/to/"):
		s.serveConnectUI(w, r)
	case p == "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	default:
		http.NotFound(w, r)
	}
}

// SetJWKSURL sets the gateway's JWKS URL and drops the cached key set.
func (s *Server) SetJWKSURL(u string) { s.jwks.setURL(u) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ExchangesFor returns the number of successful JWT→access-token exchanges
// for one identity.
func (s *Server) ExchangesFor(tenant, user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchangesBy[identity{tenant, user}]
}

// LastJWTFailure returns the reason of the most recent JWT verification
// failure, or "".
func (s *Server) LastJWTFailure() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastJWTFail
}

func (s *Server) now() time.Time { return s.cfg.Now() }

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Server) count(f func(st *Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "fakezapier: marshal: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
