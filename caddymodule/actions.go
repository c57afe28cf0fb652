package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(Actions{})
	httpcaddyfile.RegisterHandlerDirective("zapier_actions", parseHandler[Actions])
	httpcaddyfile.RegisterDirectiveOrder("zapier_actions", httpcaddyfile.Before, "respond")
}

// Actions is the zapier_actions responder: a partner backend lists a user's
// actions and runs one with a single request, without handling action ids,
// connection ids or polling. Routes are relative to where it is mounted
// (use handle_path):
//
//	GET  actions?app=&action_type=   → {"data":[{"key","title","description","action_type","is_instant"}]}
//	POST inputs {"app","action","action_type"?,"inputs"?}  → {"data":[…input fields…]}
//	POST run    {"app","action","action_type"?,"inputs"?,"wait"?}
//	            → 200 {"run":{"id","status","results","errors"}} once the run ended (success or error),
//	              202 {"run":{"id","status"}} when wait ran out first
//	GET  runs/{id}  → one poll of a run the caller started: 200 or 202 as above
//
// Every route needs the identity headers, as zapier_auth does. A run uses
// the caller's connection stored by zapier_connect (409 connection_missing
// without one, 400 connection_invalid when Zapier no longer accepts it),
// through the user's stored action of it (run_via auto, the default: one
// call a run), or a fresh action id looked up by its stable key before
// every run (run_via action_runs; 404 action_not_found for an unknown key). Every call to Zapier goes through
// the app's circuit breaker, so after a 429 nobody calls Zapier until the
// cooldown ends (503 zapier_unavailable with Retry-After). Who started which
// run is kept in Caddy storage, so any gateway sharing it answers runs/{id}.
type Actions struct {
	// Apps maps Connect implementation ids to app UUIDs, as in
	// zapier_connect. An app may also be named by its UUID, or by an
	// implementation id the caller has a stored connection for.
	Apps map[string]string `json:"apps,omitempty"`
	// First pause between two polls of a run; it doubles up to
	// max_poll_interval. Default 500ms.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`
	// Longest pause between two polls. Default 5s.
	MaxPollInterval caddy.Duration `json:"max_poll_interval,omitempty"`
	// The public https URL of this handler's callback route (for example
	// https://app.example.com/zapier/actions/callback). When set, runs are
	// created with it and finish from Zapier's callback instead of polls.
	RunCallbackURL string `json:"run_callback_url,omitempty"`
	// The JWKS URL of the keys Zapier signs callbacks with. Required with
	// run_callback_url: Zapier's docs do not give it.
	CallbackJWKSURL string `json:"callback_jwks_url,omitempty"`
	// Optional iss and aud a callback signature must carry.
	CallbackIssuer   string `json:"callback_issuer,omitempty"`
	CallbackAudience string `json:"callback_audience,omitempty"`
	// How long POST run waits for the callback before it polls. Default 20s.
	CallbackTimeout caddy.Duration `json:"callback_timeout,omitempty"`
	// Accept a callback signature without sub. Off by default: a token
	// that names no run could complete any run.
	AllowMissingSubject bool `json:"allow_missing_subject,omitempty"`
	// How runs reach Zapier: auto (default) through a stored action per
	// (user, connection, app, action), one call a run, falling back to
	// /v2/action-runs for actions Zapier will not store; stored (no
	// fallback); action_runs (a fresh action id and a create every run).
	RunVia string `json:"run_via,omitempty"`

	cfg     actions.HandlerConfig // the options, checked (setDefaults)
	handler *actions.Handler
	// What zapier_triggers reuses (triggers.go): the app and connection lookup.
	app    *App
	apps   gateway.AppMap
	store  *connect.Store
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Actions) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_actions",
		New: func() caddy.Module { return new(Actions) },
	}
}

// Provision checks the handler's own values, then finds the zapier app.
func (h *Actions) Provision(ctx caddy.Context) error {
	if err := h.setDefaults(); err != nil {
		return err
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	return h.provision(ctx, app, ctx.Storage(), ctx.Logger())
}

func (h *Actions) setDefaults() error {
	repl := caddy.NewReplacer()
	h.RunCallbackURL = repl.ReplaceKnown(h.RunCallbackURL, "")
	h.CallbackJWKSURL = repl.ReplaceKnown(h.CallbackJWKSURL, "")
	h.cfg = actions.HandlerConfig{
		PollInterval: time.Duration(h.PollInterval), MaxPollInterval: time.Duration(h.MaxPollInterval),
		Callback: actions.CallbackConfig{URL: h.RunCallbackURL, JWKSURL: h.CallbackJWKSURL, Issuer: h.CallbackIssuer,
			Audience: h.CallbackAudience, Timeout: time.Duration(h.CallbackTimeout), AllowMissingSubject: h.AllowMissingSubject},
		ParseDuration: caddy.ParseDuration,
		RunVia:        actions.RunVia(h.RunVia),
	}
	if err := h.cfg.Check(); err != nil {
		return fmt.Errorf("zapier_actions: %w", err)
	}
	h.PollInterval, h.MaxPollInterval = caddy.Duration(h.cfg.PollInterval), caddy.Duration(h.cfg.MaxPollInterval)
	h.CallbackTimeout = caddy.Duration(h.cfg.Callback.Timeout)
	h.RunVia = string(h.cfg.RunVia)
	apps, err := gateway.NewAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_actions: %w", err)
	}
	h.apps = apps
	return nil
}

