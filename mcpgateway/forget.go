package mcpgateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Offboarding: the MCP authorizations (token records) and the aggregate
// endpoint's sessions are per-user data; these are their gateway.UserStore
// implementations.

// AuthorizationStore forgets MCP token records: one user's by its keyed
// name, a tenant's by the records' sealed owners. The Aggregator, if set,
// loses the forgotten users' sessions and tool lists.
type AuthorizationStore struct {
	Tokens     *Tokens
	Aggregator *Aggregator
	// Unattributed, if set, hears of records a tenant's offboarding could
	// not attribute (written before sealed owners and not used since, or
	// sealed under another key): they may be the tenant's.
	Unattributed func(n int)
}

// StoreName implements gateway.UserStore.
func (AuthorizationStore) StoreName() string { return "mcp_authorizations" }

// Forget implements gateway.UserStore. Nothing upstream: Zapier's MCP
// authorization ends when its tokens expire or the user revokes it.
func (s AuthorizationStore) Forget(ctx context.Context, scope gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	if scope.Tenant == "" {
		return rep, errors.New("mcp_authorizations: no tenant")
	}
	st := s.Tokens.Store()
	var errs []error
	forget := func(id Identity, app string) {
		found, err := s.Tokens.Forget(ctx, id, app)
		if err != nil {
			rep.Failed++
			errs = append(errs, err)
		} else if found {
			rep.Deleted++
		}
	}
	if scope.User != "" {
		id := Identity{Tenant: scope.Tenant, User: scope.User}
		keys, err := st.kv.List(ctx, st.userPrefix(id), false)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("listing MCP token records: %w", err)
		}
		for _, key := range keys {
			forget(id, path.Base(key)) // records of another key too: they are this user's
		}
	} else {
		if st.Owners == nil {
			return rep, errors.New("mcp_authorizations: records carry no owner (no namespace): forget the tenant's users one by one")
		}
		// <prefix>/<subject>/<app>: the users, then their records.
		subjects, err := st.kv.List(ctx, st.prefix, false)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("listing MCP token records: %w", err)
		}
		var keys []string
		for _, subject := range subjects {
			recs, err := st.kv.List(ctx, subject, false)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				rep.Failed++
				errs = append(errs, err)
			}
			keys = append(keys, recs...)
		}
		unattributed := 0
		for _, key := range keys {
			data, err := st.kv.Load(ctx, key)
			if errors.Is(err, fs.ErrNotExist) {
				continue // a directory, or gone meanwhile
			}
			if err != nil {
				rep.Failed++
				errs = append(errs, err)
				continue
			}
			rec, err := st.open(key, data)
			if err != nil || rec.Owner == "" {
				unattributed++
				continue
			}
			owner, err := st.Owners.OpenOwner(ctx, rec.Owner, []byte(key))
			if err != nil {
				unattributed++
				continue
			}
			id := Identity{Tenant: owner.Tenant, User: owner.User}
			if owner.Tenant == scope.Tenant && st.storageKey(id, rec.App) == key {
				forget(id, rec.App)
			}
		}
		if unattributed > 0 && s.Unattributed != nil {
			s.Unattributed(unattributed)
		}
	}
	if s.Aggregator != nil {
		s.Aggregator.forget(scope)
	}
	return rep, errors.Join(errs...)
}

// SessionStore forgets the aggregate endpoint's sessions: the users'
// sessions are closed, with their upstream sessions and tool lists.
type SessionStore struct{ Aggregator *Aggregator }

// StoreName implements gateway.UserStore.
func (SessionStore) StoreName() string { return "mcp_sessions" }

// Forget implements gateway.UserStore.
func (s SessionStore) Forget(ctx context.Context, scope gateway.Scope) (gateway.StoreReport, error) {
	// The shared records first: no gateway restores a session after this.
	shared, err := s.Aggregator.forgetShared(ctx, scope)
	return gateway.StoreReport{Deleted: max(shared, s.Aggregator.forget(scope))}, err
}

// forget closes the sessions of the users scope matches and drops their
// state (upstream sessions, tool list); it counts the sessions closed.
func (a *Aggregator) forget(scope gateway.Scope) int {
	a.mu.Lock()
	var users []*userAgg
	var closed []*aggSession
	for subject, u := range a.users {
		if !scope.Matches(gateway.Identity{Tenant: u.id.Tenant, User: u.id.User}) {
			continue
		}
		users = append(users, u)
		closed = append(closed, u.live...)
		for _, s := range append([]*aggSession(nil), u.live...) {
			a.untrackLocked(s)
		}
		delete(a.users, subject) // a request in progress keeps its own reference
	}
	a.mu.Unlock()
	for _, s := range closed {
		s.u.closeServerSession(s.id, true)
	}
	for _, u := range users {
		u.closeSessions()
	}
	return len(closed)
}
