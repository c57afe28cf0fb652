package connect

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// MaxBody bounds the JSON bodies of POST token and POST complete.
const MaxBody = 64 << 10

// AppResolver resolves the app a request names (by key or UUID) for the
// caller; a refusal is a *gateway.Error (bad_request, app_not_found).
type AppResolver func(ctx context.Context, id gateway.Identity, name string) (gateway.App, error)

// Exchanger runs one token exchange for id (within the gateway's limit on
// concurrent exchanges, through the token endpoint's breaker, counted):
// call makes it.
type Exchanger func(ctx context.Context, id gateway.Identity, call func(ctx context.Context) (zapierapi.Token, error)) (zapierapi.Token, error)

// States is what the handler needs of the state keeper (StateKeeper; Spend
// may add a background sweep).
type States interface {
	Issue(ctx context.Context, st *State, tenant, user string) (state, nonce string, err error)
	Open(ctx context.Context, r *http.Request, raw string, flow Flow, tenant, user string) (*State, error)
	OpenPending(ctx context.Context, r *http.Request, tenant, user string) ([]*State, error)
	Spend(ctx context.Context, st *State) error
}

// Outcome is how a connect completion ended (the metric's label).
type Outcome string

// The outcomes of a connect completion.
const (
	OutcomeSuccess           Outcome = "success"              // connection verified and stored
	OutcomeStateInvalid      Outcome = "state_invalid"        // bad, expired or replayed state (connect_state_invalid)
	OutcomeConnectionInvalid Outcome = "connection_invalid"   // id unknown, expired or not this user's (connection_invalid)
	OutcomeAuthError         Outcome = "authentication_error" // the Connect UI returned ?error= (e.g. the user cancelled)
	OutcomeFailed            Outcome = "failed"               // the gateway could not verify or store (Zapier or storage failure)
)

// Outcomes lists every Outcome; Flows every Flow (metrics pre-register them).
var (
	Outcomes = []Outcome{OutcomeSuccess, OutcomeStateInvalid, OutcomeConnectionInvalid, OutcomeAuthError, OutcomeFailed}
	Flows    = []Flow{FlowPopup, FlowRedirect}
)

// HandlerConfig is what a Connect handler is built from: the core's route
// policy and Zapier caller, its stores, and the few things of the gateway
// that are not in the core, as funcs.
type HandlerConfig struct {
	// Policy serves every route but connect.js (method, Host and Origin,
	// identity, the limits of a limited browser route).
	Policy *gateway.Policy
	// Caller makes the API calls (GET /v2/authentications, DELETE
	// /v2/authentications/{id}); its Tokens give access tokens for the
	// connect-token exchange too.
	Caller *gateway.Caller
	// Exchange runs the connect-token exchange.
	Exchange Exchanger
	// Apps resolves the app a request names.
	Apps   AppResolver
	Store  *Store
	States States
	// ConnectURL is Connect's base URL; CallbackURL the redirect flow's
	// callback ("" disables the redirect flow); ReturnOrigins where a
	// redirect flow may return to besides this site.
	ConnectURL    string
	CallbackURL   string
	ReturnOrigins []string
	// StateTTL is how long a started flow may take (the flow cookie's age).
	StateTTL time.Duration
	// KeepUpstream makes DELETE connections/{app} leave the authentication
	// at Zapier.
	KeepUpstream bool
	Logger       *zap.Logger

	// Completed counts a finished completion (may be nil).
	Completed func(flow Flow, outcome Outcome)
	// Trace starts the span of a completion and returns its end (may be nil).
	Trace func(ctx context.Context, flow Flow) (context.Context, func(outcome Outcome, err error))

	// The health sweep (health_sweep.go): Storage is shared by the gateways
	// (the sweep's clock), Emit sends a gateway event, Changed tells the
	// partner's lifecycle events (each may be nil but Storage).
	Storage certmagic.Storage
	Emit    func(name string, data func() map[string]any)
	Changed func(typ, tenant, user string, rec Record)
}

