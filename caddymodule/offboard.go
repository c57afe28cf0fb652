package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
)

// Offboarding (admin API POST /zapier/forget, `caddy zapier forget`) walks
// the registry of per-user stores (gateway.Registry): every handler
// registers the stores it keeps per-user data in; the App registers the
// connections, the connect states and the token caches.

// eventIdentityForgotten: a user or a tenant was offboarded. Data:
// identity (keyed hash, as in logs; of the tenant alone for a tenant),
// scope (user or tenant), connections, failed, complete.
const eventIdentityForgotten = "zapier_identity_forgotten"

// forgetRequest is POST /zapier/forget's body: the identity travels in the
// body, so Caddy's admin log (which writes the URI) never holds it.
type forgetRequest struct {
	Tenant       string `json:"tenant"`
	User         string `json:"user,omitempty"`
	KeepUpstream bool   `json:"keep_upstream,omitempty"`
}

// forgetReport is POST /zapier/forget's answer: each store with what it
// deleted, and the connections' outcomes and the totals as before.
type forgetReport struct {
	gateway.ForgetReport
	Connections  []connect.ConnectionOutcome `json:"connections"`
	Failed       int                         `json:"failed"`
	TokensPurged int                         `json:"tokens_purged"`
	PendingFlows int                         `json:"pending_flows_forgotten"`
	Runs         int                         `json:"runs_forgotten"`
}

// decodeAdminIdentity reads an admin request's JSON body naming an identity
// into dst, reporting false for a request without a body, and refuses an
// identity in the query (Caddy's admin log writes the URI).
func decodeAdminIdentity(r *http.Request, dst any) (bool, error) {
	if r.URL.RawQuery != "" {
		return false, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("send tenant and user in a JSON body, not in the query (Caddy's admin log writes the query)")}
	}
	if r.Body == nil || r.ContentLength == 0 {
		return false, nil
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return false, caddy.APIError{HTTPStatus: http.StatusUnsupportedMediaType, Err: errors.New("the body must be JSON (Content-Type: application/json)")}
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("the body must be a JSON object: %v", err)}
	}
	return true, nil
}

func (a *adminAPI) handleForget(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r, http.MethodPost)
	}
	app, err := a.app()
	if err != nil {
		return err
	}
	var req forgetRequest
	if _, err := decodeAdminIdentity(r, &req); err != nil {
		return err
	}
	if !gateway.ValidIdentity(req.Tenant) || (req.User != "" && !gateway.ValidIdentity(req.User)) {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("give tenant, and user to offboard only that user (1-256 printable bytes each)")}
	}
	rep, err := app.forget(r.Context(), gateway.Scope{Tenant: req.Tenant, User: req.User, KeepUpstream: req.KeepUpstream})
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	scope := "user"
	if req.User == "" {
		scope = "tenant"
	}
	a.logger.Info("offboarded", zap.String("scope", scope), zap.String("identity", gateway.LogHash(req.Tenant, req.User)),
		zap.Int("connections", len(rep.Connections)), zap.Int("failed", rep.Failed), zap.Bool("complete", rep.Complete))
	app.emit(eventIdentityForgotten, func() map[string]any {
		return map[string]any{"identity": gateway.LogHash(req.Tenant, req.User), "scope": scope,
			"connections": len(rep.Connections), "failed": rep.Failed, "complete": rep.Complete}
	})
	status := http.StatusOK
	if !rep.Complete {
		status = http.StatusBadGateway // run it again to finish
	}
	return writeJSON(w, status, rep)
}

