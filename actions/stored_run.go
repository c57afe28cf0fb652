package actions

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// createStoredRun runs the action through its stored action: one call
// (POST /actions/v1/stored-actions/{id}/run) once the stored action exists;
// the first run creates it (two calls, three when the request gives no
// action_type, which the create needs and a listing tells). A stored
// action Zapier no longer has is created again once. An action Zapier will
// not store runs through /v2/action-runs (run_via auto), and the refusal is
// remembered for StoredRefusalTTL, or is the error action_not_storable
// (run_via stored). It returns the run id and the stored action's id ("" for
// a /v2/action-runs run).
func (h *Handler) createStoredRun(ctx context.Context, id gateway.Identity, app App, rec *connect.Record, req *RunRequest, track *runTrack) (runID, storedID string, err error) {
	key, err := h.stored.recordKey(ctx, id, app.UUID, rec.ConnectionID, req.Action, req.ActionType)
	if err != nil {
		return "", "", err
	}
	srec, err := h.stored.Get(ctx, key)
	if err != nil {
		return "", "", err
	}
	if srec != nil && srec.ID == "" && h.cfg.RunVia == RunViaAuto && time.Since(srec.RefusedAt) < StoredRefusalTTL {
		runID, err := h.createActionRun(ctx, id, app, rec, req, track)
		return runID, "", err
	}
	if srec != nil {
		storedID = srec.ID
	}
	units := 1
	if storedID == "" {
		units = 2 // create + run
		if req.ActionType == "" {
			units = 3 // and the listing that tells the action's type
		}
	}
	paid, err := h.prepay(ctx, id, units)
	if err != nil {
		return "", "", err
	}
	committed := false
	gone := ""
	for attempt := 0; ; attempt++ {
		if storedID == "" {
			var refusal error
			storedID, refusal, err = h.ensureStored(ctx, paid, id, app, rec, req, key, gone)
			if refusal != nil {
				return h.storeRefusedRun(ctx, id, app, rec, req, track, key, refusal)
			}
			if err != nil {
				return "", "", err
			}
		}
		if !committed {
			if err := track.commit(); err != nil {
				return "", "", err // the key was taken over: its new owner runs the action
			}
			committed = true
		}
		// The run call outlives the client, as a create does.
		runID, err = runStored(context.WithoutCancel(paid), h.cfg.Caller, id, storedID, req.Inputs, h.cfg.Callback.URL)
		if err == nil {
			return runID, storedID, nil
		}
		if storedGone(err) && attempt == 0 {
			// Deleted at Zapier (or no longer this user's): create it again.
			gone, storedID = storedID, ""
			if paid, err = h.prepay(ctx, id, 1); err != nil {
				return "", "", err
			}
			continue
		}
		track.createFailed(err)
		h.logFailure("stored action run not created", id, err, zap.String("app", app.Key), zap.String("action", req.Action))
		return "", "", h.rejection(ctx, id, app, rec, err)
	}
}

