package actions

import (
	"context"
	"sync/atomic"
	"time"
)

// sweeper runs a clean-up of storage records in the background at most once
// per interval per gateway, and never twice at once, so that the requests
// that trigger it never wait for it. (Same as caddymodule's sweeper.)
type sweeper struct {
	lastSweep atomic.Int64 // Unix nanoseconds
	sweeping  atomic.Bool
}

// maybe starts sweep on ctx unless one ran within every of now or is running.
func (s *sweeper) maybe(ctx context.Context, now time.Time, every time.Duration, sweep func(context.Context)) {
	last := s.lastSweep.Load()
	if now.UnixNano()-last < int64(every) || !s.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if !s.sweeping.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.sweeping.Store(false)
		sweep(ctx)
	}()
}
