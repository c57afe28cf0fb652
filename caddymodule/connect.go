package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
)

func init() {
	caddy.RegisterModule(Connect{})
	httpcaddyfile.RegisterHandlerDirective("zapier_connect", parseHandler[Connect])
	httpcaddyfile.RegisterDirectiveOrder("zapier_connect", httpcaddyfile.Before, "respond")
}

// maxConnectBody bounds the JSON bodies of POST token and POST complete.
const maxConnectBody = 64 << 10

// Connect is the zapier_connect responder: it lets an end user connect an
// app account from the partner's UI, through Zapier's Connect UI in a popup
// or by redirect, and remembers the connection per (tenant, user, app) in
// Caddy storage. Routes are relative to where it is mounted (use
// handle_path):
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
// Every route but connect.js needs the identity headers, exactly as
// zapier_auth does. A state is signed, single-use, expires after state_ttl,
// and is bound to the browser (an HttpOnly SameSite=Lax cookie), to the
// user, the app and return_to. Before a connection id is stored it is
// looked up with the user's own access token in GET /v2/authentications.
type Connect struct {
	// Apps maps Connect's app implementation ids (as in
	// connect.zapier.com/to/SlackCLIAPI) to the app UUIDs Zapier's API uses.
	// Requests may name an app by either; an unmapped UUID is used for both.
	Apps map[string]string `json:"apps,omitempty"`
	// How long a started flow may take to complete. Default 10m.
	StateTTL caddy.Duration `json:"state_ttl,omitempty"`
	// KeepUpstream makes DELETE connections/{app} only forget the
	// gateway's record and leave the authentication at Zapier. Default
	// false: the authentication is deleted at Zapier too.
	KeepUpstream bool `json:"keep_upstream,omitempty"`
	// How often stored connections are re-checked at Zapier and marked ok,
	// expired or missing (connect_health.go). Default 1h; negative (off in
	// the Caddyfile) turns the sweep off.
	HealthCheck caddy.Duration `json:"health_check,omitempty"`

	app         *App
	rules       gateway.IdentityRules
	apps        appMap
	storage     certmagic.Storage // shared by the gateways; the health sweep's clock
	store       *connect.Store
	states      *stateKeeper
	connectBase string
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Connect) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_connect",
		New: func() caddy.Module { return new(Connect) },
	}
}

// Provision finds the zapier app, fills defaults and checks the app map.
func (h *Connect) Provision(ctx caddy.Context) error {
	if h.StateTTL == 0 {
		h.StateTTL = caddy.Duration(connect.DefaultStateTTL)
	}
	if h.StateTTL < 0 || time.Duration(h.StateTTL) > connect.MaxStateTTL {
		return fmt.Errorf("zapier_connect: state_ttl must be between 0 and %s", connect.MaxStateTTL)
	}
	apps, err := newAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_connect: %w", err)
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	h.rules = app.identityRules()
	h.apps = apps
	h.storage = ctx.Storage()
	h.store = newConnectionStore(h.storage)
	h.states = newStateKeeper(ctx, ctx.Storage(), time.Duration(h.StateTTL))
	h.connectBase = strings.TrimRight(app.ConnectURL, "/")
	h.logger = ctx.Logger()
	if h.HealthCheck == 0 {
		h.HealthCheck = caddy.Duration(defaultHealthCheck)
	}
	if h.HealthCheck > 0 {
		if time.Duration(h.HealthCheck) < minHealthCheck {
			return fmt.Errorf("zapier_connect: health_check must be at least %s, or off", minHealthCheck)
		}
		go h.healthLoop(ctx) // ends with the config
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_connect {
//		app       <implementation id> <app UUID>
//		state_ttl <duration>
//		keep_upstream
//		health_check <duration>|off
//	}
func (h *Connect) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "app":
			if err := parseAppMapping(d, &h.Apps); err != nil {
				return err
			}
		case "state_ttl":
			if err := oneDuration(d, &h.StateTTL); err != nil {
				return err
			}
		case "health_check":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.HealthCheck = -1
			} else {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil {
					return d.Errf("health_check: %v", err)
				}
				h.HealthCheck = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "keep_upstream":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.KeepUpstream = true
		default:
			return d.Errf("unrecognized zapier_connect option %q", opt)
		}
	}
	return nil
}

