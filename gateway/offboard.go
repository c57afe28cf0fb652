package gateway

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Scope is whom offboarding forgets: one user of a tenant, or the whole
// tenant when User is empty.
type Scope struct {
	Tenant string
	User   string
	// KeepUpstream leaves what the users hold at Zapier (authentications,
	// trigger inboxes, stored actions) and forgets only the gateway's own
	// records of it.
	KeepUpstream bool
	// Known are identities of the scope found before any store forgot
	// anything (a tenant's users, from its connections), for stores that
	// name users only by keyed hashes and cannot find a tenant's users.
	Known []Identity
}

// Matches reports whether id is inside the scope.
func (s Scope) Matches(id Identity) bool {
	return id.Tenant == s.Tenant && (s.User == "" || id.User == s.User)
}

// StoreReport is what one store forgot.
type StoreReport struct {
	Store string `json:"store"`
	// Deleted counts the records (or entries) the store deleted.
	Deleted int `json:"deleted"`
	// Upstream counts what was deleted at Zapier on the way.
	Upstream int `json:"upstream_deleted,omitempty"`
	// Failed counts what could not be deleted; running offboarding again
	// retries it.
	Failed int    `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
	// Items details what was dealt with, when the store says (the
	// connections store lists each connection's outcome).
	Items any `json:"items,omitempty"`
}

// UserStore is a store that holds per-user data. Every such store
// registers with the Registry, so offboarding reaches it; the test that
// drives every capability for one user and then looks for anything of that
// user left in storage fails for a store that does not.
type UserStore interface {
	// StoreName names the store in the report ("connections",
	// "mcp_authorizations", …); unique in a registry.
	StoreName() string
	// Forget deletes what the store holds for the scope. It is idempotent:
	// a partial failure is counted in Failed (and returned), and running it
	// again finishes the job.
	Forget(ctx context.Context, s Scope) (StoreReport, error)
}

// Phase orders the stores: what must be deleted at Zapier goes while the
// users' access tokens still exist, tokens go last.
type Phase int

const (
	// PhaseUpstream stores delete something at Zapier with the user's token.
	PhaseUpstream Phase = iota
	// PhaseLocal stores only delete records of their own.
	PhaseLocal
	// PhaseTokens is the token caches, after everything that needed them.
	PhaseTokens
)

// Registry is the list of per-user stores offboarding walks.
type Registry struct {
	mu     sync.Mutex
	stores []registered
}

type registered struct {
	store UserStore
	phase Phase
	seq   int
}

// Register adds a store; registering a second store with a name already
// taken replaces it (a config reload provisions its stores again).
func (r *Registry) Register(phase Phase, s UserStore) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, reg := range r.stores {
		if reg.store.StoreName() == s.StoreName() {
			r.stores[i] = registered{store: s, phase: phase, seq: reg.seq}
			return
		}
	}
	r.stores = append(r.stores, registered{store: s, phase: phase, seq: len(r.stores)})
}

// Names lists the registered stores in the order Forget visits them.
func (r *Registry) Names() []string {
	var out []string
	for _, reg := range r.ordered() {
		out = append(out, reg.store.StoreName())
	}
	return out
}

func (r *Registry) ordered() []registered {
	r.mu.Lock()
	out := append([]registered(nil), r.stores...)
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].phase != out[j].phase {
			return out[i].phase < out[j].phase
		}
		return out[i].seq < out[j].seq
	})
	return out
}

// ForgetReport is offboarding's answer: each store with what it deleted.
type ForgetReport struct {
	Tenant string        `json:"tenant"`
	User   string        `json:"user,omitempty"`
	Stores []StoreReport `json:"stores"`
	// Complete is true when every store finished: running it again would
	// find nothing to do.
	Complete bool `json:"complete"`
}

// Forget walks every registered store for the scope. A store's failure is
// reported and does not stop the others; the report is complete only when
// none failed.
func (r *Registry) Forget(ctx context.Context, s Scope) ForgetReport {
	rep := ForgetReport{Tenant: s.Tenant, User: s.User, Complete: true, Stores: []StoreReport{}}
	for _, reg := range r.ordered() {
		sr, err := reg.store.Forget(ctx, s)
		sr.Store = reg.store.StoreName()
		if err != nil {
			rep.Complete = false
			if sr.Error == "" {
				sr.Error = err.Error()
			}
			if sr.Failed == 0 {
				sr.Failed = 1
			}
		} else if sr.Failed > 0 {
			rep.Complete = false
		}
		rep.Stores = append(rep.Stores, sr)
	}
	return rep
}

// StoreFunc adapts a name and a function to UserStore.
type StoreFunc struct {
	Name string
	Fn   func(ctx context.Context, s Scope) (StoreReport, error)
}

// StoreName returns f.Name.
func (f StoreFunc) StoreName() string { return f.Name }

// Forget calls f.Fn.
func (f StoreFunc) Forget(ctx context.Context, s Scope) (StoreReport, error) {
	if f.Fn == nil {
		return StoreReport{}, fmt.Errorf("store %s: no forget function", f.Name)
	}
	return f.Fn(ctx, s)
}
