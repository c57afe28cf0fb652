package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/idempotency"
	"github.com/zapgate/caddy-zapier/runcallback"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func init() {
	caddy.RegisterModule(Actions{})
	httpcaddyfile.RegisterHandlerDirective("zapier_actions", parseHandler[Actions])
	httpcaddyfile.RegisterDirectiveOrder("zapier_actions", httpcaddyfile.Before, "respond")
}

const (
	defaultPollInterval    = 500 * time.Millisecond
	defaultMaxPollInterval = 5 * time.Second
)

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
// without one, 400 connection_invalid when Zapier no longer accepts it) and
// a fresh action id looked up by its stable key before every run (404
// action_not_found for an unknown key). Every call to Zapier goes through
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

	verifier  *runcallback.Verifier
	replays   *runcallback.ReplayCache
	callbacks *callbackWaiters
	once      *runOnce // Idempotency-Key records (actions_idempotency.go)
	names     *gateway.Namespace
	app       *App
	rules     gateway.IdentityRules
	apps      appMap
	store     *connect.Store
	runs      *actions.RunStore
	logger    *zap.Logger
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
	if h.PollInterval == 0 {
		h.PollInterval = caddy.Duration(defaultPollInterval)
	}
	if h.MaxPollInterval == 0 {
		h.MaxPollInterval = caddy.Duration(max(defaultMaxPollInterval, time.Duration(h.PollInterval)))
	}
	if h.PollInterval < 0 || h.MaxPollInterval < h.PollInterval {
		return errors.New("zapier_actions: poll_interval must be positive and at most max_poll_interval")
	}
	apps, err := newAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_actions: %w", err)
	}
	h.apps = apps
	return h.provisionCallbacks() // actions_callback.go
}

