package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// syncKeys re-reads the key set (and the forget log of offboardings) from
// storage every key_sync until ctx ends,
// so a rotation made by another gateway sharing the storage is published
// here within key_sync. It reads without the storage lock: with several
// gateways polling, a locked read would queue behind the others (the
// file_system storage polls a held lock once a second) and stretch the
// bound. Rotation and pruning stay with the key manager's Run, under the
// lock.
func (a *App) syncKeys(ctx context.Context) {
	t := time.NewTicker(time.Duration(a.KeySync))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.keys.Sync(ctx); err != nil && ctx.Err() == nil {
			a.logger.Error("re-reading signing keys from storage", zap.Error(err))
		}
		if err := a.applyForgetLog(ctx); err != nil && ctx.Err() == nil { // offboard.go
			a.logger.Error("applying the forget log", zap.Error(err))
		}
	}
}
