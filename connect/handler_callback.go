package connect

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
)

// serveCallback finishes the redirect flow. Zapier's documented success
// callback is ?authentication_id=…&service=<app key>, without state, so the
// flow is found from the browser's flow cookie unless a state came back
// (callbackFlow). Without a flow there is no trusted return_to, so those
// refusals are JSON; after it, the outcome goes back to return_to.
func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	p, err := ParseCallback(r.URL.RawQuery)
	if err != nil {
		h.completed(FlowRedirect, OutcomeFailed)
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	st, err := h.callbackFlow(w, r, id, p)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if err := CheckReturnTo(st.ReturnTo, h.cfg.ReturnOrigins); err != nil {
		// Signed by us, but return_origins may have changed since.
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	ids := gateway.App{Key: st.App, UUID: st.AppUUID}
	if p.HasError {
		h.completed(FlowRedirect, OutcomeAuthError)
		params := url.Values{"zapier_connect": {"error"}, "zapier_app": {ids.Key}, "zapier_error": {p.ErrCode}}
		if p.ErrDesc != "" {
			params.Set("zapier_error_description", p.ErrDesc)
		}
		Redirect(w, WithOutcome(st.ReturnTo, params))
		return nil
	}
	rec, err := h.verifyAndStore(r.Context(), id, ids, p.AuthID, FlowRedirect)
	if err != nil {
		return h.redirectFailure(w, r, st.ReturnTo, ids, err)
	}
	Redirect(w, WithOutcome(st.ReturnTo, successParams(rec)))
	return nil
}

// callbackFlow finds and spends the flow a callback completes. A state
// Zapier echoed names it. Otherwise the candidates are the redirect flows
// this browser holds in its flow cookie for the caller (unspent, unexpired,
// the nonce matching), narrowed to the app service names; among several,
// the one whose app the connection id belongs to (Choose). Either way the
// flow is spent once, and service, when present, must name its app. The
// protections are the state's: only the browser that started the flow,
// only its user, once, before it expires; and verifyAndStore still checks
// the id against the user's own /v2/authentications.
func (h *Handler) callbackFlow(w http.ResponseWriter, r *http.Request, id gateway.Identity, p CallbackParams) (*State, error) {
	if p.State != "" {
		return h.takeState(w, r, id, p.State, FlowRedirect, func(st *State) error {
			if !ServiceNames(p.Service, st.App) {
				return RefuseState("issued for another app")
			}
			return nil
		})
	}
	ctx := r.Context()
	open, err := h.cfg.States.OpenPending(ctx, r, id.Tenant, id.User)
	if err != nil {
		return h.spendState(w, r, id, FlowRedirect, nil, err)
	}
	flows := make([]PendingFlow, len(open))
	byID := make(map[string]*State, len(open))
	for i, st := range open {
		flows[i] = PendingFlow{ID: st.ID, App: st.App, AppUUID: st.AppUUID}
		byID[st.ID] = st
	}
	candidates := Candidates(flows, p.Service)
	if len(candidates) == 0 {
		return h.spendState(w, r, id, FlowRedirect, nil, RefuseState("no connect flow for app "+p.Service+" in this browser"))
	}
	chosen, _, err := Choose(ctx, candidates, func(ctx context.Context, appUUID string) (bool, error) {
		if p.HasError {
			return true, nil // no id to tell the flows apart: the newest
		}
		auth, err := LookupConnection(ctx, h.cfg.Caller, id, appUUID, p.AuthID)
		return auth != nil, err
	})
	if err != nil {
		return nil, err
	}
	return h.spendState(w, r, id, FlowRedirect, byID[chosen.ID], nil)
}

// takeState opens the state for the caller, applies check (e.g. that it
// was issued for the app the request names) and spends it (spendState).
func (h *Handler) takeState(w http.ResponseWriter, r *http.Request, id gateway.Identity, raw string, flow Flow, check func(*State) error) (*State, error) {
	st, err := h.cfg.States.Open(r.Context(), r, raw, flow, id.Tenant, id.User)
	if err == nil && check != nil {
		err = check(st)
	}
	return h.spendState(w, r, id, flow, st, err)
}

// spendState spends an opened state and clears it from the browser's
// cookie; given a refusal (err), it answers it instead. Every refusal is
// 400 connect_state_invalid.
func (h *Handler) spendState(w http.ResponseWriter, r *http.Request, id gateway.Identity, flow Flow, st *State, err error) (*State, error) {
	if err == nil {
		err = h.cfg.States.Spend(r.Context(), st)
	}
	var serr *StateError
	if errors.As(err, &serr) {
		h.completed(flow, OutcomeStateInvalid)
		h.logRefusal("connect state refused", id, zap.String("flow", string(flow)), zap.String("reason", serr.Reason))
		return nil, &gateway.Error{Status: http.StatusBadRequest, Code: "connect_state_invalid",
			Message: "the connect state is invalid (" + serr.Reason + "); start the connect flow again"}
	}
	if err != nil {
		return nil, err
	}
	ClearFlowCookie(w, r, st.ID, h.cfg.StateTTL, h.secureCookie(r))
	return st, nil
}