// provision wires the handler to the app and storage; bg bounds background
// work (the sweep of old run records).
func (h *Actions) provision(bg context.Context, app *App, storage certmagic.Storage, logger *zap.Logger) error {
	h.app = app
	h.rules = app.identityRules()
	h.store = newConnectionStore(storage)
	keeper := newStateKeeper(bg, storage, 0)
	h.runs = actions.NewRunStore(bg, storage, keeper)
	h.names = gateway.NewNamespace(gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
		keys, err := keeper.Keys(ctx)
		if err != nil {
			return nil, err
		}
		return keys.NamesKey(), nil
	}))
	h.callbacks = new(callbackWaiters)
	h.replays = &runcallback.ReplayCache{Storage: storage} // spent callback tokens
	once, err := newRunOnce(bg, storage, runTakeover(app))
	if err != nil {
		return fmt.Errorf("zapier_actions: %w", err)
	}
	h.once = once
	h.logger = logger
	// Its records hold action results: offboarding forgets them.
	app.registerUserStore(gateway.PhaseLocal, idempotency.UserStore{Store: once.store, Names: h.names, OwnerAAD: []byte(idempotencyOwnerAAD)})
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
	switch p := r.URL.Path; {
	case p == "/actions":
		return h.withIdentity(w, r, http.MethodGet, h.serveList)
	case p == "/inputs":
		return h.withIdentity(w, r, http.MethodPost, h.serveInputs)
	case p == "/run":
		return h.withIdentity(w, r, http.MethodPost, h.serveRunOnce)
	case p == "/callback":
		return h.serveCallback(w, r) // Zapier, not a user: no identity

	case strings.HasPrefix(p, "/runs/"):
		id := strings.TrimPrefix(p, "/runs/")
		return h.withIdentity(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
			return h.serveRunStatus(w, r, key, id)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_actions route (actions, inputs, run, runs/{id}, callback)"})
	return nil
}

// withIdentity checks the method, then reads the identity exactly as
// zapier_auth does (same refusals, same metric and log).
func (h *Actions) withIdentity(w http.ResponseWriter, r *http.Request, method string, next identityHandler) error {
	return h.app.serveRoute(w, r, gateway.Route{Methods: []string{method}}, next)
}

// parseWait reads wait (actions.ParseWait, with Caddy's durations).
func parseWait(raw json.RawMessage) (time.Duration, *gateway.Error) {
	d, err := actions.ParseWait(raw, caddy.ParseDuration)
	if err != nil {
		return 0, gateway.BadRequest(err.Error())
	}
	return d, nil
}

// listedAction is an action as GET actions shows it: no id, because ids
// are single-use; the key is what to run it by.
type listedAction struct {
	Key         string `json:"key"`
	Title       string `json:"title"`
	Description string `json:"description"`
	ActionType  string `json:"action_type"`
	IsInstant   bool   `json:"is_instant"`
}

func (h *Actions) serveList(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	q := r.URL.Query()
	for _, name := range []string{"app", "action_type"} {
		if len(q[name]) > 1 {
			return h.fail(w, r, gateway.BadRequest(name+" must appear at most once"))
		}
	}
	actionType := q.Get("action_type")
	if actionType != "" && !zapierapi.ValidActionType(actionType) {
		return h.fail(w, r, gateway.BadRequest("action_type must be one of "+strings.Join(zapierapi.ActionTypes, ", ")))
	}
	ctx := r.Context()
	ids, err := h.resolveApp(ctx, key, q.Get("app"))
	if err != nil {
		return h.fail(w, r, err)
	}
	actions, err := h.listActions(ctx, key, ids, actionType)
	if err != nil {
		return h.fail(w, r, err)
	}
	out := make([]listedAction, 0, len(actions))
	for _, a := range actions {
		out = append(out, listedAction{Key: a.Key, Title: a.Title, Description: a.Description, ActionType: a.ActionType, IsInstant: a.IsInstant})
	}
	writeConnectJSON(w, http.StatusOK, struct {
		Data []listedAction `json:"data"`
	}{out})
	return nil
}

func (h *Actions) serveInputs(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	var req actions.ActionRequest
	if aerr := decodeConnectBody(w, r, &req); aerr != nil {
		return h.fail(w, r, aerr)
	}
	if err := req.Check(); err != nil {
		return h.fail(w, r, gateway.BadRequest(err.Error()))
	}
	ctx := r.Context()
	ids, rec, err := h.connection(ctx, key, req.App, req.Connection())
	if err != nil {
		return h.fail(w, r, err)
	}
	actionID, err := h.freshActionID(ctx, key, ids, req.Action, req.ActionType)
	if err != nil {
		return h.fail(w, r, err)
	}
	var fields []json.RawMessage
	err = h.app.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
		fields, err = h.app.client.ActionInputs(ctx, h.app.APIURL, access, actionID, rec.ConnectionID, req.Inputs)
		return err
	})
	if err != nil {
		return h.fail(w, r, h.rejection(ctx, key, ids, rec, err))
	}
	writeConnectJSON(w, http.StatusOK, struct {
		Data []json.RawMessage `json:"data"`
	}{fields})
	return nil
}

// runView is the run in the gateway's answers: results and errors only
// once it has ended.
type runView struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Results json.RawMessage `json:"results,omitempty"`
	Errors  json.RawMessage `json:"errors,omitempty"`
}

// serveRun is POST run; track, when not nil, is told of the create call
// and the run it made (the Idempotency-Key record, actions_idempotency.go).
func (h *Actions) serveRun(w http.ResponseWriter, r *http.Request, key tokencache.Key, track *runTrack) error {
	ctx, span := startActionRunSpan(r.Context())
	if span.IsRecording() {
		span.SetAttributes(attrIdentity.String(gateway.LogHash(key.Tenant, key.User)))
	}
	outcome, err := h.run(w, r.WithContext(ctx), key, track)
	h.app.metrics.observeActionRun(outcome)
	spanErr := err
	if spanErr == nil && (outcome == actionFailed || outcome == actionConnectionMissing) {
		spanErr = errors.New(string(outcome)) // answered, but not run
	}
	finishSpan(span, string(outcome), spanErr)
	return err
}

