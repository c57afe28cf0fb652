package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
)

// storedForgetTimeout bounds deleting a disconnected connection's stored
// actions at Zapier.
const storedForgetTimeout = 30 * time.Second

// storedActions is the users' stored actions (zapier_actions' run_via) in
// storage, with the app's Zapier caller.
func (a *App) storedActions(storage certmagic.Storage) *actions.StoredStore {
	return &actions.StoredStore{Storage: storage, Names: gateway.NewNamespace(newStateKeeper(a.ctx, storage, 0)), Caller: a.caller()}
}

// withStoredActionCleanup makes st delete the stored actions of every
// connection it removes (a disconnect, or the health sweep finding it gone):
// at Zapier too unless keepUpstream, as the connection itself.
func (a *App) withStoredActionCleanup(st *connect.Store, storage certmagic.Storage, keepUpstream bool, logger *zap.Logger) *connect.Store {
	prev, stored := st.OnRemoved, a.storedActions(storage)
	st.OnRemoved = func(tenant, user string, rec connect.Record) {
		if prev != nil {
			prev(tenant, user, rec)
		}
		ctx, cancel := context.WithTimeout(context.Background(), storedForgetTimeout)
		defer cancel()
		if _, err := stored.ForgetConnection(ctx, gateway.Identity{Tenant: tenant, User: user}, rec.ConnectionID, keepUpstream); err != nil {
			logger.Warn("deleting a disconnected connection's stored actions", zap.String("identity", gateway.LogHash(tenant, user)), zap.Error(err))
		}
	}
	return st
}