// forget walks every registered store for the scope. A tenant's users are
// listed from its connections first, for the stores that name users only by
// keyed hashes (the token caches).
func (a *App) forget(ctx context.Context, sc gateway.Scope) (forgetReport, error) {
	g, _ := a.offboarding()
	known, err := connect.Owners(ctx, g, sc)
	if err != nil {
		return forgetReport{}, err
	}
	sc.Known = known
	rep := forgetReport{ForgetReport: a.userStores.Forget(ctx, sc), Connections: []connect.ConnectionOutcome{}}
	for _, s := range rep.Stores {
		rep.Failed += s.Failed
		switch s.Store {
		case "connections":
			if outs, ok := s.Items.([]connect.ConnectionOutcome); ok {
				rep.Connections = outs
			}
		case "tokens":
			rep.TokensPurged = s.Deleted
		case "connect_states":
			rep.PendingFlows = s.Deleted
		case "runs":
			rep.Runs = s.Deleted
		}
	}
	return rep, nil
}

// offboarding is connect's offboarding gateway over this config's storage
// and Zapier caller, and the connect states of the storage.
func (a *App) offboarding() (connect.StoreGateway, *stateKeeper) {
	s := a.ctx.Storage()
	return connect.StoreGateway{Store: newConnectionStore(s), Caller: a.caller()}, newStateKeeper(a.ctx, s, connect.DefaultStateTTL)
}

// registerCoreStores registers the stores the App itself keeps per-user
// data in: the connections (with their authentications at Zapier), the
// connect states (open flows), and the token caches (here, in Redis, and on
// the other gateways through the forget log), last.
func (a *App) registerCoreStores() {
	a.registerUserStore(gateway.PhaseUpstream, gateway.StoreFunc{Name: "connections", Fn: func(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
		g, _ := a.offboarding()
		return connect.OffboardStore{G: g}.Forget(ctx, sc)
	}})
	a.registerUserStore(gateway.PhaseLocal, gateway.StoreFunc{Name: "connect_states", Fn: func(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
		_, states := a.offboarding()
		n, err := states.Forget(ctx, sc.Tenant, sc.User)
		return gateway.StoreReport{Deleted: n}, err
	}})
	a.registerUserStore(gateway.PhaseLocal, gateway.StoreFunc{Name: "runs", Fn: func(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
		_, states := a.offboarding()
		n, err := actions.ForgetRuns(ctx, a.ctx.Storage(), states, sc.Known)
		return gateway.StoreReport{Deleted: n}, err
	}})
	a.registerUserStore(gateway.PhaseTokens, gateway.StoreFunc{Name: "tokens", Fn: a.forgetTokens})
}

// forgetTokens purges the scope's cached access tokens: here and in Redis
// at once, on the other gateways through the forget log.
func (a *App) forgetTokens(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	ids := sc.Known
	if sc.User != "" && len(ids) == 0 {
		ids = []gateway.Identity{{Tenant: sc.Tenant, User: sc.User}}
	}
	for _, id := range ids {
		if a.tokens.Evict(ctx, id) {
			rep.Deleted++
		}
	}
	entry := gateway.ForgetEntry{Tenant: sc.Tenant}
	if sc.User == "" {
		entry.All = true
		rep.Deleted += a.tokens.Cache.EvictTenant(sc.Tenant)
	}
	for _, id := range ids {
		entry.Users = append(entry.Users, id.User)
	}
	_, states := a.offboarding()
	return rep, a.tokens.Forgets.Append(ctx, a.ctx.Storage(), states, entry)
}

// applyForgetLog evicts from this gateway's cache the tokens of the
// offboardings other gateways logged (gateway.ForgetLog). It runs on every
// key_sync tick (keysync.go).
func (a *App) applyForgetLog(ctx context.Context) error {
	storage := a.ctx.Storage()
	pc := a.tokens
	return pc.Forgets.Apply(ctx, storage, newStateKeeper(ctx, storage, 0), func(e gateway.ForgetEntry) {
		n := 0
		if e.All {
			n += pc.Cache.EvictTenant(e.Tenant)
		}
		for _, u := range e.Users {
			if pc.EvictLocal(tokencache.Key{Tenant: e.Tenant, User: u}) { // with its Actions token (claims.go)
				n++
			}
		}
		a.logger.Info("applied an offboarding from the forget log", zap.String("identity", gateway.LogHash(e.Tenant, "")), zap.Int("tokens_purged", n))
	})
}
