package actions

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// runView is the run in the gateway's answers: results and errors only
// once it has ended.
type runView struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Results json.RawMessage `json:"results,omitempty"`
	Errors  json.RawMessage `json:"errors,omitempty"`
}

// serveRun is POST run; track, when not nil, is told of the create call
// and the run it made (the Idempotency-Key record, once.go).
func (h *Handler) serveRun(w http.ResponseWriter, r *http.Request, id gateway.Identity, track *runTrack) error {
	ctx, finish := r.Context(), func(string, error) {}
	if h.cfg.TraceRun != nil {
		ctx, finish = h.cfg.TraceRun(ctx, id)
	}
	outcome, err := h.run(w, r.WithContext(ctx), id, track)
	if h.cfg.ObserveRun != nil {
		h.cfg.ObserveRun(outcome)
	}
	spanErr := err
	if spanErr == nil && (outcome == OutcomeFailed || outcome == OutcomeConnectionMissing) {
		spanErr = errors.New(string(outcome)) // answered, but not run
	}
	finish(string(outcome), spanErr)
	return err
}

// run does POST run and reports how it ended: resolve the app and the
// connection, create the run (through a stored action, or a fresh action id
// and /v2/action-runs: run_via), then await its callback or poll it.
func (h *Handler) run(w http.ResponseWriter, r *http.Request, id gateway.Identity, track *runTrack) (Outcome, error) {
	fail := func(err error) (Outcome, error) {
		outcome := OutcomeFailed
		var aerr *gateway.Error
		if errors.As(err, &aerr) && aerr.Code == "connection_missing" {
			outcome = OutcomeConnectionMissing
		}
		return outcome, h.fail(w, r, err)
	}
	var req RunRequest
	if aerr := gateway.DecodeJSON(w, r, &req); aerr != nil {
		return fail(aerr)
	}
	if err := req.Check(); err != nil {
		return fail(gateway.BadRequest(err.Error()))
	}
	wait, err := ParseWait(req.Wait, h.cfg.ParseDuration)
	if err != nil {
		return fail(gateway.BadRequest(err.Error()))
	}
	deadline := time.Now().Add(wait)
	ctx := r.Context()
	app, rec, err := h.cfg.Lookup.Connection(ctx, id, req.App, req.Connection())
	if err != nil {
		return fail(err)
	}
	var runID, storedID string
	if h.cfg.RunVia == RunViaActionRuns {
		runID, err = h.createActionRun(ctx, id, app, rec, &req, track)
	} else {
		runID, storedID, err = h.createStoredRun(ctx, id, app, rec, &req, track)
	}
	if err != nil {
		return fail(err)
	}
	if !ValidRunID(runID) {
		return fail(&gateway.Error{Status: http.StatusBadGateway, Code: "zapier_api_failed",
			Message: "Zapier created the run but sent an unusable run id"})
	}
	if err := h.runs.PutRun(context.WithoutCancel(ctx), runID, id, app.UUID, req.Action, storedID); err != nil {
		// The run exists: answer with it anyway; only runs/{id} will not know it.
		h.logger.Error("recording the owner of an action run", zap.String("identity", gateway.LogHash(id.Tenant, id.User)), zap.Error(err))
	}
	track.created(runID)

	var run zapierapi.ActionRun
	var retryAfter time.Duration
	called := false
	if h.verifier != nil {
		// Finish from Zapier's callback; poll only if it does not come.
		run, called = h.awaitCallback(ctx, runID, Earliest(deadline, time.Now().Add(h.cfg.Callback.Timeout)))
	}
	if !called {
		run, retryAfter, err = h.await(ctx, id, runID, storedID, deadline)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return OutcomeFailed, &gateway.HandlerError{Status: gateway.StatusClientGone, Err: ctx.Err()}
	}
	if err != nil {
		// Polling failed, but the run was created: the caller gets its id
		// and polls runs/{id} later, rather than an error that invites
		// running the action again.
		h.logFailure("polling an action run", id, err)
	}
	writeRun(w, run, "runs/"+url.PathEscape(runID), retryAfter)
	switch run.Status {
	case zapierapi.RunStatusSuccess:
		return OutcomeSuccess, nil
	case zapierapi.RunStatusError:
		return OutcomeError, nil
	}
	return OutcomePending, nil
}

// await polls the run (of stored action storedID, when not "") until it
// ends or the deadline passes (Await), pacing the polls by the poll
// intervals and the request budget.
func (h *Handler) await(ctx context.Context, id gateway.Identity, runID, storedID string, deadline time.Time) (zapierapi.ActionRun, time.Duration, error) {
	b := Backoff{Interval: h.cfg.PollInterval, MaxInterval: h.cfg.MaxPollInterval, Deferred: BudgetDeferred}
	if h.cfg.Budget != nil {
		b.Queued = h.cfg.Budget.Queued
	}
	return Await(ctx, runID, deadline, func(ctx context.Context) (zapierapi.ActionRun, error) {
		return h.poll(ctx, id, runID, storedID)
	}, b)
}

