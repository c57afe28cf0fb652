package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// accessToken returns the identity's access token from the shared cache,
// exchanging on a miss, and counts the lookup.
func (a *App) accessToken(ctx context.Context, key tokencache.Key) (string, error) {
	tok, res, err := a.tokens.get(ctx, key)
	a.metrics.observeLookup(res)
	annotateLookup(ctx, res)
	return tok.Value, err
}

type tokenRequest struct {
	App string `json:"app"`
	// ReconnectID re-authorizes that connection instead of creating one.
	ReconnectID string `json:"reconnect_id,omitempty"`
	// Reconnect re-authorizes the caller's stored connection for the app.
	Reconnect bool `json:"reconnect,omitempty"`
	// NewAccount connects another account of the app even when one is
	// stored and valid (a work and a personal Slack).
	NewAccount bool `json:"new_account,omitempty"`
	// Theme is passed to Connect (partner-specific branding).
	Theme string `json:"theme,omitempty"`
}

type tokenResponse struct {
	URL       string `json:"url"`
	Token     string `json:"token"`
	ExpiresIn int64  `json:"expires_in"`
	State     string `json:"state"`
	App       string `json:"app"`
}

// reusedResponse answers a connect request when the stored connection is
// still valid: no flow is needed.
type reusedResponse struct {
	Connection *connect.Record `json:"connection"`
}

// serveToken starts the popup flow: a connect token for
// <connect_url>/to/<app>, a state bound to this browser, and the URL to open.
func (h *Connect) serveToken(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	var req tokenRequest
	if aerr := decodeConnectBody(w, r, &req); aerr != nil {
		return failConnect(w, r, aerr)
	}
	ids, err := h.app.resolveApp(r.Context(), key, h.apps, req.App)
	if err != nil {
		return failConnect(w, r, err)
	}
	if req.Theme != "" && !validTheme(req.Theme) {
		return failConnect(w, r, gateway.BadRequest(themeRule))
	}
	ctx := r.Context()
	reconnectID, reused, err := h.plan(ctx, key, ids, req.ReconnectID, req.Reconnect, req.NewAccount)
	if err != nil {
		return failConnect(w, r, err)
	}
	if reused != nil {
		public := reused.Public() // as GET connections shows it: no owner hash
		writeConnectJSON(w, http.StatusOK, reusedResponse{Connection: &public})
		return nil
	}
	tok, err := h.connectToken(ctx, key, ids)
	if err != nil {
		return failConnect(w, r, err)
	}
	st := &connect.State{App: ids.connect, AppUUID: ids.uuid, Flow: connect.FlowPopup}
	state, nonce, err := h.states.Issue(ctx, st, key.Tenant, key.User)
	if err != nil {
		return failConnect(w, r, err)
	}
	connect.SetFlowCookie(w, r, st.ID, nonce, time.Duration(h.StateTTL), h.secureCookie(r))
	extra := url.Values{}
	if reconnectID != "" {
		extra.Set("reconnect_id", reconnectID)
	}
	if req.Theme != "" {
		extra.Set("theme", req.Theme)
	}
	writeConnectJSON(w, http.StatusOK, tokenResponse{
		URL:       h.connectURL(ids.connect, tok.AccessToken, extra),
		Token:     tok.AccessToken,
		ExpiresIn: int64(tok.ExpiresIn / time.Second),
		State:     state,
		App:       ids.connect,
	})
	return nil
}

// serveStart starts the redirect flow: 302 to Connect with
// redirect_uri=<callback_url> and a state bound to this browser and to
// return_to. Once return_to is known to be safe, every outcome, including a
// failure, goes back to it.
func (h *Connect) serveStart(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	q := r.URL.Query()
	for _, name := range []string{"app", "return_to", "reconnect_id", "reconnect", "new_account", "theme"} {
		if len(q[name]) > 1 {
			return failConnect(w, r, gateway.BadRequest(name+" must appear at most once"))
		}
	}
	if h.app.CallbackURL == "" {
		return failConnect(w, r, &gateway.Error{Status: http.StatusInternalServerError, Code: "connect_not_configured",
			Message: "the redirect flow needs callback_url in the zapier global option"})
	}
	returnTo := q.Get("return_to")
	if returnTo == "" {
		returnTo = "/"
	}
	if err := connect.CheckReturnTo(returnTo, h.app.ReturnOrigins); err != nil {
		return failConnect(w, r, gateway.BadRequest(err.Error()))
	}
	ids, err := h.app.resolveApp(r.Context(), key, h.apps, q.Get("app"))
	if err != nil {
		return failConnect(w, r, err)
	}
	theme := q.Get("theme")
	if theme != "" && !validTheme(theme) {
		return failConnect(w, r, gateway.BadRequest(themeRule))
	}
	reconnectID := q.Get("reconnect_id")
	reconnect := q.Get("reconnect") == "1" || q.Get("reconnect") == "true"
	newAccount := q.Get("new_account") == "1" || q.Get("new_account") == "true"
	ctx := r.Context()
	reconnectID, reused, err := h.plan(ctx, key, ids, reconnectID, reconnect, newAccount)
	if err != nil {
		return h.redirectFailure(w, r, returnTo, ids, err)
	}
	if reused != nil {
		redirectTo(w, connect.WithOutcome(returnTo, successParams(reused)))
		return nil
	}
	tok, err := h.connectToken(ctx, key, ids)
	if err != nil {
		return h.redirectFailure(w, r, returnTo, ids, err)
	}
	st := &connect.State{App: ids.connect, AppUUID: ids.uuid, Flow: connect.FlowRedirect, ReturnTo: returnTo}
	state, nonce, err := h.states.Issue(ctx, st, key.Tenant, key.User)
	if err != nil {
		return failConnect(w, r, err)
	}
	connect.SetFlowCookie(w, r, st.ID, nonce, time.Duration(h.StateTTL), h.secureCookie(r))
	extra := url.Values{"redirect_uri": {h.app.CallbackURL}, "state": {state}}
	if reconnectID != "" {
		extra.Set("reconnect_id", reconnectID)
	}
	if theme != "" {
		extra.Set("theme", theme)
	}
	redirectTo(w, h.connectURL(ids.connect, tok.AccessToken, extra))
	return nil
}