func (h *Connect) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	p := r.URL.Path
	switch {
	case p == "/connect.js":
		if !gateway.AllowMethod(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		serveConnectScript(w, r)
		return nil
	case p == "/token":
		return h.withIdentity(w, r, http.MethodPost, h.serveToken)
	case p == "/start":
		return h.withIdentity(w, r, http.MethodGet, h.serveStart)
	case p == "/callback":
		return h.withIdentity(w, r, http.MethodGet, h.serveCallback)
	case p == "/complete":
		return h.withIdentity(w, r, http.MethodPost, h.serveComplete)
	case p == "/connections":
		return h.withIdentity(w, r, http.MethodGet, h.serveList)
	case strings.HasPrefix(p, "/connections/"):
		app := strings.TrimPrefix(p, "/connections/")
		if r.Method == http.MethodDelete {
			return h.withIdentity(w, r, http.MethodDelete, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
				return h.serveDelete(w, r, key, app)
			})
		}
		return h.withIdentity(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
			return h.serveGet(w, r, key, app)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_connect route (token, start, callback, complete, connections, connect.js)"})
	return nil
}

// withIdentity serves a Connect route: a browser-facing, limited route.
func (h *Connect) withIdentity(w http.ResponseWriter, r *http.Request, method string, next identityHandler) error {
	return h.app.serveRoute(w, r, gateway.Route{Methods: []string{method}, Class: gateway.Limited, Browser: true}, next)
}

// failConnect answers an error. A caller that went away gets no body; anything
// that is not an *gateway.Error is an internal failure (logged by Caddy, never
// shown).
func failConnect(w http.ResponseWriter, r *http.Request, err error) error {
	if errors.Is(r.Context().Err(), context.Canceled) {
		return caddyhttp.Error(499, r.Context().Err())
	}
	var aerr *gateway.Error
	if errors.As(err, &aerr) {
		gateway.WriteError(w, aerr)
		return nil
	}
	return caddyhttp.Error(http.StatusInternalServerError, err)
}

func writeConnectJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		gateway.WriteError(w, &gateway.Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "encoding the response failed"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// decodeConnectBody reads one JSON object with only the known fields. Requiring
// application/json also keeps cross-site forms (which cannot send it
// without a CORS preflight) away from the POST routes.
func decodeConnectBody(w http.ResponseWriter, r *http.Request, dst any) *gateway.Error {
	bad := func(msg string) *gateway.Error {
		return &gateway.Error{Status: http.StatusBadRequest, Code: "bad_request", Message: msg}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return bad("the body must be JSON, with Content-Type: application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxConnectBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bad("malformed JSON body: " + connectBodyErrorText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("malformed JSON body: one object expected")
	}
	return nil
}

// connectBodyErrorText describes a decoding error without quoting the body.
func connectBodyErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &typeErr):
		return "field " + typeErr.Field + " has the wrong type"
	case errors.As(err, &maxErr):
		return "too large"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "not a JSON object"
}

// logRefusal logs a refused connect request at Info: identity as a keyed
// hash, never the state, token or connection id.
func (h *Connect) logRefusal(msg string, key tokencache.Key, fields ...zap.Field) {
	if ce := h.logger.Check(zapcore.InfoLevel, msg); ce != nil {
		ce.Write(append(fields, zap.String("identity", gateway.LogHash(key.Tenant, key.User)))...)
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Connect)(nil)
	_ caddyhttp.MiddlewareHandler = (*Connect)(nil)
	_ caddyfile.Unmarshaler       = (*Connect)(nil)
)
