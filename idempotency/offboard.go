package idempotency

import (
	"context"

	"github.com/zapgate/caddy-zapier/gateway"
)

// UserStore is the Idempotency-Key records (they hold action results) as
// offboarding walks them: one user's by the keyed name its records carry,
// a whole tenant's by opening their sealed owners.
type UserStore struct {
	Store *Store
	Names *gateway.Namespace
	// OwnerAAD is what the records' owners were sealed with.
	OwnerAAD []byte
}

// StoreName implements gateway.UserStore.
func (UserStore) StoreName() string { return "idempotency" }

// Forget implements gateway.UserStore.
func (u UserStore) Forget(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
	var name string
	if sc.User != "" {
		var err error
		if name, err = u.Names.Name(ctx, gateway.Identity{Tenant: sc.Tenant, User: sc.User}); err != nil {
			return gateway.StoreReport{}, err
		}
	}
	deleted, failed, err := u.Store.ForgetWhere(ctx, func(subject, sealed string) bool {
		if name != "" && subject == name {
			return true
		}
		if sealed == "" {
			return false
		}
		id, err := u.Names.OpenOwner(ctx, sealed, u.OwnerAAD)
		return err == nil && sc.Matches(id)
	})
	return gateway.StoreReport{Deleted: deleted, Failed: failed}, err
}