// run does POST run and reports how it ended.
func (h *Actions) run(w http.ResponseWriter, r *http.Request, key tokencache.Key, track *runTrack) (actionOutcome, error) {
	fail := func(err error) (actionOutcome, error) {
		outcome := actionFailed
		var aerr *gateway.Error
		if errors.As(err, &aerr) && aerr.Code == "connection_missing" {
			outcome = actionConnectionMissing
		}
		return outcome, h.fail(w, r, err)
	}
	var req actions.RunRequest
	if aerr := decodeConnectBody(w, r, &req); aerr != nil {
		return fail(aerr)
	}
	if err := req.Check(); err != nil {
		return fail(gateway.BadRequest(err.Error()))
	}
	wait, aerr := parseWait(req.Wait)
	if aerr != nil {
		return fail(aerr)
	}
	deadline := time.Now().Add(wait)
	ctx := r.Context()
	ids, rec, err := h.connection(ctx, key, req.App, req.Connection())
	if err != nil {
		return fail(err)
	}
	// The fresh action id and the create are paid for together: under
	// load a run either gets both calls or fails before spending any.
	paid, err := h.app.prepay(ctx, key.Tenant, 2)
	if err != nil {
		return fail(budgetError(err))
	}
	actionID, err := h.freshActionID(paid, key, ids, req.Action, req.ActionType)
	if err != nil {
		return fail(err)
	}
	if err := track.commit(); err != nil {
		return fail(err) // the key was taken over: its new owner runs the action
	}
	// The create call outlives the client: once it is made, the gateway
	// learns the run's id and records it, whether or not anyone waits.
	var runID string
	err = h.app.callAPI(context.WithoutCancel(paid), key, func(ctx context.Context, access string) (err error) {
		runID, err = h.app.client.CreateActionRun(ctx, h.app.APIURL, access, zapierapi.ActionRunRequest{
			Action: actionID, Authentication: rec.ConnectionID, Inputs: req.Inputs, CallbackURL: h.RunCallbackURL,
		})
		return err
	})
	if err != nil {
		track.createFailed(err)
		h.logFailure("action run not created", key, err, zap.String("app", ids.connect), zap.String("action", req.Action))
		return fail(h.rejection(ctx, key, ids, rec, err))
	}
	if !actions.ValidRunID(runID) {
		return fail(&gateway.Error{Status: http.StatusBadGateway, Code: "zapier_api_failed",
			Message: "Zapier created the run but sent an unusable run id"})
	}
	if err := h.runs.Put(context.WithoutCancel(ctx), runID, key, ids.uuid, req.Action); err != nil {
		// The run exists: answer with it anyway; only runs/{id} will not know it.
		h.logger.Error("recording the owner of an action run", zap.String("identity", gateway.LogHash(key.Tenant, key.User)), zap.Error(err))
	}
	track.created(runID)

	var run zapierapi.ActionRun
	var retryAfter time.Duration
	called := false
	if h.verifier != nil {
		// Finish from Zapier's callback; poll only if it does not come.
		run, called = h.awaitCallback(ctx, runID, actions.Earliest(deadline, time.Now().Add(time.Duration(h.CallbackTimeout))))
	}
	if !called {
		run, retryAfter, err = h.await(ctx, key, runID, deadline)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return actionFailed, caddyhttp.Error(499, ctx.Err())
	}
	if err != nil {
		// Polling failed, but the run was created: the caller gets its id
		// and polls runs/{id} later, rather than an error that invites
		// running the action again.
		h.logFailure("polling an action run", key, err)
	}
	h.writeRun(w, run, "runs/"+url.PathEscape(runID), retryAfter)
	switch run.Status {
	case zapierapi.RunStatusSuccess:
		return actionSuccess, nil
	case zapierapi.RunStatusError:
		return actionError, nil
	}
	return actionPending, nil
}

// await polls the run until it ends or the deadline passes
// (actions.Await), pacing the polls by poll_interval, max_poll_interval and
// the request budget.
func (h *Actions) await(ctx context.Context, key tokencache.Key, runID string, deadline time.Time) (zapierapi.ActionRun, time.Duration, error) {
	return actions.Await(ctx, runID, deadline, func(ctx context.Context) (zapierapi.ActionRun, error) {
		return h.poll(ctx, key, runID)
	}, actions.Backoff{
		Interval:    time.Duration(h.PollInterval),
		MaxInterval: time.Duration(h.MaxPollInterval),
		Queued: func() time.Duration {
			if h.app.budget == nil {
				return 0
			}
			return h.app.budget.Snapshot().BlockedFor
		},
		Deferred: budgetDeferred,
	})
}

