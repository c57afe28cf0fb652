package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/version"
	"github.com/zapgate/caddy-zapier/jwks"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/usage"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the zapier routes on Caddy's admin endpoint:
//
//	GET    /zapier/status                     key ids and times, cache size and hit ratio (never a token)
//	POST   /zapier/keys/rotate[?immediate=1]  schedule a next key (or, immediately, replace a compromised one)
//	POST   /zapier/keys/revoke?kid=…          remove a leaked key from the JWKS now and purge every token
//	DELETE /zapier/tokens [{"tenant","user"}]   purge one identity's access token, or all
//	POST   /zapier/forget {"tenant","user"?,"keep_upstream"?}   offboard a user or a tenant (offboard.go)
type adminAPI struct {
	ctx    caddy.Context
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.zapier",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision keeps the context; the app is looked up per request because the
// admin endpoint is provisioned before the apps.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger(a)
	return nil
}

// Routes returns the admin routes.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/zapier/status", Handler: caddy.AdminHandlerFunc(a.handleStatus)},
		{Pattern: "/zapier/keys/rotate", Handler: caddy.AdminHandlerFunc(a.handleRotate)},
		{Pattern: "/zapier/keys/revoke", Handler: caddy.AdminHandlerFunc(a.handleRevoke)}, // revoke.go
		{Pattern: "/zapier/tokens", Handler: caddy.AdminHandlerFunc(a.handleTokens)},
		{Pattern: "/zapier/forget", Handler: caddy.AdminHandlerFunc(a.handleForget)}, // offboard.go
	}
}

func (a *adminAPI) app() (*App, error) {
	app, err := a.ctx.AppIfConfigured("zapier")
	if err != nil {
		if errors.Is(err, caddy.ErrNotConfigured) {
			return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("the zapier app is not configured")}
		}
		return nil, caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return app.(*App), nil
}

func methodNotAllowed(r *http.Request, allowed string) error {
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use %s", r.Method, allowed)}
}

// Status is the body of GET /zapier/status.
type Status struct {
	// Version is caddy-zapier's release (internal/version).
	Version string         `json:"version"`
	Keys    []jwks.KeyInfo `json:"keys"`
	Cache   CacheStatus    `json:"cache"`
	// Breaker guards the token endpoint: closed, open, half_open or
	// cooling_down (after a 429).
	Breaker string `json:"breaker"`
	// APIBreaker guards Zapier's API, in the same states.
	APIBreaker string `json:"api_breaker"`
	// Budget is the request budget in front of the API; absent when off.
	Budget *BudgetStatus `json:"api_budget,omitempty"`
	// Usage is usage counting and the quotas' state; absent when off (usage.go).
	Usage *usage.Status `json:"usage,omitempty"`
}

// CacheStatus describes the access token cache.
type CacheStatus struct {
	Entries  int     `json:"entries"`
	Size     int     `json:"size"`
	HitRatio float64 `json:"hit_ratio"`
}

func (a *adminAPI) handleStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r, http.MethodGet)
	}
	app, err := a.app()
	if err != nil {
		return err
	}
	if err := app.ensureKeys(r.Context()); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	return writeJSON(w, http.StatusOK, Status{
		Version: version.Version,
		Keys:    app.keys.Keys(),
		Cache: CacheStatus{
			Entries:  app.tokens.Cache.Len(),
			Size:     app.Cache.Size,
			HitRatio: app.tokens.HitRatio(),
		},
		Breaker:    app.tokens.Breaker.State(),
		APIBreaker: app.tokens.APIBreaker.State(),
		Budget:     app.budgetStatus(),
		Usage:      app.usageStatus(r.Context()),
	})
}

func (a *adminAPI) handleRotate(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r, http.MethodPost)
	}
	app, err := a.app()
	if err != nil {
		return err
	}
	immediate := r.URL.Query().Get("immediate")
	if immediate != "" && immediate != "1" && immediate != "true" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("immediate must be 1 or true")}
	}
	if err := app.ensureKeys(r.Context()); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	key, err := app.rotateKeys(r.Context(), immediate != "") // counts and emits zapier_key_rotated (events.go)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("rotating keys: %w", err)}
	}
	a.logger.Info("signing key rotation requested", zap.String("next_kid", key.KID), zap.Time("activates_at", key.ActivatesAt), zap.Bool("immediate", immediate != ""))
	return writeJSON(w, http.StatusOK, struct {
		Next jwks.KeyInfo `json:"next"`
	}{key})
}

func (a *adminAPI) handleTokens(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodDelete {
		return methodNotAllowed(r, http.MethodDelete)
	}
	app, err := a.app()
	if err != nil {
		return err
	}
	var req struct {
		Tenant string `json:"tenant"`
		User   string `json:"user"`
	}
	if _, err := decodeAdminIdentity(r, &req); err != nil {
		return err
	}
	tenant, user := req.Tenant, req.User
	switch {
	case tenant == "" && user == "":
		n := app.tokens.Purge(r.Context()) // and the shared tier's (sharedtokens.go)
		a.logger.Info("purged all access tokens", zap.Int("count", n))
		return writeJSON(w, http.StatusOK, map[string]int{"purged": n})
	case tenant == "" || user == "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("give both tenant and user, or neither to purge all")}
	}
	purged := 0
	if app.tokens.Evict(r.Context(), tokencache.Key{Tenant: tenant, User: user}) {
		purged = 1
	}
	a.logger.Info("purged access token", zap.String("identity", gateway.LogHash(tenant, user)), zap.Int("count", purged))
	return writeJSON(w, http.StatusOK, map[string]int{"purged": purged})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
)
