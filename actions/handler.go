package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/idempotency"
	"github.com/zapgate/caddy-zapier/runcallback"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const (
	// DefaultPollInterval is the first pause between two polls of a run.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultMaxPollInterval is the longest pause between two polls.
	DefaultMaxPollInterval = 5 * time.Second
)

// Budget is the gateway's request budget as a run uses it. A nil Budget
// in HandlerConfig means no budget.
type Budget interface {
	// Prepay takes budget for units API calls of tenant at once; the calls
	// made with the returned context draw from it. Its refusal is the
	// gateway's error (a *gateway.Error) or the context's.
	Prepay(ctx context.Context, tenant string, units int) (context.Context, error)
	// Urgent marks the calls made with ctx as finishing work already paid
	// for (the polls of a created run).
	Urgent(ctx context.Context) context.Context
	// Queued is how long requests queue for the budget now.
	Queued() time.Duration
}

// HandlerConfig is what the zapier_actions handler is built from: the
// core's route policy and Zapier caller, the app lookup, storage, and the
// observers of the host (metrics, traces, logs).
type HandlerConfig struct {
	// Policy serves every user route (method, host, identity, limits).
	Policy *gateway.Policy
	// Caller makes the calls to Zapier's API with the user's token.
	Caller *gateway.Caller
	// Lookup finds apps and the user's stored connections.
	Lookup *Lookup
	// Budget prepays a run's calls and paces polls; nil is none.
	Budget Budget

	// Storage holds run records, Idempotency-Key records and spent
	// callback tokens; BG bounds background sweeps.
	Storage certmagic.Storage
	BG      context.Context
	// Keys names run owners; Names names and seals Idempotency-Key owners.
	Keys  IdentityKeys
	Names *gateway.Namespace
	// IdempotencyTakeover is how long a key whose first request made no
	// create call stays reserved (PendingTakeover).
	IdempotencyTakeover time.Duration

	// PollInterval (doubling up to MaxPollInterval) paces the polls of a
	// run; zero values are the defaults.
	PollInterval, MaxPollInterval time.Duration
	// Callback, when its URL is set, has runs finish from Zapier's callback.
	Callback CallbackConfig
	// RunVia is how runs reach Zapier: through stored actions with a
	// fallback (auto, the default), stored actions only, or
	// /v2/action-runs only.
	RunVia RunVia
	// ParseDuration reads a wait given as a string; nil is time.ParseDuration.
	ParseDuration func(string) (time.Duration, error)

	// Logger logs failures; nil is a no-op.
	Logger *zap.Logger
	// ObserveRun counts a POST run by how it ended; may be nil.
	ObserveRun func(Outcome)
	// ObserveCallback counts a delivery to the callback route by outcome
	// (CallbackOutcomes); may be nil.
	ObserveCallback func(outcome string)
	// TraceRun starts the span of a POST run and returns the function that
	// ends it; may be nil.
	TraceRun func(ctx context.Context, id gateway.Identity) (context.Context, func(outcome string, err error))
}

// Outcome is how a POST run ended (the action_runs_total label).
type Outcome string

// The outcomes of a POST run.
const (
	OutcomeSuccess           Outcome = "success"            // the run finished with status success
	OutcomeError             Outcome = "error"              // the run finished with status error
	OutcomePending           Outcome = "pending"            // the wait ended first: 202 with the run id
	OutcomeConnectionMissing Outcome = "connection_missing" // no stored connection for the app (409)
	OutcomeFailed            Outcome = "failed"             // the gateway could not create or poll the run
)

// Outcomes are all the outcomes of a POST run.
var Outcomes = []Outcome{OutcomeSuccess, OutcomeError, OutcomePending, OutcomeConnectionMissing, OutcomeFailed}

// Handler serves zapier_actions' routes, relative to where it is mounted:
// GET actions, POST inputs, POST run, GET runs/{id} (the user's), and POST
// callback (Zapier's, signed; no identity).
type Handler struct {
	cfg       HandlerConfig
	logger    *zap.Logger
	runs      *RunStore
	once      *runOnce
	verifier  *runcallback.Verifier
	replays   *runcallback.ReplayCache
	callbacks *callbackWaiters
	stored    *StoredStore
}