func (h *Actions) poll(ctx context.Context, key tokencache.Key, runID string) (zapierapi.ActionRun, error) {
	var run zapierapi.ActionRun
	// A poll finishes a run already created: it goes ahead of new work.
	err := h.app.callAPI(urgent(ctx), key, func(ctx context.Context, access string) (err error) {
		run, err = h.app.client.GetActionRun(ctx, h.app.APIURL, access, runID)
		return err
	})
	return run, err
}

// writeRun answers 200 with the results once the run has ended, else 202
// with where to poll (location, relative to the request, when not "") and,
// after a 429 or while the breaker is open, when.
func (h *Actions) writeRun(w http.ResponseWriter, run zapierapi.ActionRun, location string, retryAfter time.Duration) {
	view := runView{ID: run.ID, Status: run.Status}
	status := http.StatusAccepted
	if run.Done() {
		status, view.Results, view.Errors = http.StatusOK, run.Results, run.Errors
	} else {
		if location != "" {
			w.Header().Set("Location", location)
		}
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
		}
	}
	writeConnectJSON(w, status, struct {
		Run runView `json:"run"`
	}{view})
}

func (h *Actions) serveRunStatus(w http.ResponseWriter, r *http.Request, key tokencache.Key, runID string) error {
	ctx := r.Context()
	var rec *actions.RunRecord
	mine := false
	if actions.ValidRunID(runID) {
		var err error
		if rec, mine, err = h.runs.Owned(ctx, runID, key); err != nil {
			return h.fail(w, r, err)
		}
	}
	if !mine {
		// Another user's run is indistinguishable from no run at all.
		return h.fail(w, r, &gateway.Error{Status: http.StatusNotFound, Code: "run_not_found",
			Message: "no run with this id was started by this user through the gateway"})
	}
	if rec.Result != nil { // delivered by Zapier's callback: no call needed
		h.writeRun(w, rec.Result.Run(runID), "", 0)
		return nil
	}
	run, err := h.poll(ctx, key, runID)
	if err != nil {
		return h.fail(w, r, err)
	}
	h.writeRun(w, run, "", 0)
	return nil
}

// resolveApp accepts an app named in zapier_actions' app lines, a key
// the caller has connected through zapier_connect (its stored connection
// carries the UUID), or any app of Zapier's catalog by key or UUID.
func (h *Actions) resolveApp(ctx context.Context, key tokencache.Key, name string) (appIDs, error) {
	ids, ok, aerr := h.apps.resolve(name)
	if aerr != nil {
		return appIDs{}, aerr
	}
	if ok {
		return ids, nil
	}
	recs, err := h.store.List(ctx, key.Tenant, key.User)
	if err != nil {
		return appIDs{}, err
	}
	for _, rec := range recs {
		if rec.App == name {
			return appIDs{connect: rec.App, uuid: rec.AppUUID}, nil
		}
	}
	return h.app.resolveApp(ctx, key, h.apps, name)
}

// connection returns the caller's stored account of the app named connID,
// or with connID empty the default one (most recently verified).
func (h *Actions) connection(ctx context.Context, key tokencache.Key, app, connID string) (appIDs, *connect.Record, error) {
	ids, err := h.resolveApp(ctx, key, app)
	if err != nil {
		return appIDs{}, nil, err
	}
	rec, err := h.store.Get(ctx, key.Tenant, key.User, ids.uuid, connID)
	if err != nil {
		return appIDs{}, nil, err
	}
	if rec == nil && connID != "" {
		return appIDs{}, nil, &gateway.Error{Status: http.StatusConflict, Code: "connection_missing",
			Message: "connection_id is not one of the user's stored connections for app " + ids.connect}
	}
	if rec == nil {
		return appIDs{}, nil, &gateway.Error{Status: http.StatusConflict, Code: "connection_missing",
			Message: "the user has no stored connection for app " + ids.connect + ": connect it through zapier_connect first"}
	}
	return ids, rec, nil
}