// ensureStored returns the request's stored action, creating it under the
// record's storage lock, so concurrent first runs (on any sidecar sharing
// the storage) create one stored action between them, and none is left at
// Zapier untracked. gone is a stored action Zapier no longer has: a record
// still naming it is replaced. refusal is Zapier refusing to store the
// action (storeRefused).
func (h *Handler) ensureStored(ctx, paid context.Context, id gateway.Identity, app App, rec *connect.Record, req *RunRequest, key, gone string) (storedID string, refusal, err error) {
	st := h.stored
	if err := st.Storage.Lock(ctx, key); err != nil {
		return "", nil, fmt.Errorf("locking stored action record: %w", err)
	}
	defer func() { _ = st.Storage.Unlock(context.WithoutCancel(ctx), key) }()
	srec, err := st.Get(ctx, key)
	if err != nil {
		return "", nil, err
	}
	if srec != nil && srec.ID != "" && srec.ID != gone {
		return srec.ID, nil, nil // another request created it meanwhile
	}
	storedID, err = h.createStoredAction(paid, id, app, rec, req)
	if err != nil && storeRefused(err) {
		return "", err, nil
	}
	if err != nil {
		h.logFailure("stored action not created", id, err, zap.String("app", app.Key), zap.String("action", req.Action))
		return "", nil, err
	}
	if err := st.Put(ctx, key, StoredRecord{ID: storedID, App: app.UUID, ConnectionID: rec.ConnectionID,
		Action: req.Action, ActionType: req.ActionType, Created: time.Now().UTC()}); err != nil {
		// The stored action exists at Zapier, untracked: delete it there
		// rather than leave it for no offboarding to find.
		if _, derr := st.deleteAtZapier(context.WithoutCancel(ctx), id, storedID); derr != nil {
			h.logFailure("deleting an unrecorded stored action", id, derr)
		}
		return "", nil, err
	}
	return storedID, nil, nil
}

// prepay takes budget for units calls of id's tenant (none without a
// budget); the calls made with the returned context draw from it.
func (h *Handler) prepay(ctx context.Context, id gateway.Identity, units int) (context.Context, error) {
	if h.cfg.Budget == nil {
		return ctx, nil
	}
	return h.cfg.Budget.Prepay(ctx, id.Tenant, units)
}

// createStoredAction creates the request's stored action at Zapier, with
// the action's type from a listing when the request does not give it.
func (h *Handler) createStoredAction(ctx context.Context, id gateway.Identity, app App, rec *connect.Record, req *RunRequest) (string, error) {
	actionType := req.ActionType
	if actionType == "" {
		a, err := h.findAction(ctx, id, app, req.Action, "")
		if err != nil {
			return "", err
		}
		actionType = a.ActionType
	}
	return createStored(ctx, h.cfg.Caller, id, app.Key, actionType, req.Action, rec.ConnectionID)
}

// storeRefusedRun answers Zapier's refusal to store the action: with
// run_via auto the run goes through /v2/action-runs, and when that run is
// created the refusal is remembered (a refusal that was the connection's
// fault fails the fallback too, and is not remembered); with run_via stored
// it is the error action_not_storable, or the connection's.
func (h *Handler) storeRefusedRun(ctx context.Context, id gateway.Identity, app App, rec *connect.Record, req *RunRequest, track *runTrack, key string, refusal error) (string, string, error) {
	h.logFailure("Zapier refused to store the action", id, refusal, zap.String("app", app.Key), zap.String("action", req.Action))
	if h.cfg.RunVia != RunViaAuto {
		err := h.rejection(ctx, id, app, rec, refusal)
		if gerr, ok := err.(*gateway.Error); ok && gerr.Code == "connection_invalid" {
			return "", "", err
		}
		msg := "Zapier refused to store action " + req.Action + " of app " + app.Key + " (only core actions can be stored)"
		if zerr, ok := zapierapi.AsError(refusal); ok {
			msg += gateway.StatusSuffix(zerr.StatusCode, zerr.OAuthError)
			if zerr.Description != "" {
				msg += ": " + zerr.Description
			}
		}
		return "", "", &gateway.Error{Status: http.StatusBadRequest, Code: "action_not_storable", Message: msg}
	}
	runID, err := h.createActionRun(ctx, id, app, rec, req, track)
	if err != nil {
		return "", "", err
	}
	if perr := h.stored.Put(ctx, key, StoredRecord{App: app.UUID, ConnectionID: rec.ConnectionID, Action: req.Action,
		ActionType: req.ActionType, Created: time.Now().UTC(), RefusedAt: time.Now().UTC()}); perr != nil {
		h.logger.Error("remembering a stored action refusal", zap.String("identity", gateway.LogHash(id.Tenant, id.User)), zap.Error(perr))
	}
	return runID, "", nil
}