// provision builds the handler from the app's pieces and storage; bg
// bounds background work (the sweeps of old records).
func (h *Actions) provision(bg context.Context, app *App, storage certmagic.Storage, logger *zap.Logger) error {
	h.app, h.logger = app, logger
	h.store = newConnectionStore(storage)
	keeper := newStateKeeper(bg, storage, 0)
	cfg := h.cfg
	cfg.Policy, cfg.Caller, cfg.Lookup, cfg.Budget = app.policy, app.actionsCaller(), h.lookup(), app.gate
	cfg.Storage, cfg.BG, cfg.Keys, cfg.Logger = storage, bg, keeper, logger
	cfg.Names = gateway.NewNamespace(keeper)
	cfg.IdempotencyTakeover = runTakeover(app)
	cfg.ObserveRun = func(o actions.Outcome) { app.metrics.ObserveActionRun(o) }
	cfg.ObserveCallback = func(outcome string) { metrics.RunCallbacks.WithLabelValues(outcome).Inc() }
	cfg.TraceRun = traceActionRun
	if app.meter != nil {
		app.meter.MeterActions(&cfg) // usage counting and quota
	}
	handler, err := actions.NewHandler(cfg)
	if err != nil {
		return fmt.Errorf("zapier_actions: %w", err)
	}
	h.handler = handler
	// Its records hold action results: offboarding forgets them.
	app.registerUserStore(gateway.PhaseLocal, handler.IdempotencyRecords())
	// Stored actions are deleted at Zapier with the user's token.
	app.registerUserStore(gateway.PhaseUpstream, handler.StoredActions())
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_actions {
//		app               <implementation id> <app UUID>
//		poll_interval     <duration>
//		max_poll_interval <duration>
//		run_callback_url  <https url>
//		callback_jwks_url <url>
//		callback_issuer   <iss>
//		callback_audience <aud>
//		callback_timeout  <duration>
//		allow_missing_subject
//		run_via           auto|stored|action_runs
//	}
func (h *Actions) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
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
		case "poll_interval":
			if err := oneDuration(d, &h.PollInterval); err != nil {
				return err
			}
		case "max_poll_interval":
			if err := oneDuration(d, &h.MaxPollInterval); err != nil {
				return err
			}
		case "callback_timeout":
			if err := oneDuration(d, &h.CallbackTimeout); err != nil {
				return err
			}
		case "allow_missing_subject":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.AllowMissingSubject = true
		case "run_via":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.RunVia = d.Val()
			if _, err := actions.ParseRunVia(h.RunVia); err != nil {
				return d.Err(err.Error())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "run_callback_url", "callback_jwks_url", "callback_issuer", "callback_audience":
			if !d.NextArg() {
				return d.ArgErr()
			}
			*map[string]*string{"run_callback_url": &h.RunCallbackURL, "callback_jwks_url": &h.CallbackJWKSURL,
				"callback_issuer": &h.CallbackIssuer, "callback_audience": &h.CallbackAudience}[opt] = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized zapier_actions option %q", opt)
		}
	}
	return nil
}

func (h *Actions) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return caddyError(h.handler.Serve(w, r))
}

// lookup finds apps (the app lines, then Zapier's catalog) and the user's
// stored connections.
func (h *Actions) lookup() *actions.Lookup {
	return &actions.Lookup{
		Store: h.store,
		Configured: func(name string) (actions.App, bool, error) {
			app, ok, aerr := h.apps.Resolve(name)
			if aerr != nil {
				return actions.App{}, false, aerr
			}
			return app, ok, nil
		},
		Catalog: func(ctx context.Context, id gateway.Identity, name string) (actions.App, error) {
			return h.app.resolveApp(ctx, id, h.apps, name)
		},
	}
}

// runTakeover is how long a POST run's key stays reserved for its first
// request, from the app's budget max_wait and call timeout.
func runTakeover(app *App) time.Duration {
	var maxWait time.Duration
	if app.budget != nil && app.APIBudget != nil && app.APIBudget.MaxWait != nil {
		maxWait = time.Duration(*app.APIBudget.MaxWait)
	}
	timeout := zapierapi.DefaultTimeout
	if app.Exchange != nil && app.Exchange.Timeout > 0 {
		timeout = time.Duration(app.Exchange.Timeout)
	}
	return actions.PendingTakeover(maxWait, timeout, zapierapi.DefaultMaxAttempts)
}

// traceActionRun starts the span of a POST run.
func traceActionRun(ctx context.Context, id gateway.Identity) (context.Context, func(string, error)) {
	ctx, span := tracing.StartActionRun(ctx)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrIdentity.String(gateway.LogHash(id.Tenant, id.User)))
	}
	return ctx, func(outcome string, err error) { tracing.FinishSpan(span, outcome, err) }
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Actions)(nil)
	_ caddyhttp.MiddlewareHandler = (*Actions)(nil)
	_ caddyfile.Unmarshaler       = (*Actions)(nil)
)