func (h *Actions) listActions(ctx context.Context, key tokencache.Key, ids appIDs, actionType string) ([]zapierapi.Action, error) {
	var actions []zapierapi.Action
	err := h.app.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
		actions, err = h.app.client.ListActions(ctx, h.app.APIURL, access, ids.uuid, actionType)
		return err
	})
	return actions, err
}

// freshActionID looks the action up by its key, for an id Zapier issued
// just now: ids are never cached or reused.
func (h *Actions) freshActionID(ctx context.Context, key tokencache.Key, ids appIDs, actionKey, actionType string) (string, error) {
	actions, err := h.listActions(ctx, key, ids, actionType)
	if err != nil {
		return "", err
	}
	var found []zapierapi.Action
	for _, a := range actions {
		if a.Key == actionKey {
			found = append(found, a)
		}
	}
	switch {
	case len(found) == 0:
		return "", &gateway.Error{Status: http.StatusNotFound, Code: "action_not_found",
			Message: fmt.Sprintf("app %s has no action with key %q", ids.connect, actionKey)}
	case len(found) > 1:
		types := make([]string, len(found))
		for i, a := range found {
			types[i] = a.ActionType
		}
		return "", gateway.BadRequest(fmt.Sprintf("action %q exists as %s: give action_type", actionKey, strings.Join(types, " and ")))
	}
	return found[0].ID, nil
}

// rejection explains Zapier refusing a run or an inputs request. The
// likeliest cause is the stored connection (expired, or gone), so that is
// checked with Zapier; otherwise the refusal is the caller's request.
func (h *Actions) rejection(ctx context.Context, key tokencache.Key, ids appIDs, rec *connect.Record, err error) error {
	zerr, ok := zapierapi.AsError(err)
	if !ok || zerr.Kind != zapierapi.KindRejected || zerr.StatusCode == http.StatusUnauthorized || zerr.StatusCode == http.StatusForbidden {
		return err
	}
	var auths []zapierapi.Authentication
	lerr := h.app.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
		auths, err = h.app.client.ListAuthentications(ctx, h.app.APIURL, access, ids.uuid)
		return err
	})
	if lerr == nil {
		reason := "not found"
		if a := connect.FindConnection(auths, rec.ConnectionID, ids.uuid); a != nil { // the app too
			reason = ""
			if a.IsExpired {
				reason = "expired"
			}
		}
		if reason != "" {
			return &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
				Message: "the stored connection for app " + ids.connect + " is no longer valid (" + reason + "): reconnect it through zapier_connect"}
		}
	}
	if zerr.StatusCode == http.StatusBadRequest || zerr.StatusCode == http.StatusUnprocessableEntity {
		msg := "Zapier refused the request" + gateway.StatusSuffix(zerr.StatusCode, zerr.OAuthError)
		if zerr.Description != "" {
			msg += ": " + zerr.Description
		}
		return &gateway.Error{Status: http.StatusBadRequest, Code: "action_rejected", Message: msg}
	}
	return err
}

// fail answers an error: the gateway's own (*gateway.Error), a failed call to
// Zapier (mapped to the error table), or an internal failure (logged by
// Caddy, never shown). A caller that went away gets no body.
func (h *Actions) fail(w http.ResponseWriter, r *http.Request, err error) error {
	if _, ok := zapierapi.AsError(err); ok {
		err = gateway.CallError(err)
	}
	return failConnect(w, r, err)
}

func (h *Actions) logFailure(msg string, key tokencache.Key, err error, fields ...zap.Field) {
	level := zapcore.InfoLevel
	if zerr, ok := zapierapi.AsError(err); ok {
		fields = append(fields, zap.String("kind", zerr.Kind.String()), zap.Int("status", zerr.StatusCode))
		if zerr.Kind == zapierapi.KindFailed || zerr.Kind == zapierapi.KindTimeout {
			level = zapcore.WarnLevel
		}
	}
	if ce := h.logger.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("identity", gateway.LogHash(key.Tenant, key.User)), zap.Error(err))...)
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Actions)(nil)
	_ caddyhttp.MiddlewareHandler = (*Actions)(nil)
	_ caddyfile.Unmarshaler       = (*Actions)(nil)
)
