package connect

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

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
	Connection *Record `json:"connection"`
}

// serveToken starts the popup flow: a connect token for
// <connect_url>/to/<app>, a state bound to this browser, and the URL to open.
func (h *Handler) serveToken(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	var req tokenRequest
	if aerr := gateway.DecodeJSON(w, r, &req); aerr != nil {
		return gateway.Fail(w, r, aerr)
	}
	ids, err := h.cfg.Apps(r.Context(), id, req.App)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if req.Theme != "" && !validTheme(req.Theme) {
		return gateway.Fail(w, r, gateway.BadRequest(themeRule))
	}
	ctx := r.Context()
	reconnectID, reused, err := h.plan(ctx, id, ids, req.ReconnectID, req.Reconnect, req.NewAccount)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if reused != nil {
		public := reused.Public() // as GET connections shows it: no owner hash
		gateway.WriteJSON(w, http.StatusOK, reusedResponse{Connection: &public})
		return nil
	}
	tok, err := h.connectToken(ctx, id, ids)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	st := &State{App: ids.Key, AppUUID: ids.UUID, Flow: FlowPopup}
	state, nonce, err := h.cfg.States.Issue(ctx, st, id.Tenant, id.User)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	SetFlowCookie(w, r, st.ID, nonce, h.cfg.StateTTL, h.secureCookie(r))
	extra := url.Values{}
	if reconnectID != "" {
		extra.Set("reconnect_id", reconnectID)
	}
	if req.Theme != "" {
		extra.Set("theme", req.Theme)
	}
	gateway.WriteJSON(w, http.StatusOK, tokenResponse{
		URL:       h.connectURL(ids.Key, tok.AccessToken, extra),
		Token:     tok.AccessToken,
		ExpiresIn: int64(tok.ExpiresIn / time.Second),
		State:     state,
		App:       ids.Key,
	})
	return nil
}