// Handler serves Connect's routes, relative to where it is mounted:
//
//	POST   token              {"app","reconnect_id"?,"reconnect"?} → {"url","token","expires_in","state"} (popup flow),
//	                          or {"connection"} when a stored connection is still valid
//	GET    start?app=&return_to=   → 302 to Connect with redirect_uri=<callback_url> (redirect flow)
//	GET    callback?authentication_id=|error=&state=  → verifies, stores, 302 to return_to with the outcome
//	POST   complete           {"app","auth_id","state"} → the stored connection (popup flow)
//	GET    connections        → {"data":[…]} the caller's connections
//	GET    connections/{app}  → one of them
//	DELETE connections/{app}  → deletes the authentication at Zapier (unless keep_upstream) and forgets it
//	GET    connect.js         → the browser helper (ZapierConnect.connect / .start)
//
// Every route but connect.js needs the identity. A state is signed,
// single-use, expires after StateTTL, and is bound to the browser (an
// HttpOnly SameSite=Lax cookie), to the user, the app and return_to. Before
// a connection id is stored it is looked up with the user's own access
// token in GET /v2/authentications.
type Handler struct {
	cfg         HandlerConfig
	connectBase string
	logger      *zap.Logger
}

// NewHandler returns the handler for cfg.
func NewHandler(cfg HandlerConfig) *Handler {
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Handler{cfg: cfg, connectBase: strings.TrimRight(cfg.ConnectURL, "/"), logger: logger}
}

// ServeHTTP serves r as a plain http.Handler; what Serve leaves unanswered
// is answered as gateway.Unanswered does (Caddy calls Serve and logs it).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gateway.Unanswered(w, h.Serve(w, r))
}

// Serve serves r. It answers everything itself but internal failures and
// callers gone away, which it returns as *gateway.HandlerError for the server (Caddy)
// to log and answer.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request) error {
	p := r.URL.Path
	switch {
	case p == "/connect.js":
		if !gateway.AllowMethod(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		ServeScript(w, r)
		return nil
	case p == "/token":
		return h.route(w, r, http.MethodPost, h.serveToken)
	case p == "/start":
		return h.route(w, r, http.MethodGet, h.serveStart)
	case p == "/callback":
		return h.route(w, r, http.MethodGet, h.serveCallback)
	case p == "/complete":
		return h.route(w, r, http.MethodPost, h.serveComplete)
	case p == "/connections":
		return h.route(w, r, http.MethodGet, h.serveList)
	case strings.HasPrefix(p, "/connections/"):
		app := strings.TrimPrefix(p, "/connections/")
		if r.Method == http.MethodDelete {
			return h.route(w, r, http.MethodDelete, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
				return h.serveDelete(w, r, id, app)
			})
		}
		return h.route(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
			return h.serveGet(w, r, id, app)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_connect route (token, start, callback, complete, connections, connect.js)"})
	return nil
}

// route serves a Connect route: a browser-facing, limited route.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, method string, next gateway.Handler) error {
	return h.cfg.Policy.Serve(w, r, gateway.Route{Methods: []string{method}, Class: gateway.Limited, Browser: true}, next)
}

// Redirect answers 302. The Location carries a connect token or a state,
// so it is neither cached nor leaked in a Referer.
func Redirect(w http.ResponseWriter, location string) {
	h := w.Header()
	h.Set("Location", location)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusFound)
}

// logRefusal logs a refused connect request at Info: identity as a keyed
// hash, never the state, token or connection id.
func (h *Handler) logRefusal(msg string, id gateway.Identity, fields ...zap.Field) {
	if ce := h.logger.Check(zapcore.InfoLevel, msg); ce != nil {
		ce.Write(append(fields, zap.String("identity", gateway.LogHash(id.Tenant, id.User)))...)
	}
}

// completed counts a finished completion.
func (h *Handler) completed(flow Flow, outcome Outcome) {
	if h.cfg.Completed != nil {
		h.cfg.Completed(flow, outcome)
	}
}