type completeRequest struct {
	App    string          `json:"app"`
	AuthID json.RawMessage `json:"auth_id"`
	State  string          `json:"state"`
}

// serveComplete finishes the popup flow with the authId Connect posted to
// the page.
func (h *Connect) serveComplete(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	var req completeRequest
	if aerr := decodeConnectBody(w, r, &req); aerr != nil {
		h.app.metrics.observeConnectCompletion(connect.FlowPopup, connectFailed)
		return failConnect(w, r, aerr)
	}
	authID, ok := connect.ConnectionIDFromJSON(req.AuthID)
	if !ok {
		h.app.metrics.observeConnectCompletion(connect.FlowPopup, connectFailed)
		return failConnect(w, r, gateway.BadRequest("auth_id must be the connection id Connect posted (a string or an integer)"))
	}
	ids, err := h.app.resolveApp(r.Context(), key, h.apps, req.App)
	if err != nil {
		h.app.metrics.observeConnectCompletion(connect.FlowPopup, connectFailed)
		return failConnect(w, r, err)
	}
	st, err := h.takeState(w, r, key, req.State, connect.FlowPopup, func(st *connect.State) error {
		if st.AppUUID != ids.uuid {
			return connect.RefuseState("issued for another app")
		}
		return nil
	})
	if err != nil {
		return failConnect(w, r, err)
	}
	rec, err := h.verifyAndStore(r.Context(), key, appIDs{connect: st.App, uuid: st.AppUUID}, authID, connect.FlowPopup)
	if err != nil {
		return failConnect(w, r, err)
	}
	writeConnectJSON(w, http.StatusOK, rec.Public())
	return nil
}

// plan decides how a connect request proceeds: reuse the default stored
// connection when Zapier still reports it valid, re-authorize one
// (explicitly, or because Zapier reports it expired), or create a new one
// (also when another account is asked for).
func (h *Connect) plan(ctx context.Context, key tokencache.Key, ids appIDs, reconnectID string, reconnect, newAccount bool) (string, *connect.Record, error) {
	if reconnectID != "" {
		if !connect.ValidConnectionID(reconnectID) {
			return "", nil, gateway.BadRequest("reconnect_id is not a connection id")
		}
		return reconnectID, nil, nil
	}
	if newAccount {
		return "", nil, nil
	}
	rec, err := h.store.Get(ctx, key.Tenant, key.User, ids.uuid)
	if err != nil || rec == nil {
		return "", nil, err
	}
	if reconnect {
		return rec.ConnectionID, nil, nil
	}
	auth, err := h.lookupConnection(ctx, key, ids.uuid, rec.ConnectionID)
	switch {
	case err != nil:
		return "", nil, err
	case auth == nil: // gone at Zapier: forget it and connect anew
		_, err := h.store.Remove(ctx, key.Tenant, key.User, ids.uuid, rec.ConnectionID)
		return "", nil, err
	case auth.IsExpired:
		return rec.ConnectionID, nil, nil
	}
	rec, err = h.store.Touch(ctx, key.Tenant, key.User, rec, auth.Title)
	return "", rec, err
}

// verifyAndStore checks that the connection id is one of the user's own,
// live authentications for the app, then stores it.
func (h *Connect) verifyAndStore(ctx context.Context, key tokencache.Key, ids appIDs, authID string, flow connect.Flow) (rec *connect.Record, err error) {
	ctx, span := startConnectSpan(ctx, flow)
	outcome := connectFailed
	defer func() {
		h.app.metrics.observeConnectCompletion(flow, outcome)
		finishSpan(span, string(outcome), err)
	}()
	auth, err := h.lookupConnection(ctx, key, ids.uuid, authID)
	if err != nil {
		return nil, err
	}
	if auth == nil || auth.IsExpired {
		outcome = connectConnectionInvalid
		reason := "not found"
		if auth != nil {
			reason = "expired"
		}
		h.logRefusal("connection refused", key, zap.String("flow", string(flow)), zap.String("app", ids.connect), zap.String("reason", reason))
		return nil, &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
			Message: "the connection is not one of this user's live connections for the app (" + reason + ")"}
	}
	rec, err = h.store.Put(ctx, key.Tenant, key.User, connect.Record{
		ConnectionID: authID, App: ids.connect, AppUUID: ids.uuid, Title: auth.Title,
	})
	if err != nil {
		return nil, err
	}
	outcome = connectSuccess
	return rec, nil
}

