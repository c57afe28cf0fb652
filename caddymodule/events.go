package caddymodule

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"

	"github.com/zapgate/caddy-zapier/jwks"
)

// Caddy events the zapier app emits, for ops to hook alerts and automation
// on (e.g. with an events.handlers.* module such as exec). Their origin is
// the zapier app.
const (
	// eventKeyRotated: a new signing key was published (state "next": it
	// signs from activates_at) or made to sign at once (state "active").
	// Data: kid, alg, state, activates_at (RFC 3339). Every gateway sharing
	// the key storage emits it when it sees the new key.
	eventKeyRotated = "zapier_key_rotated"
	// eventBreakerOpened: Zapier kept failing and exchanges now fail fast.
	// Data: retry_after_seconds, until (RFC 3339).
	eventBreakerOpened = "zapier_breaker_opened"
	// eventKeyRevoked: signing keys were revoked (here or by another
	// gateway sharing the storage) and every cached token purged. Data: kids.
	eventKeyRevoked = "zapier_key_revoked"
)

// eventEmitter is the part of the caddyevents app the zapier app uses.
type eventEmitter interface {
	ShouldEmit(name string) bool
	Emit(ctx caddy.Context, name string, data map[string]any) caddy.Event
}

var _ eventEmitter = (*caddyevents.App)(nil)

// appEvents tracks what the zapier app has announced.
type appEvents struct {
	emitter eventEmitter
	mu      sync.Mutex
	kids    map[string]bool // published kids as last seen; nil before the first load
}

// provisionEvents gets the events app and watches the key set, so that
// scheduled rotations, rotations through the admin API and rotations made
// by another gateway sharing the storage are all announced the same way.
func (a *App) provisionEvents(ctx caddy.Context) error {
	evApp, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("getting the events app: %w", err)
	}
	a.events = &appEvents{emitter: evApp.(*caddyevents.App)}
	a.keys.OnChange(a.keysChanged)
	a.keys.OnRevoke(a.keysRevoked) // revoke.go
	return nil
}

// keysChanged runs after every change of the published key set. The first
// load is the baseline, not a rotation.
func (a *App) keysChanged() {
	keys := a.keys.Keys()
	ev := a.events
	ev.mu.Lock()
	baseline := ev.kids == nil
	kids := make(map[string]bool, len(keys))
	var added []jwks.KeyInfo
	for _, k := range keys {
		kids[k.KID] = true
		if !baseline && !ev.kids[k.KID] {
			added = append(added, k)
		}
	}
	ev.kids = kids
	ev.mu.Unlock()
	for _, k := range added {
		a.keyRotated(k)
	}
}

// rotateKeys is the admin API's rotation. A new key is announced by
// keysChanged; promoting the pending next key changes no kid, so it is
// announced here.
func (a *App) rotateKeys(ctx context.Context, immediate bool) (jwks.KeyInfo, error) {
	pending := ""
	for _, k := range a.keys.Keys() {
		if k.State == jwks.StateNext {
			pending = k.KID
		}
	}
	key, err := a.keys.Rotate(ctx, immediate)
	if err == nil && immediate && key.KID == pending {
		a.keyRotated(key)
	}
	return key, err
}

// keyRotated counts, logs and emits one rotation.
func (a *App) keyRotated(k jwks.KeyInfo) {
	a.metrics.Rotations.Inc()
	a.logger.Info("signing key rotated",
		zap.String("kid", k.KID), zap.String("alg", k.Alg), zap.String("state", string(k.State)), zap.Time("activates_at", k.ActivatesAt))
	a.emit(eventKeyRotated, func() map[string]any {
		return map[string]any{
			"kid":          k.KID,
			"alg":          k.Alg,
			"state":        string(k.State),
			"activates_at": k.ActivatesAt.UTC().Format(time.RFC3339),
		}
	})
}

// emitBreakerOpened is the breaker's OnOpen hook: it counts the opening and
// emits zapier_breaker_opened. It does not log (breakerOpened does) and does
// not block the exchange that opened the breaker: event handlers run on
// their own goroutine.
func (a *App) emitBreakerOpened(retryAfter time.Duration) {
	a.metrics.BreakerOpens.Inc()
	until := time.Now().Add(retryAfter).UTC()
	go a.emit(eventBreakerOpened, func() map[string]any {
		return map[string]any{
			"retry_after_seconds": retryAfter.Seconds(),
			"until":               until.Format(time.RFC3339),
		}
	})
}

// emit sends an event from the zapier app; data is built only when
// something listens.
func (a *App) emit(name string, data func() map[string]any) {
	if a.events == nil || !a.events.emitter.ShouldEmit(name) {
		return
	}
	a.events.emitter.Emit(a.ctx, name, data())
}
