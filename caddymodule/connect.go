package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(Connect{})
	httpcaddyfile.RegisterHandlerDirective("zapier_connect", parseHandler[Connect])
	httpcaddyfile.RegisterDirectiveOrder("zapier_connect", httpcaddyfile.Before, "respond")
}

// Connect is the zapier_connect responder: it lets an end user connect an
// app account from the partner's UI, through Zapier's Connect UI in a popup
// or by redirect, and remembers the connection per (tenant, user, app) in
// Caddy storage. Its routes (relative to where it is mounted: use
// handle_path) are served by connect.Handler.
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
	// expired or missing (connect/health_sweep.go). Default 1h; negative
	// (off in the Caddyfile) turns the sweep off.
	HealthCheck caddy.Duration `json:"health_check,omitempty"`

	handler *connect.Handler
}

// CaddyModule returns the Caddy module information.
func (Connect) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_connect",
		New: func() caddy.Module { return new(Connect) },
	}
}

// Provision finds the zapier app, fills defaults, checks the app map and
// builds the handler from the app's pieces.
func (h *Connect) Provision(ctx caddy.Context) error {
	if h.StateTTL == 0 {
		h.StateTTL = caddy.Duration(connect.DefaultStateTTL)
	}
	if h.StateTTL < 0 || time.Duration(h.StateTTL) > connect.MaxStateTTL {
		return fmt.Errorf("zapier_connect: state_ttl must be between 0 and %s", connect.MaxStateTTL)
	}
	apps, err := gateway.NewAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_connect: %w", err)
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	if h.HealthCheck == 0 {
		h.HealthCheck = caddy.Duration(connect.DefaultHealthCheck)
	}
	if h.HealthCheck > 0 && time.Duration(h.HealthCheck) < connect.MinHealthCheck {
		return fmt.Errorf("zapier_connect: health_check must be at least %s, or off", connect.MinHealthCheck)
	}
	storage := ctx.Storage()
	h.handler = connect.NewHandler(connect.HandlerConfig{
		Policy:        app.policy,
		Caller:        app.caller(),
		Exchange:      app.connectExchanger(),
		Apps:          app.connectAppResolver(apps),
		Store:         app.withStoredActionCleanup(newConnectionStore(storage), storage, h.KeepUpstream, ctx.Logger()),
		States:        sweptStates{newStateKeeper(ctx, storage, time.Duration(h.StateTTL))},
		ConnectURL:    app.ConnectURL,
		CallbackURL:   app.CallbackURL,
		ReturnOrigins: app.ReturnOrigins,
		StateTTL:      time.Duration(h.StateTTL),
		KeepUpstream:  h.KeepUpstream,
		Logger:        ctx.Logger(),
		Completed:     app.metrics.ObserveConnectCompletion,
		Trace:         traceConnectCompletion,
		Storage:       storage,
		Emit:          app.emit,
		Changed:       connectionChanged, // triggers_connevents.go
	})
	if h.HealthCheck > 0 {
		go h.handler.HealthLoop(ctx, time.Duration(h.HealthCheck)) // ends with the config
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

// ServeHTTP delegates to the handler; what it leaves unanswered (internal
// failures, callers gone) Caddy logs and answers.
func (h *Connect) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return caddyError(h.handler.Serve(w, r))
}

// connectExchanger runs connect-token exchanges like every exchange: within
// max_inflight, through the breaker, counted as connect_token.
func (a *App) connectExchanger() connect.Exchanger {
	return func(ctx context.Context, id gateway.Identity, call func(context.Context) (zapierapi.Token, error)) (zapierapi.Token, error) {
		return a.limitedExchange(ctx, id, metrics.ExchangeKindConnect, call)
	}
}

// connectAppResolver resolves apps with the handler's overrides first, then
// Zapier's catalog (App.resolveApp).
func (a *App) connectAppResolver(overrides gateway.AppMap) connect.AppResolver {
	return func(ctx context.Context, id gateway.Identity, name string) (gateway.App, error) {
		return a.resolveApp(ctx, id, overrides, name)
	}
}

// traceConnectCompletion is the span of a connect completion.
func traceConnectCompletion(ctx context.Context, flow connect.Flow) (context.Context, func(connect.Outcome, error)) {
	ctx, span := tracing.StartConnect(ctx, flow)
	return ctx, func(outcome connect.Outcome, err error) { tracing.FinishSpan(span, string(outcome), err) }
}

// newConnectionStore is connect's store of connections, telling
// zapier_triggers (triggers_connevents.go) of every account it adds or
// removes.
func newConnectionStore(s certmagic.Storage) *connect.Store {
	st := connect.NewStore(s)
	st.OnAdded = func(tenant, user string, rec connect.Record) {
		connectionChanged(eventConnectionCreated, tenant, user, rec)
	}
	st.OnRemoved = func(tenant, user string, rec connect.Record) {
		connectionChanged(eventConnectionDeleted, tenant, user, rec)
	}
	return st
}

// The helpers zapier_actions, zapier_triggers and zapier_mcp still call by
// their old names; they are connect's.

// Interface guards.
var (
	_ caddy.Provisioner           = (*Connect)(nil)
	_ caddyhttp.MiddlewareHandler = (*Connect)(nil)
	_ caddyfile.Unmarshaler       = (*Connect)(nil)
)