// serveStart starts the redirect flow: 302 to Connect with
// redirect_uri=<callback_url> and a state bound to this browser and to
// return_to. Once return_to is known to be safe, every outcome, including a
// failure, goes back to it.
func (h *Handler) serveStart(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	q := r.URL.Query()
	for _, name := range []string{"app", "return_to", "reconnect_id", "reconnect", "new_account", "theme"} {
		if len(q[name]) > 1 {
			return gateway.Fail(w, r, gateway.BadRequest(name+" must appear at most once"))
		}
	}
	if h.cfg.CallbackURL == "" {
		return gateway.Fail(w, r, &gateway.Error{Status: http.StatusInternalServerError, Code: "connect_not_configured",
			Message: "the redirect flow needs callback_url in the zapier global option"})
	}
	returnTo := q.Get("return_to")
	if returnTo == "" {
		returnTo = "/"
	}
	if err := CheckReturnTo(returnTo, h.cfg.ReturnOrigins); err != nil {
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	ids, err := h.cfg.Apps(r.Context(), id, q.Get("app"))
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	theme := q.Get("theme")
	if theme != "" && !validTheme(theme) {
		return gateway.Fail(w, r, gateway.BadRequest(themeRule))
	}
	reconnectID := q.Get("reconnect_id")
	reconnect := q.Get("reconnect") == "1" || q.Get("reconnect") == "true"
	newAccount := q.Get("new_account") == "1" || q.Get("new_account") == "true"
	ctx := r.Context()
	reconnectID, reused, err := h.plan(ctx, id, ids, reconnectID, reconnect, newAccount)
	if err != nil {
		return h.redirectFailure(w, r, returnTo, ids, err)
	}
	if reused != nil {
		Redirect(w, WithOutcome(returnTo, successParams(reused)))
		return nil
	}
	tok, err := h.connectToken(ctx, id, ids)
	if err != nil {
		return h.redirectFailure(w, r, returnTo, ids, err)
	}
	st := &State{App: ids.Key, AppUUID: ids.UUID, Flow: FlowRedirect, ReturnTo: returnTo}
	state, nonce, err := h.cfg.States.Issue(ctx, st, id.Tenant, id.User)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	SetFlowCookie(w, r, st.ID, nonce, h.cfg.StateTTL, h.secureCookie(r))
	extra := url.Values{"redirect_uri": {h.cfg.CallbackURL}, "state": {state}}
	if reconnectID != "" {
		extra.Set("reconnect_id", reconnectID)
	}
	if theme != "" {
		extra.Set("theme", theme)
	}
	Redirect(w, h.connectURL(ids.Key, tok.AccessToken, extra))
	return nil
}

type completeRequest struct {
	App    string          `json:"app"`
	AuthID json.RawMessage `json:"auth_id"`
	State  string          `json:"state"`
}

// serveComplete finishes the popup flow with the authId Connect posted to
// the page.
func (h *Handler) serveComplete(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	var req completeRequest
	if aerr := gateway.DecodeJSON(w, r, &req); aerr != nil {
		h.completed(FlowPopup, OutcomeFailed)
		return gateway.Fail(w, r, aerr)
	}
	authID, ok := ConnectionIDFromJSON(req.AuthID)
	if !ok {
		h.completed(FlowPopup, OutcomeFailed)
		return gateway.Fail(w, r, gateway.BadRequest("auth_id must be the connection id Connect posted (a string or an integer)"))
	}
	ids, err := h.cfg.Apps(r.Context(), id, req.App)
	if err != nil {
		h.completed(FlowPopup, OutcomeFailed)
		return gateway.Fail(w, r, err)
	}
	st, err := h.takeState(w, r, id, req.State, FlowPopup, func(st *State) error {
		if st.AppUUID != ids.UUID {
			return RefuseState("issued for another app")
		}
		return nil
	})
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	rec, err := h.verifyAndStore(r.Context(), id, gateway.App{Key: st.App, UUID: st.AppUUID}, authID, FlowPopup)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	gateway.WriteJSON(w, http.StatusOK, rec.Public())
	return nil
}

// plan decides how a connect request proceeds: reuse the default stored
// connection when Zapier still reports it valid, re-authorize one
// (explicitly, or because Zapier reports it expired), or create a new one
// (also when another account is asked for).
func (h *Handler) plan(ctx context.Context, id gateway.Identity, ids gateway.App, reconnectID string, reconnect, newAccount bool) (string, *Record, error) {
	if reconnectID != "" {
		if !ValidConnectionID(reconnectID) {
			return "", nil, gateway.BadRequest("reconnect_id is not a connection id")
		}
		return reconnectID, nil, nil
	}
	if newAccount {
		return "", nil, nil
	}
	store := h.cfg.Store
	rec, err := store.Get(ctx, id.Tenant, id.User, ids.UUID)
	if err != nil || rec == nil {
		return "", nil, err
	}
	if reconnect {
		return rec.ConnectionID, nil, nil
	}
	auth, err := LookupConnection(ctx, h.cfg.Caller, id, ids.UUID, rec.ConnectionID)
	switch {
	case err != nil:
		return "", nil, err
	case auth == nil: // gone at Zapier: forget it and connect anew
		_, err := store.Remove(ctx, id.Tenant, id.User, ids.UUID, rec.ConnectionID)
		return "", nil, err
	case auth.IsExpired:
		return rec.ConnectionID, nil, nil
	}
	rec, err = store.Touch(ctx, id.Tenant, id.User, rec, auth.Title)
	return "", rec, err
}

// verifyAndStore checks that the connection id is one of the user's own,
// live authentications for the app, then stores it.
func (h *Handler) verifyAndStore(ctx context.Context, id gateway.Identity, ids gateway.App, authID string, flow Flow) (rec *Record, err error) {
	outcome := OutcomeFailed
	if h.cfg.Trace != nil {
		var end func(Outcome, error)
		ctx, end = h.cfg.Trace(ctx, flow)
		defer func() { end(outcome, err) }()
	}
	defer func() { h.completed(flow, outcome) }()
	auth, err := LookupConnection(ctx, h.cfg.Caller, id, ids.UUID, authID)
	if err != nil {
		return nil, err
	}
	if auth == nil || auth.IsExpired {
		outcome = OutcomeConnectionInvalid
		reason := "not found"
		if auth != nil {
			reason = "expired"
		}
		h.logRefusal("connection refused", id, zap.String("flow", string(flow)), zap.String("app", ids.Key), zap.String("reason", reason))
		return nil, &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
			Message: "the connection is not one of this user's live connections for the app (" + reason + ")"}
	}
	rec, err = h.cfg.Store.Put(ctx, id.Tenant, id.User, Record{
		ConnectionID: authID, App: ids.Key, AppUUID: ids.UUID, Title: auth.Title,
	})
	if err != nil {
		return nil, err
	}
	outcome = OutcomeSuccess
	return rec, nil
}

