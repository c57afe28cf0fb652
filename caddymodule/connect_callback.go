package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
)

// serveCallback finishes the redirect flow. Zapier's documented success
// callback is ?authentication_id=…&service=<app key>, without state, so the
// flow is found from the browser's flow cookie unless a state came back
// (callbackFlow). Without a flow there is no trusted return_to, so those
// refusals are JSON; after it, the outcome goes back to return_to.
func (h *Connect) serveCallback(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	p, err := connect.ParseCallback(r.URL.RawQuery)
	if err != nil {
		h.app.metrics.observeConnectCompletion(connect.FlowRedirect, connectFailed)
		return failConnect(w, r, gateway.BadRequest(err.Error()))
	}
	st, err := h.callbackFlow(w, r, key, p)
	if err != nil {
		return failConnect(w, r, err)
	}
	if err := connect.CheckReturnTo(st.ReturnTo, h.app.ReturnOrigins); err != nil {
		// Signed by us, but return_origins may have changed since.
		return failConnect(w, r, gateway.BadRequest(err.Error()))
	}
	ids := appIDs{connect: st.App, uuid: st.AppUUID}
	if p.HasError {
		h.app.metrics.observeConnectCompletion(connect.FlowRedirect, connectAuthError)
		params := url.Values{"zapier_connect": {"error"}, "zapier_app": {ids.connect}, "zapier_error": {p.ErrCode}}
		if p.ErrDesc != "" {
			params.Set("zapier_error_description", p.ErrDesc)
		}
		redirectTo(w, connect.WithOutcome(st.ReturnTo, params))
		return nil
	}
	rec, err := h.verifyAndStore(r.Context(), key, ids, p.AuthID, connect.FlowRedirect)
	if err != nil {
		return h.redirectFailure(w, r, st.ReturnTo, ids, err)
	}
	redirectTo(w, connect.WithOutcome(st.ReturnTo, successParams(rec)))
	return nil
}

// callbackFlow finds and spends the flow a callback completes. A state
// Zapier echoed names it. Otherwise the candidates are the redirect flows
// this browser holds in its flow cookie for the caller (unspent, unexpired,
// the nonce matching), narrowed to the app service names; among several,
// the one whose app the connection id belongs to (connect.Choose). Either
// way the flow is spent once, and service, when present, must name its
// app. The protections are the state's: only the browser that started the
// flow, only its user, once, before it expires; and verifyAndStore still
// checks the id against the user's own /v2/authentications.
func (h *Connect) callbackFlow(w http.ResponseWriter, r *http.Request, key tokencache.Key, p connect.CallbackParams) (*connect.State, error) {
	if p.State != "" {
		return h.takeState(w, r, key, p.State, connect.FlowRedirect, func(st *connect.State) error {
			if !connect.ServiceNames(p.Service, st.App) {
				return connect.RefuseState("issued for another app")
			}
			return nil
		})
	}
	ctx := r.Context()
	open, err := h.states.OpenPending(ctx, r, key.Tenant, key.User)
	if err != nil {
		return h.spendState(w, r, key, connect.FlowRedirect, nil, err)
	}
	flows := make([]connect.PendingFlow, len(open))
	byID := make(map[string]*connect.State, len(open))
	for i, st := range open {
		flows[i] = connect.PendingFlow{ID: st.ID, App: st.App, AppUUID: st.AppUUID}
		byID[st.ID] = st
	}
	candidates := connect.Candidates(flows, p.Service)
	if len(candidates) == 0 {
		return h.spendState(w, r, key, connect.FlowRedirect, nil, connect.RefuseState("no connect flow for app "+p.Service+" in this browser"))
	}
	chosen, _, err := connect.Choose(ctx, candidates, func(ctx context.Context, appUUID string) (bool, error) {
		if p.HasError {
			return true, nil // no id to tell the flows apart: the newest
		}
		auth, err := h.lookupConnection(ctx, key, appUUID, p.AuthID)
		return auth != nil, err
	})
	if err != nil {
		return nil, err
	}
	return h.spendState(w, r, key, connect.FlowRedirect, byID[chosen.ID], nil)
}

// takeState opens the state for the caller, applies check (e.g. that it
// was issued for the app the request names) and spends it (spendState).
func (h *Connect) takeState(w http.ResponseWriter, r *http.Request, key tokencache.Key, raw string, flow connect.Flow, check func(*connect.State) error) (*connect.State, error) {
	st, err := h.states.Open(r.Context(), r, raw, flow, key.Tenant, key.User)
	if err == nil && check != nil {
		err = check(st)
	}
	return h.spendState(w, r, key, flow, st, err)
}

// spendState spends an opened state and clears it from the browser's
// cookie; given a refusal (err), it answers it instead. Every refusal is
// 400 connect_state_invalid.
func (h *Connect) spendState(w http.ResponseWriter, r *http.Request, key tokencache.Key, flow connect.Flow, st *connect.State, err error) (*connect.State, error) {
	if err == nil {
		err = h.states.spend(r.Context(), st)
	}
	var serr *connect.StateError
	if errors.As(err, &serr) {
		h.app.metrics.observeConnectCompletion(flow, connectStateInvalid)
		h.logRefusal("connect state refused", key, zap.String("flow", string(flow)), zap.String("reason", serr.Reason))
		return nil, &gateway.Error{Status: http.StatusBadRequest, Code: "connect_state_invalid",
			Message: "the connect state is invalid (" + serr.Reason + "); start the connect flow again"}
	}
	if err != nil {
		return nil, err
	}
	connect.ClearFlowCookie(w, r, st.ID, time.Duration(h.StateTTL), h.secureCookie(r))
	return st, nil
}