// Check sets the defaults of the handler's own options and checks them
// (nothing is stored or called); NewHandler checks them too.
func (cfg *HandlerConfig) Check() error {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxPollInterval == 0 {
		cfg.MaxPollInterval = max(DefaultMaxPollInterval, cfg.PollInterval)
	}
	if cfg.PollInterval < 0 || cfg.MaxPollInterval < cfg.PollInterval {
		return errors.New("poll_interval must be positive and at most max_poll_interval")
	}
	via, err := ParseRunVia(string(cfg.RunVia))
	if err != nil {
		return err
	}
	cfg.RunVia = via
	_, err = cfg.Callback.Verifier()
	return err
}

// NewHandler builds the handler; its error is a configuration mistake.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.ParseDuration == nil {
		cfg.ParseDuration = time.ParseDuration
	}
	if cfg.BG == nil {
		cfg.BG = context.Background()
	}
	verifier, err := cfg.Callback.Verifier()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, logger: cfg.Logger, verifier: verifier, callbacks: new(callbackWaiters)}
	if h.logger == nil {
		h.logger = zap.NewNop()
	}
	h.runs = NewRunStore(cfg.BG, cfg.Storage, cfg.Keys)
	h.stored = &StoredStore{Storage: cfg.Storage, Names: cfg.Names, Caller: cfg.Caller}
	h.replays = &runcallback.ReplayCache{Storage: cfg.Storage} // spent callback tokens
	if h.once, err = newRunOnce(cfg.BG, cfg.Storage, cfg.IdempotencyTakeover); err != nil {
		return nil, err
	}
	return h, nil
}

// StoredActions is the store of the users' stored actions (offboarding
// registers it; a disconnect forgets a connection's).
func (h *Handler) StoredActions() *StoredStore { return h.stored }

// Runs is the store of who started which run.
func (h *Handler) Runs() *RunStore { return h.runs }

// IdempotencyRecords is the offboarding store of the Idempotency-Key
// records (they hold action results).
func (h *Handler) IdempotencyRecords() gateway.UserStore {
	return idempotency.UserStore{Store: h.once.store, Names: h.cfg.Names, OwnerAAD: []byte(idempotencyOwnerAAD)}
}

// ServeHTTP serves r as a plain http.Handler; what Serve leaves unanswered
// is answered as gateway.Unanswered does (Caddy calls Serve and logs it).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gateway.Unanswered(w, h.Serve(w, r))
}

// Serve serves r. The error, when not nil, is a *gateway.HandlerError: a request
// the handler did not answer (the caller went away, or an internal
// failure, never shown to the caller).
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request) error {
	get := gateway.Route{Methods: []string{http.MethodGet}}
	post := gateway.Route{Methods: []string{http.MethodPost}}
	switch p := r.URL.Path; {
	case p == "/actions":
		return h.cfg.Policy.Serve(w, r, get, h.serveList)
	case p == "/inputs":
		return h.cfg.Policy.Serve(w, r, post, h.serveInputs)
	case p == "/run":
		return h.cfg.Policy.Serve(w, r, post, h.serveRunOnce)
	case p == "/callback":
		return h.serveCallback(w, r) // Zapier, not a user: no identity
	case strings.HasPrefix(p, "/runs/"):
		runID := strings.TrimPrefix(p, "/runs/")
		return h.cfg.Policy.Serve(w, r, get, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
			return h.serveRunStatus(w, r, id, runID)
		})
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_actions route (actions, inputs, run, runs/{id}, callback)"})
	return nil
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

func (h *Handler) serveList(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
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
	app, err := h.cfg.Lookup.App(ctx, id, q.Get("app"))
	if err != nil {
		return h.fail(w, r, err)
	}
	list, err := h.listActions(ctx, id, app, actionType)
	if err != nil {
		return h.fail(w, r, err)
	}
	out := make([]listedAction, 0, len(list))
	for _, a := range list {
		out = append(out, listedAction{Key: a.Key, Title: a.Title, Description: a.Description, ActionType: a.ActionType, IsInstant: a.IsInstant})
	}
	gateway.WriteJSON(w, http.StatusOK, struct {
		Data []listedAction `json:"data"`
	}{out})
	return nil
}

func (h *Handler) serveInputs(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	var req ActionRequest
	if aerr := gateway.DecodeJSON(w, r, &req); aerr != nil {
		return h.fail(w, r, aerr)
	}
	if err := req.Check(); err != nil {
		return h.fail(w, r, gateway.BadRequest(err.Error()))
	}
	ctx := r.Context()
	app, rec, err := h.cfg.Lookup.Connection(ctx, id, req.App, req.Connection())
	if err != nil {
		return h.fail(w, r, err)
	}
	actionID, err := h.freshActionID(ctx, id, app, req.Action, req.ActionType)
	if err != nil {
		return h.fail(w, r, err)
	}
	var fields []json.RawMessage
	c := h.cfg.Caller
	err = c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		fields, err = c.Client.ActionInputs(ctx, c.APIURL, access, actionID, rec.ConnectionID, req.Inputs)
		return err
	})
	if err != nil {
		return h.fail(w, r, h.rejection(ctx, id, app, rec, err))
	}
	gateway.WriteJSON(w, http.StatusOK, struct {
		Data []json.RawMessage `json:"data"`
	}{fields})
	return nil
}