// lookupConnection finds id among the user's authentications for the app
// (nil when absent), with the user's own access token. A 401 means the
// cached token went stale: it is evicted and the lookup retried once.
func (h *Connect) lookupConnection(ctx context.Context, key tokencache.Key, appUUID, id string) (*zapierapi.Authentication, error) {
	var auths []zapierapi.Authentication
	err := h.app.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
		auths, err = h.app.client.ListAuthentications(ctx, h.app.APIURL, access, appUUID)
		return err
	})
	if _, ok := zapierapi.AsError(err); ok {
		return nil, gateway.CallError(err)
	}
	if err != nil {
		return nil, err
	}
	return connect.FindConnection(auths, id, appUUID), nil
}

// connectToken exchanges the user's access token for a single-use connect
// token bound to <connect_url>/to/<app>. Connect tokens are never cached.
// A rejection may mean the cached access token was revoked, so it is
// evicted and the exchange tried once more with a fresh one.
func (h *Connect) connectToken(ctx context.Context, key tokencache.Key, ids appIDs) (zapierapi.Token, error) {
	resource := h.connectBase + "/to/" + url.PathEscape(ids.connect)
	for attempt := 0; ; attempt++ {
		access, err := h.app.accessToken(ctx, key)
		if err != nil {
			return zapierapi.Token{}, gateway.ExchangeError(err)
		}
		tok, err := h.exchangeConnect(ctx, key, access, resource)
		if err != nil && zapierapi.IsPermanent(err) && attempt == 0 {
			h.app.tokens.evictToken(key, access)
			continue
		}
		if err != nil {
			return zapierapi.Token{}, gateway.ExchangeError(err)
		}
		return tok, nil
	}
}

// exchangeConnect is one connect-token exchange, within the app's limit on
// concurrent exchanges, through its circuit breaker, and counted like the
// others.
func (h *Connect) exchangeConnect(ctx context.Context, key tokencache.Key, access, resource string) (zapierapi.Token, error) {
	return h.app.limitedExchange(ctx, key, exchangeKindConnect, func(ctx context.Context) (zapierapi.Token, error) {
		return h.app.client.ExchangeConnectToken(ctx, access, resource)
	})
}

// connectURL is <connect_url>/to/<app>?token=…&…
func (h *Connect) connectURL(app, token string, extra url.Values) string {
	q := url.Values{"token": {token}}
	for k, v := range extra {
		q[k] = v
	}
	return h.connectBase + "/to/" + url.PathEscape(app) + "?" + q.Encode()
}

// secureCookie: over HTTPS the nonce cookie is Secure. Behind a TLS
// terminator the gateway sees HTTP, so X-Forwarded-Proto counts when a
// trusted peer sent it, and an https callback_url says the site is HTTPS.
func (h *Connect) secureCookie(r *http.Request) bool {
	return r.TLS != nil ||
		strings.HasPrefix(h.app.CallbackURL, "https://") ||
		(strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") && h.rules.IsTrusted(r.RemoteAddr))
}

// redirectFailure sends the browser back to a validated return_to with the
// error code of err. A caller that went away gets nothing; an internal
// error stays internal.
func (h *Connect) redirectFailure(w http.ResponseWriter, r *http.Request, returnTo string, ids appIDs, err error) error {
	var aerr *gateway.Error
	if !errors.As(err, &aerr) || errors.Is(r.Context().Err(), context.Canceled) {
		return failConnect(w, r, err)
	}
	redirectTo(w, connect.WithOutcome(returnTo, url.Values{
		"zapier_connect": {"error"}, "zapier_app": {ids.connect}, "zapier_error": {aerr.Code},
	}))
	return nil
}

func successParams(rec *connect.Record) url.Values {
	return url.Values{"zapier_connect": {"success"}, "zapier_app": {rec.App}, "zapier_connection_id": {rec.ConnectionID}}
}

// redirectTo answers 302. The Location carries a connect token or a state,
// so it is neither cached nor leaked in a Referer.
func redirectTo(w http.ResponseWriter, location string) {
	h := w.Header()
	h.Set("Location", location)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusFound)
}

const themeRule = "theme must be 1-64 letters, digits, _ or - (a Connect theme name)"

// validTheme accepts a Connect theme name.
func validTheme(t string) bool {
	if len(t) > 64 {
		return false
	}
	return validAppName(t) && !strings.ContainsAny(t, ".@:")
}
