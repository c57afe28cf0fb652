package mcpgateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrAuthorizationRequired means the user has to (re-)authorize the app:
// there is no record, or its tokens were refused and cannot be refreshed.
var ErrAuthorizationRequired = errors.New("mcpgateway: MCP authorization required")

// RefreshFunc trades rec's refresh token for new tokens. It returns the
// updated record, or an error wrapping ErrAuthorizationRequired when Zapier
// refused the refresh token (any other error is transient).
type RefreshFunc func(ctx context.Context, id Identity, rec Record) (Record, error)

// Tokens hands out a user's MCP token for an app and refreshes it at most
// once at a time per (tenant, user, app): of many calls that found the same
// token refused, one refreshes and the others use its result. When the
// store's KV is a Locker (Caddy storage is), that holds across every
// gateway sharing the storage: Zapier rotates refresh tokens, so a second
// refresh with the same refresh token would be refused and the user sent
// to authorize again.
type Tokens struct {
	store   *Store
	refresh RefreshFunc
	now     func() time.Time
	// Margin: a token expiring within it is refreshed before use.
	margin time.Duration

	cache *recordCache // nil: every use reads the storage (EnableCache)

	mu    sync.Mutex
	locks map[string]*keyLock
	stats struct {
		sync.Mutex
		refreshes int
	}
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

// NewTokens returns a Tokens over store. now is time.Now when nil.
func NewTokens(store *Store, refresh RefreshFunc, margin time.Duration, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{store: store, refresh: refresh, now: now, margin: margin, locks: map[string]*keyLock{}}
}

// Store is the record store.
func (t *Tokens) Store() *Store { return t.store }

// Refreshes counts refresh calls made (for tests and status).
func (t *Tokens) Refreshes() int {
	t.stats.Lock()
	defer t.stats.Unlock()
	return t.stats.refreshes
}

func (t *Tokens) usable(rec *Record) bool {
	return rec.Expiry.IsZero() || t.now().Add(t.margin).Before(rec.Expiry)
}

// Current returns the record to use now, refreshing an expired token
// first. The record must not be modified (it may be the cache's).
func (t *Tokens) Current(ctx context.Context, id Identity, app string) (*Record, error) {
	var gen uint64
	if c := t.cache; c != nil {
		var rec *Record
		if rec, gen = c.get(cacheKey{id, app}, t.now()); rec != nil && t.usable(rec) {
			return rec, nil
		}
		c.loads.Add(1)
	}
	rec, err := t.store.Get(ctx, id, app)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrAuthorizationRequired
	}
	if rec.Owner == "" && t.store.Owners != nil {
		t.migrateOwner(ctx, id, app)
	} else if t.cache != nil {
		t.cache.putIfCurrent(cacheKey{id, app}, t.store.storageKey(id, app), rec, gen, t.now())
	}
	if t.usable(rec) {
		return rec, nil
	}
	return t.Refresh(ctx, id, app, rec.AccessToken)
}

// migrateOwner gives a record from before sealed owners its owner, under
// the record's lock (a refresh writing at the same time is not undone);
// best effort: the next use tries again.
func (t *Tokens) migrateOwner(ctx context.Context, id Identity, app string) {
	unlock, err := t.lock(ctx, id, app)
	if err != nil {
		return
	}
	defer unlock()
	if rec, err := t.store.Get(ctx, id, app); err == nil && rec != nil && rec.Owner == "" {
		if t.store.Put(ctx, id, rec) == nil {
			t.changed(ctx, id, app, rec)
		}
	}
}

