package triggers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"go.uber.org/zap"
)

// A subscription's drain lock, shared by the gateways on one storage, is a
// lease record (drainLease) with an owner and an expiry, renewed by its
// holder while it drains. The storage's own lock only guards the short
// read-modify-write of that record; it is never held across a delivery.
//
// Why not hold the storage lock for the whole drain: a storage lock can
// outlive a holder that died (was SIGKILLed) while holding it. Caddy's file
// storage (certmagic) keeps a lock file fresh from a goroutine that runs
// until the file disappears, polling every 5s, and that goroutine outlives
// Unlock: a gateway that released the lock less than 5s before another one
// took it keeps refreshing the other one's lock file, and when that one
// dies mid-delivery its lock never goes stale, so nobody drains the
// subscription again. A lease record's expiry is renewed only by its owner.

// drainLease is the record of a drain lock.
type drainLease struct {
	Owner   string    `json:"owner"` // one drain's random token
	Expires time.Time `json:"expires"`
}

// drainLockPoll is how often a drain waiting for the lock looks again.
const drainLockPoll = 250 * time.Millisecond

// lockDrain takes the subscription's drain lock, waiting up to LockWait.
// It returns nil when another drain holds it; otherwise a context for the
// drain, cancelled if the lock is lost (not renewed in time), and the
// function that releases the lock.
func (m *Manager) lockDrain(ctx context.Context, key string) (context.Context, func()) {
	mutex, leaseKey := drainNames(key)
	var tb [16]byte
	_, _ = rand.Read(tb[:])
	token := hex.EncodeToString(tb[:])

	wctx, cancel := context.WithTimeout(ctx, m.cfg.LockWait)
	for {
		ok, err := m.claimDrain(wctx, mutex, leaseKey, token, false)
		if ok {
			break
		}
		if err != nil && wctx.Err() == nil {
			m.cfg.Logger.Debug("taking a trigger drain lock", zap.Error(err))
		}
		if sleep(wctx, min(drainLockPoll, m.cfg.LockWait/4)) != nil {
			cancel()
			return nil, nil
		}
	}
	cancel()

	dctx, lost := context.WithCancel(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := m.cfg.LockTTL / 3
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), every)
			ok, err := m.claimDrain(rctx, mutex, leaseKey, token, true)
			rcancel()
			if !ok && err == nil {
				// Not renewed in time and taken over: stop leasing.
				m.cfg.Logger.Warn("lost a trigger drain lock; another gateway drains the subscription")
				lost()
				return
			}
			if err != nil {
				// Tried again at the next tick; the lease lasts LockTTL.
				m.cfg.Logger.Info("renewing a trigger drain lock", zap.Error(err))
			}
		}
	}()
	return dctx, func() {
		close(stop)
		<-done
		lost()
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.LockWait)
		defer ucancel()
		if err := m.releaseDrain(uctx, mutex, leaseKey, token); err != nil {
			// It expires by itself.
			m.cfg.Logger.Info("releasing a trigger drain lock", zap.Error(err))
		}
	}
}

// drainNames are the storage lock and the lease record of the drain of the
// subscription at key (hashed: keys can make names too long for a lock file).
func drainNames(key string) (mutex, lease string) {
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:16])
	return locksPrefix + "-" + h, drainLeasePrefix + "/" + h
}

// claimDrain takes (renew false: when free or expired) or renews (renew
// true: when still ours) the drain lease for token.
func (m *Manager) claimDrain(ctx context.Context, mutex, leaseKey, token string, renew bool) (bool, error) {
	if err := m.cfg.Storage.Lock(ctx, mutex); err != nil {
		return false, err
	}
	defer func() { _ = m.cfg.Storage.Unlock(context.WithoutCancel(ctx), mutex) }()
	cur, err := loadJSON[drainLease](ctx, m.cfg.Storage, leaseKey)
	if err != nil {
		return false, err
	}
	now := m.cfg.Now()
	mine := cur != nil && cur.Owner == token
	if renew && !mine || !renew && cur != nil && !mine && now.Before(cur.Expires) {
		return false, nil
	}
	if err := storeJSON(ctx, m.cfg.Storage, leaseKey, drainLease{Owner: token, Expires: now.Add(m.cfg.LockTTL)}); err != nil {
		return false, err
	}
	return true, nil
}

// releaseDrain deletes the drain lease if it is still token's.
func (m *Manager) releaseDrain(ctx context.Context, mutex, leaseKey, token string) error {
	if err := m.cfg.Storage.Lock(ctx, mutex); err != nil {
		return err
	}
	defer func() { _ = m.cfg.Storage.Unlock(context.WithoutCancel(ctx), mutex) }()
	cur, err := loadJSON[drainLease](ctx, m.cfg.Storage, leaseKey)
	if err != nil || cur == nil || cur.Owner != token {
		return err
	}
	return m.cfg.Storage.Delete(ctx, leaseKey)
}
