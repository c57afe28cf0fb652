package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/jwks"
)

// Emergency key revocation. POST /zapier/keys/revoke?kid=… removes a leaked
// signing key from the JWKS at once (jwks.Manager.Revoke) and purges every
// cached access token, here and in the Redis tier. Every gateway sharing the
// storage sees the revocation on its next read of the key set (key_sync) and
// purges too (keysRevoked). A token a gateway obtained with the leaked key
// while it had not yet seen the revocation is purged by a second pass once
// every gateway must have seen it (revokeSweepDelay).

// handleRevoke is the admin route.
func (a *adminAPI) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r, http.MethodPost)
	}
	app, err := a.app()
	if err != nil {
		return err
	}
	kid := r.URL.Query().Get("kid")
	if kid == "" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("give the kid of the key to revoke: ?kid=… (see GET /zapier/status)")}
	}
	if err := app.ensureKeys(r.Context()); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	active, err := app.keys.Revoke(r.Context(), kid) // OnRevoke → keysRevoked purges the tokens
	switch {
	case errors.Is(err, jwks.ErrUnknownKey):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no published key has kid %q (already revoked or deleted?)", kid)}
	case err != nil:
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("revoking key: %w", err)}
	}
	return writeJSON(w, http.StatusOK, struct {
		Revoked string       `json:"revoked"`
		Active  jwks.KeyInfo `json:"active"`
	}{kid, active})
}

// revokeSweepDelay is how long after seeing a revocation a gateway purges
// once more: every gateway sharing the storage has re-read the key set
// within key_sync, and an exchange it started before ends within the
// token fetch timeout.
func (a *App) revokeSweepDelay() time.Duration {
	return time.Duration(a.KeySync) + 3*time.Duration(a.Exchange.Timeout) + 5*time.Second
}

// keysRevoked is the key manager's OnRevoke hook: a key was revoked here or
// by another gateway sharing the storage.
func (a *App) keysRevoked(kids []string) {
	n := a.tokens.Revoked(a.ctx) // exchanges in flight re-exchange
	a.logger.Warn("signing key revoked: removed from the JWKS; purged every cached access token",
		zap.Strings("kids", kids), zap.Int("purged", n))
	a.emit(eventKeyRevoked, func() map[string]any { return map[string]any{"kids": kids} })
	ctx := a.ctx
	go func() {
		t := time.NewTimer(a.revokeSweepDelay())
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.tokens.Revoked(context.WithoutCancel(ctx))
	}()
}
