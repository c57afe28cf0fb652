package mcpgateway

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// serveAuthorize starts the MCP authorize flow (zapier-api-2026.md §1.2):
// the partner JWT traded for a connect token bound to the app's MCP
// resource, a single-use state bound to this browser, the user, the app and
// return_to, and a 302 to the app's mcp_authorize_url.
func (h *Handler) serveAuthorize(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	q := r.URL.Query()
	for _, name := range []string{"app", "return_to", "link"} {
		if len(q[name]) > 1 {
			return gateway.Fail(w, r, gateway.BadRequest(name+" must appear at most once"))
		}
	}
	returnTo := q.Get("return_to")
	if returnTo == "" {
		returnTo = "/"
	}
	if err := connect.CheckReturnTo(returnTo, h.cfg.ReturnOrigins); err != nil {
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	ctx := r.Context()
	appName := q.Get("app")
	if q.Has("link") {
		// A link a tool call answered with (elicit.go): this user's, once.
		if h.links == nil {
			return gateway.Fail(w, r, errLinkInvalid)
		}
		rec, err := h.links.spend(ctx, id, q.Get("link"))
		if err != nil {
			var gerr *gateway.Error
			if errors.As(err, &gerr) {
				h.logger.Info("mcp authorize link refused", zap.String("identity", gateway.LogHash(id.Tenant, id.User)))
			}
			return gateway.Fail(w, r, err)
		}
		if appName != "" && appName != rec.App {
			return gateway.Fail(w, r, gateway.BadRequest("app and link name different apps"))
		}
		appName = rec.App
	}
	app, err := h.resolveApp(ctx, id, appName)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	resource := h.resource(app)
	tok, err := h.connectToken(ctx, id, resource)
	if err != nil {
		return h.redirectOutcome(w, r, returnTo, app.ID, err)
	}
	st := &connect.State{App: app.ID, AppUUID: app.ID, Flow: connect.FlowMCP, ReturnTo: returnTo}
	state, nonce, err := h.cfg.States.Issue(ctx, st, id.Tenant, id.User)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	connect.SetFlowCookie(w, r, st.ID, nonce, h.cfg.StateTTL, h.secureCookie(r))
	u, err := url.Parse(app.Links.MCPAuthorizeURL)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	params := u.Query() // keep what Zapier put there
	params.Set("token", tok.AccessToken)
	params.Set("redirect_uri", h.cfg.CallbackURL)
	params.Set("state", state)
	params.Set("response_type", "code")
	if params.Get("resource") == "" {
		params.Set("resource", resource)
	}
	if h.cfg.PKCE {
		params.Set("code_challenge", pkceChallenge(h.pkceVerifier(st.ID)))
		params.Set("code_challenge_method", "S256")
	}
	u.RawQuery = params.Encode()
	connect.Redirect(w, u.String())
	return nil
}

// connectToken mints the partner JWT and trades it directly for an MCP
// connect token (no access token in between), as one limited, counted
// exchange. Connect tokens are never cached.
func (h *Handler) connectToken(ctx context.Context, id gateway.Identity, resource string) (zapierapi.Token, error) {
	tok, err := h.cfg.Exchange(ctx, id, ExchangeConnectToken, func(ctx context.Context) (zapierapi.Token, error) {
		jwt, err := h.cfg.SignJWT(ctx, id)
		if err != nil {
			return zapierapi.Token{}, err
		}
		return h.cfg.Caller.Client.ExchangeJWTForMCPConnect(ctx, jwt, resource, h.cfg.Scopes)
	})
	if err != nil {
		return zapierapi.Token{}, gateway.ExchangeError(err)
	}
	return tok, nil
}

// serveCallback finishes the flow: state checked and spent first, then
// the code exchanged and the tokens stored for (tenant, user, app), then
// back to return_to with the outcome.
func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	p, err := ParseCallback(r.URL.RawQuery)
	if err != nil {
		h.authorized(AuthFailed)
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	ctx := r.Context()
	st, err := h.cfg.States.Open(ctx, r, p.State, connect.FlowMCP, id.Tenant, id.User)
	if err == nil {
		err = h.cfg.States.Spend(ctx, st)
	}
	var serr *connect.StateError
	if errors.As(err, &serr) {
		h.authorized(AuthStateInvalid)
		h.logger.Info("mcp state refused", zap.String("identity", gateway.LogHash(id.Tenant, id.User)), zap.String("reason", serr.Reason))
		return gateway.Fail(w, r, &gateway.Error{Status: http.StatusBadRequest, Code: "connect_state_invalid",
			Message: "the MCP authorize state is invalid (" + serr.Reason + "); start again at authorize"})
	}
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	connect.ClearFlowCookie(w, r, st.ID, h.cfg.StateTTL, h.secureCookie(r))
	if err := connect.CheckReturnTo(st.ReturnTo, h.cfg.ReturnOrigins); err != nil {
		return gateway.Fail(w, r, gateway.BadRequest(err.Error()))
	}
	if p.HasError {
		h.authorized(AuthError)
		params := url.Values{"zapier_mcp": {"error"}, "zapier_app": {st.App}, "zapier_error": {p.ErrCode}}
		if p.ErrDesc != "" {
			params.Set("zapier_error_description", p.ErrDesc)
		}
		connect.Redirect(w, connect.WithOutcome(st.ReturnTo, params))
		return nil
	}
	app, err := h.resolveApp(ctx, id, st.App)
	if err != nil {
		h.authorized(AuthFailed)
		return h.redirectOutcome(w, r, st.ReturnTo, st.App, err)
	}
	resource := h.resource(app)
	var verifier string
	if h.cfg.PKCE {
		verifier = h.pkceVerifier(st.ID)
	}
	var out zapierapi.MCPToken
	_, err = h.cfg.Exchange(ctx, id, ExchangeCode, func(ctx context.Context) (zapierapi.Token, error) {
		var err error
		out, err = h.cfg.Caller.Client.ExchangeMCPCode(ctx, p.Code, h.cfg.CallbackURL, verifier, resource)
		return out.Token, err
	})
	if err != nil {
		h.authorized(AuthFailed)
		return h.redirectOutcome(w, r, st.ReturnTo, app.ID, gateway.ExchangeError(err))
	}
	now := time.Now()
	rec := &Record{App: app.ID, Title: app.Title, ServerURL: app.Links.MCPServerURL, Resource: resource,
		AccessToken: out.AccessToken, RefreshToken: out.RefreshToken, Scope: out.Scope, Expiry: out.Expiry,
		Created: now, Updated: now}
	if err := h.tokens.Save(ctx, identityOf(id), rec); err != nil {
		h.authorized(AuthFailed)
		return gateway.Fail(w, r, err)
	}
	h.agg.Authorized(identityOf(id), app.ID)
	h.authorized(AuthSuccess)
	connect.Redirect(w, connect.WithOutcome(st.ReturnTo, url.Values{"zapier_mcp": {"success"}, "zapier_app": {app.ID}}))
	return nil
}

// redirectOutcome sends the browser back to a validated return_to with the
// error code of err; an internal error stays internal.
func (h *Handler) redirectOutcome(w http.ResponseWriter, r *http.Request, returnTo, app string, err error) error {
	var aerr *gateway.Error
	if !errors.As(err, &aerr) || errors.Is(r.Context().Err(), context.Canceled) {
		return gateway.Fail(w, r, err)
	}
	connect.Redirect(w, connect.WithOutcome(returnTo, url.Values{"zapier_mcp": {"error"}, "zapier_app": {app}, "zapier_error": {aerr.Code}}))
	return nil
}

// secureCookie: as for zapier_connect, with this handler's callback URL.
func (h *Handler) secureCookie(r *http.Request) bool {
	return r.TLS != nil || (len(h.cfg.CallbackURL) > 8 && h.cfg.CallbackURL[:8] == "https://") ||
		(r.Header.Get("X-Forwarded-Proto") == "https" && h.cfg.Policy.Identity.IsTrusted(r.RemoteAddr))
}

// appView is one authorized app as GET apps shows it: never a token.
type appView struct {
	App          string    `json:"app"`
	Title        string    `json:"title,omitempty"`
	AuthorizedAt time.Time `json:"authorized_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	Refreshable  bool      `json:"refreshable"`
}

func (h *Handler) serveApps(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
	recs, err := h.tokens.Store().List(r.Context(), identityOf(id))
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	views := make([]appView, 0, len(recs))
	for _, rec := range recs {
		views = append(views, appView{App: rec.App, Title: rec.Title, AuthorizedAt: rec.Created, UpdatedAt: rec.Updated, Refreshable: rec.RefreshToken != ""})
	}
	gateway.WriteJSON(w, http.StatusOK, struct {
		Data []appView `json:"data"`
	}{views})
	return nil
}

// serveForget forgets the caller's MCP tokens for app (the authorization at
// Zapier stays until it expires or the user revokes it there).
func (h *Handler) serveForget(w http.ResponseWriter, r *http.Request, id gateway.Identity, app string) error {
	if !gateway.ValidAppName(app) {
		return gateway.Fail(w, r, gateway.BadRequest("app must be an app id or key"))
	}
	found, err := h.tokens.Forget(r.Context(), identityOf(id), app)
	if err != nil {
		return gateway.Fail(w, r, err)
	}
	if !found {
		return gateway.Fail(w, r, &gateway.Error{Status: http.StatusNotFound, Code: "mcp_authorization_missing",
			Message: "no MCP authorization stored for app " + app})
	}
	h.agg.Forgotten(identityOf(id), app)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// authorized counts a finished authorize callback.
func (h *Handler) authorized(o AuthOutcome) {
	if h.cfg.Authorized != nil {
		h.cfg.Authorized(o)
	}
}