func (h *Handler) listActions(ctx context.Context, id gateway.Identity, app App, actionType string) ([]zapierapi.Action, error) {
	var list []zapierapi.Action
	c := h.cfg.Caller
	err := c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		list, err = c.Client.ListActions(ctx, c.APIURL, access, app.UUID, actionType)
		return err
	})
	return list, err
}

// freshActionID looks the action up by its key, for an id Zapier issued
// just now: ids are never cached or reused.
func (h *Handler) freshActionID(ctx context.Context, id gateway.Identity, app App, actionKey, actionType string) (string, error) {
	a, err := h.findAction(ctx, id, app, actionKey, actionType)
	return a.ID, err
}

// findAction looks the action up by its key (and type, when given) in the
// app's listing.
func (h *Handler) findAction(ctx context.Context, id gateway.Identity, app App, actionKey, actionType string) (zapierapi.Action, error) {
	list, err := h.listActions(ctx, id, app, actionType)
	if err != nil {
		return zapierapi.Action{}, err
	}
	var found []zapierapi.Action
	for _, a := range list {
		if a.Key == actionKey {
			found = append(found, a)
		}
	}
	switch {
	case len(found) == 0:
		return zapierapi.Action{}, &gateway.Error{Status: http.StatusNotFound, Code: "action_not_found",
			Message: fmt.Sprintf("app %s has no action with key %q", app.Key, actionKey)}
	case len(found) > 1:
		types := make([]string, len(found))
		for i, a := range found {
			types[i] = a.ActionType
		}
		return zapierapi.Action{}, gateway.BadRequest(fmt.Sprintf("action %q exists as %s: give action_type", actionKey, strings.Join(types, " and ")))
	}
	return found[0], nil
}

// rejection explains Zapier refusing a run or an inputs request. The
// likeliest cause is the stored connection (expired, or gone), so that is
// checked with Zapier; otherwise the refusal is the caller's request.
func (h *Handler) rejection(ctx context.Context, id gateway.Identity, app App, rec *connect.Record, err error) error {
	zerr, ok := zapierapi.AsError(err)
	if !ok || zerr.Kind != zapierapi.KindRejected || zerr.StatusCode == http.StatusUnauthorized || zerr.StatusCode == http.StatusForbidden {
		return err
	}
	var auths []zapierapi.Authentication
	c := h.cfg.Caller
	lerr := c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		auths, err = c.Client.ListAuthentications(ctx, c.APIURL, access, app.UUID)
		return err
	})
	if lerr == nil {
		reason := "not found"
		if a := connect.FindConnection(auths, rec.ConnectionID, app.UUID); a != nil { // the app too
			reason = ""
			if a.IsExpired {
				reason = "expired"
			}
		}
		if reason != "" {
			return &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
				Message: "the stored connection for app " + app.Key + " is no longer valid (" + reason + "): reconnect it through zapier_connect"}
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