// LookupConnection finds connID among id's authentications for the app (nil
// when absent), with the user's own access token (the caller retries once
// with a fresh one after a 401). Zapier's failures come back as the
// gateway's errors.
func LookupConnection(ctx context.Context, c *gateway.Caller, id gateway.Identity, appUUID, connID string) (*zapierapi.Authentication, error) {
	var auths []zapierapi.Authentication
	err := c.Call(ctx, id, func(ctx context.Context, access string) (err error) {
		auths, err = c.Client.ListAuthentications(ctx, c.APIURL, access, appUUID)
		return err
	})
	if _, ok := zapierapi.AsError(err); ok {
		return nil, gateway.CallError(err)
	}
	if err != nil {
		return nil, err
	}
	return FindConnection(auths, connID, appUUID), nil
}

// connectToken exchanges the user's access token for a single-use connect
// token bound to <connect_url>/to/<app>. Connect tokens are never cached.
// A rejection may mean the cached access token was revoked, so it is
// evicted and the exchange tried once more with a fresh one.
func (h *Handler) connectToken(ctx context.Context, id gateway.Identity, ids gateway.App) (zapierapi.Token, error) {
	resource := h.connectBase + "/to/" + url.PathEscape(ids.Key)
	tokens, client := h.cfg.Caller.Tokens, h.cfg.Caller.Client
	for attempt := 0; ; attempt++ {
		access, err := tokens.Token(ctx, id)
		if err != nil {
			return zapierapi.Token{}, gateway.ExchangeError(err)
		}
		tok, err := h.cfg.Exchange(ctx, id, func(ctx context.Context) (zapierapi.Token, error) {
			return client.ExchangeConnectToken(ctx, access, resource)
		})
		if err != nil && zapierapi.IsPermanent(err) && attempt == 0 {
			tokens.Evict(id, access)
			continue
		}
		if err != nil {
			return zapierapi.Token{}, gateway.ExchangeError(err)
		}
		return tok, nil
	}
}

// connectURL is <connect_url>/to/<app>?token=…&…
func (h *Handler) connectURL(app, token string, extra url.Values) string {
	q := url.Values{"token": {token}}
	for k, v := range extra {
		q[k] = v
	}
	return h.connectBase + "/to/" + url.PathEscape(app) + "?" + q.Encode()
}

// secureCookie: over HTTPS the nonce cookie is Secure. Behind a TLS
// terminator the gateway sees HTTP, so X-Forwarded-Proto counts when a
// trusted peer sent it, and an https callback_url says the site is HTTPS.
func (h *Handler) secureCookie(r *http.Request) bool {
	return r.TLS != nil ||
		strings.HasPrefix(h.cfg.CallbackURL, "https://") ||
		(strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") && h.cfg.Policy.Identity.IsTrusted(r.RemoteAddr))
}

// redirectFailure sends the browser back to a validated return_to with the
// error code of err. A caller that went away gets nothing; an internal
// error stays internal.
func (h *Handler) redirectFailure(w http.ResponseWriter, r *http.Request, returnTo string, ids gateway.App, err error) error {
	var aerr *gateway.Error
	if !errors.As(err, &aerr) || errors.Is(r.Context().Err(), context.Canceled) {
		return gateway.Fail(w, r, err)
	}
	Redirect(w, WithOutcome(returnTo, url.Values{
		"zapier_connect": {"error"}, "zapier_app": {ids.Key}, "zapier_error": {aerr.Code},
	}))
	return nil
}

func successParams(rec *Record) url.Values {
	return url.Values{"zapier_connect": {"success"}, "zapier_app": {rec.App}, "zapier_connection_id": {rec.ConnectionID}}
}

const themeRule = "theme must be 1-64 letters, digits, _ or - (a Connect theme name)"

// validTheme accepts a Connect theme name: 1-64 letters, digits, _ or -.
func validTheme(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
