package triggers

import (
	"context"
	"errors"
	"fmt"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Offboarding: the manager's per-user data as gateway.UserStores.
//
//   - SubscriptionStore: the subscriptions, each with its Trigger Inbox at
//     Zapier (deleted with the user's token unless Scope.KeepUpstream), its
//     watcher and drain (stopped) and its drain lease. A failed inbox
//     delete keeps the record and is counted, so running again finishes.
//   - DeadLetterStore: the dead letters (events never accepted, held for
//     replay) of the scope's users.
//
// One user is found by keyed name, a whole tenant by the sealed owners.

// SubscriptionStore returns the subscriptions as a gateway.UserStore,
// named "trigger_subscriptions"; register it in gateway.PhaseUpstream.
func (m *Manager) SubscriptionStore() gateway.UserStore {
	return gateway.StoreFunc{Name: "trigger_subscriptions", Fn: m.forgetSubscriptions}
}

// DeadLetterStore returns the dead letters as a gateway.UserStore, named
// "trigger_dead_letters"; register it in gateway.PhaseLocal.
func (m *Manager) DeadLetterStore() gateway.UserStore {
	return gateway.StoreFunc{Name: "trigger_dead_letters", Fn: m.forgetDeadLetters}
}

func (m *Manager) forgetSubscriptions(ctx context.Context, s gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	if s.Tenant == "" {
		return rep, errors.New("triggers: offboarding needs a tenant")
	}
	var subs map[string]Record
	var err error
	if s.User != "" {
		subs, err = m.userSubs(ctx, Identity{Tenant: s.Tenant, User: s.User})
	} else {
		subs, _, err = m.listSubs(ctx, subsPrefix) // sealed owners tell the tenant's
	}
	if err != nil {
		return rep, err
	}
	var errs []error
	for key, rec := range subs {
		if !s.Matches(gwID(rec.Identity())) {
			continue
		}
		if !s.KeepUpstream && rec.Status != StatusGone {
			if err := m.cfg.API.Delete(ctx, rec.Identity(), rec.InboxID); err != nil {
				rep.Failed++
				errs = append(errs, fmt.Errorf("deleting the inbox of subscription %s at Zapier: %w", rec.Name, err))
				continue // kept: running again retries
			}
			rep.Upstream++
		}
		if err := m.forgetSub(ctx, key, rec); err != nil {
			rep.Failed++
			errs = append(errs, err)
			continue
		}
		rep.Deleted++
	}
	return rep, errors.Join(errs...)
}

// forgetSub stops the subscription's watcher and drains and deletes its
// record and drain lease.
func (m *Manager) forgetSub(ctx context.Context, key string, rec Record) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	if st := m.subs[key]; st != nil {
		delete(m.byInbox, st.rec.InboxID)
	}
	delete(m.subs, key)
	m.unwatchLocked(key)
	m.mu.Unlock()
	if err := m.cfg.Storage.Delete(ctx, key); err != nil && !isNotExist(err) {
		return fmt.Errorf("deleting subscription %s: %w", rec.Name, err)
	}
	_, lease := drainNames(key)
	if err := m.cfg.Storage.Delete(ctx, lease); err != nil && !isNotExist(err) {
		return fmt.Errorf("deleting the drain lease of subscription %s: %w", rec.Name, err)
	}
	return nil
}

func (m *Manager) forgetDeadLetters(ctx context.Context, s gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	if s.Tenant == "" {
		return rep, errors.New("triggers: offboarding needs a tenant")
	}
	dls, err := m.listDead(ctx)
	if err != nil {
		return rep, err
	}
	var errs []error
	for key, dl := range dls {
		if !s.Matches(gateway.Identity{Tenant: dl.Tenant, User: dl.User}) {
			continue
		}
		if err := m.cfg.Storage.Delete(ctx, key); err != nil && !isNotExist(err) {
			rep.Failed++
			errs = append(errs, fmt.Errorf("deleting dead letter %s: %w", dl.ID, err))
			continue
		}
		rep.Deleted++
	}
	return rep, errors.Join(errs...)
}