// Refresh replaces the token stale that Zapier refused (or that expired).
// Under the key's lock it reloads the record: when another call (here or
// on another gateway) already replaced stale, that result is used without
// calling Zapier again.
func (t *Tokens) Refresh(ctx context.Context, id Identity, app, stale string) (*Record, error) {
	unlock, err := t.lock(ctx, id, app)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := t.store.Get(ctx, id, app)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		if t.cache != nil { // forgotten (perhaps on another gateway): the copy goes too
			t.cache.set(cacheKey{id, app}, t.store.storageKey(id, app), nil, t.now())
		}
		return nil, ErrAuthorizationRequired
	}
	if rec.AccessToken != stale && t.usable(rec) {
		if t.cache != nil { // refreshed meanwhile (perhaps by another gateway)
			t.cache.set(cacheKey{id, app}, t.store.storageKey(id, app), rec, t.now())
		}
		return rec, nil
	}
	if rec.RefreshToken == "" {
		_, _ = t.store.Delete(context.WithoutCancel(ctx), id, app)
		t.changed(ctx, id, app, nil)
		return nil, ErrAuthorizationRequired
	}
	t.stats.Lock()
	t.stats.refreshes++
	t.stats.Unlock()
	// Not tied to this caller: others wait for the result, and a refresh
	// token Zapier rotated must not be lost to a client that went away.
	// The refresh call bounds itself (the client's per-attempt timeout).
	next, err := t.refresh(context.WithoutCancel(ctx), id, *rec)
	if errors.Is(err, ErrAuthorizationRequired) {
		_, _ = t.store.Delete(context.WithoutCancel(ctx), id, app)
		t.changed(ctx, id, app, nil)
		return nil, ErrAuthorizationRequired
	}
	if err != nil {
		return nil, err
	}
	if next.RefreshToken == "" {
		next.RefreshToken = rec.RefreshToken // not rotated
	}
	next.App, next.Created, next.Updated = rec.App, rec.Created, t.now()
	if err := t.store.Put(context.WithoutCancel(ctx), id, &next); err != nil {
		t.changed(ctx, id, app, nil) // what the storage holds is unknown now
		return nil, err
	}
	t.changed(ctx, id, app, &next)
	return &next, nil
}

// Forget deletes a record under the key's lock.
func (t *Tokens) Forget(ctx context.Context, id Identity, app string) (bool, error) {
	unlock, err := t.lock(ctx, id, app)
	if err != nil {
		return false, err
	}
	defer unlock()
	found, err := t.store.Delete(ctx, id, app)
	// Even when it failed: the record may be gone.
	t.changed(ctx, id, app, nil)
	return found, err
}

// Save stores a newly authorized record under the key's lock.
func (t *Tokens) Save(ctx context.Context, id Identity, rec *Record) error {
	unlock, err := t.lock(ctx, id, rec.App)
	if err != nil {
		return err
	}
	defer unlock()
	if err := t.store.Put(ctx, id, rec); err != nil {
		t.changed(ctx, id, rec.App, nil)
		return err
	}
	saved := *rec // the caller keeps rec
	t.changed(ctx, id, rec.App, &saved)
	return nil
}

// lock takes (id, app)'s lock: in this process, then in the storage when
// it has locks, so one writer at a time changes a record. It gives up
// when ctx ends.
func (t *Tokens) lock(ctx context.Context, id Identity, app string) (func(), error) {
	unlock, err := t.localLock(ctx, t.store.storageKey(id, app))
	if err != nil {
		return nil, err
	}
	locker, ok := t.store.kv.(Locker)
	if !ok {
		return unlock, nil
	}
	name := t.store.lockName(id, app)
	if err := locker.Lock(ctx, name); err != nil {
		unlock()
		return nil, fmt.Errorf("locking the MCP token record: %w", err)
	}
	return func() {
		// Even when ctx ended: a lock left behind would stall the other
		// gateways until the storage expires it.
		_ = locker.Unlock(context.WithoutCancel(ctx), name)
		unlock()
	}, nil
}

// localLock takes the per-key lock in this process, so the calls that
// wait here do not each poll the storage lock.
func (t *Tokens) localLock(ctx context.Context, k string) (func(), error) {
	t.mu.Lock()
	l := t.locks[k]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		t.locks[k] = l
	}
	l.refs++
	t.mu.Unlock()
	release := func() {
		t.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(t.locks, k)
		}
		t.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