// poll reads a run once: a stored action's run (storedID not "") or a
// /v2/action-runs one.
func (h *Handler) poll(ctx context.Context, id gateway.Identity, runID, storedID string) (zapierapi.ActionRun, error) {
	// A poll finishes a run already created: it goes ahead of new work.
	if h.cfg.Budget != nil {
		ctx = h.cfg.Budget.Urgent(ctx)
	}
	c := h.cfg.Caller
	if storedID != "" {
		return getStoredRun(ctx, c, id, storedID, runID)
	}
	var run zapierapi.ActionRun
	err := c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		run, err = c.Client.GetActionRun(ctx, c.APIURL, access, runID)
		return err
	})
	return run, err
}

// BudgetDeferred reports whether err is the request budget refusing a call
// for want of room (not a 429 cooldown, not a closed budget), and when it
// expects room again.
func BudgetDeferred(err error) (time.Duration, bool) {
	var ee *budget.ExhaustedError
	if err == nil || !errors.As(err, &ee) {
		return 0, false
	}
	if ee.Reason != budget.ShedQueueFull && ee.Reason != budget.ShedDeadline {
		return 0, false
	}
	return ee.RetryAfter, true
}

// writeRun answers 200 with the results once the run has ended, else 202
// with where to poll (location, relative to the request, when not "") and,
// after a 429 or while the breaker is open, when.
func writeRun(w http.ResponseWriter, run zapierapi.ActionRun, location string, retryAfter time.Duration) {
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
	gateway.WriteJSON(w, status, struct {
		Run runView `json:"run"`
	}{view})
}

func (h *Handler) serveRunStatus(w http.ResponseWriter, r *http.Request, id gateway.Identity, runID string) error {
	ctx := r.Context()
	var rec *RunRecord
	mine := false
	if ValidRunID(runID) {
		var err error
		if rec, mine, err = h.runs.Owned(ctx, runID, id); err != nil {
			return h.fail(w, r, err)
		}
	}
	if !mine {
		// Another user's run is indistinguishable from no run at all.
		return h.fail(w, r, &gateway.Error{Status: http.StatusNotFound, Code: "run_not_found",
			Message: "no run with this id was started by this user through the gateway"})
	}
	if rec.Result != nil { // delivered by Zapier's callback: no call needed
		writeRun(w, rec.Result.Run(runID), "", 0)
		return nil
	}
	run, err := h.poll(ctx, id, runID, rec.Stored)
	if err != nil {
		return h.fail(w, r, err)
	}
	writeRun(w, run, "", 0)
	return nil
}

func (h *Handler) logFailure(msg string, id gateway.Identity, err error, fields ...zap.Field) {
	level := zapcore.InfoLevel
	if zerr, ok := zapierapi.AsError(err); ok {
		fields = append(fields, zap.String("kind", zerr.Kind.String()), zap.Int("status", zerr.StatusCode))
		if zerr.Kind == zapierapi.KindFailed || zerr.Kind == zapierapi.KindTimeout {
			level = zapcore.WarnLevel
		}
	}
	if ce := h.logger.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("identity", gateway.LogHash(id.Tenant, id.User)), zap.Error(err))...)
	}
}

// createActionRun is the /v2/action-runs path: prepay the budget, look up a
// fresh action id, create the run; the run id.
func (h *Handler) createActionRun(ctx context.Context, id gateway.Identity, app App, rec *connect.Record, req *RunRequest, track *runTrack) (string, error) {
	// The fresh action id and the create are paid for together: under
	// load a run either gets both calls or fails before spending any.
	paid := ctx
	var err error
	if h.cfg.Budget != nil {
		if paid, err = h.cfg.Budget.Prepay(ctx, id.Tenant, 2); err != nil {
			return "", err
		}
	}
	actionID, err := h.freshActionID(paid, id, app, req.Action, req.ActionType)
	if err != nil {
		return "", err
	}
	if err := track.commit(); err != nil {
		return "", err // the key was taken over: its new owner runs the action
	}
	// The create call outlives the client: once it is made, the gateway
	// learns the run's id and records it, whether or not anyone waits.
	var runID string
	c := h.cfg.Caller
	err = c.Call(context.WithoutCancel(paid), id, func(ctx context.Context, access string) (err error) {
		runID, err = c.Client.CreateActionRun(ctx, c.APIURL, access, zapierapi.ActionRunRequest{
			Action: actionID, Authentication: rec.ConnectionID, Inputs: req.Inputs, CallbackURL: h.cfg.Callback.URL,
		})
		return err
	})
	if err != nil {
		track.createFailed(err)
		h.logFailure("action run not created", id, err, zap.String("app", app.Key), zap.String("action", req.Action))
		return "", h.rejection(ctx, id, app, rec, err)
	}
	return runID, nil
}
