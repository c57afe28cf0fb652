// Package sweep runs clean-ups of storage records in the background, at
// most once per interval per gateway and never twice at once, so that the
// requests that trigger them never wait for them.
package sweep

import (
	"context"
	"sync/atomic"
	"time"
)

// Sweeper is the zero-value-ready state of one kind of clean-up.
type Sweeper struct {
	lastSweep atomic.Int64 // Unix nanoseconds
	sweeping  atomic.Bool
}

// Maybe starts sweep on ctx unless one started within every of now or is
// still running.
func (s *Sweeper) Maybe(ctx context.Context, now time.Time, every time.Duration, sweep func(context.Context)) {
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
