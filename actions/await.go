package actions

import (
	"cmp"
	"context"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Clock is the time Await reads and waits on.
type Clock interface {
	Now() time.Time
	// Timer fires once after d; stop stops it.
	Timer(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// RealClock is the system clock.
var RealClock Clock = realClock{}

// Backoff is how Await paces its polls.
type Backoff struct {
	// Interval is the first pause before a poll; it doubles up to
	// MaxInterval.
	Interval, MaxInterval time.Duration
	// Queued, when set, is how long requests queue for the request budget
	// now: while others wait for it, a poll waits at least as long.
	Queued func() time.Duration
	// Deferred, when set, reports a poll the budget had no room for, and
	// how long until it has: Await polls again then instead of failing.
	Deferred func(error) (time.Duration, bool)
	// Clock is the time Await uses; nil is RealClock.
	Clock Clock
}

// Earliest is the earlier of a and b.
func Earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Await polls the run with backoff until it ends or the deadline passes. It
// returns the last known state (status "waiting" before any poll answered);
// after a failed poll also the error and, for a 429 or an open breaker, how
// long to wait. Canceling ctx ends it with ctx's error.
func Await(ctx context.Context, runID string, deadline time.Time, poll func(context.Context) (zapierapi.ActionRun, error), b Backoff) (zapierapi.ActionRun, time.Duration, error) {
	clock := b.Clock
	if clock == nil {
		clock = RealClock
	}
	last := zapierapi.ActionRun{ID: runID, Status: "waiting"}
	pause := b.Interval
	for {
		left := deadline.Sub(clock.Now())
		if left <= 0 {
			return last, 0, nil
		}
		// Spend the budget on polls only when it has room: while other
		// requests queue for it, wait at least as long as they would.
		if b.Queued != nil {
			pause = max(pause, b.Queued())
		}
		c, stop := clock.Timer(min(pause, left))
		select {
		case <-ctx.Done():
			stop()
			return last, 0, ctx.Err()
		case <-c:
		}
		pause = min(2*pause, b.MaxInterval)
		run, err := poll(ctx)
		if b.Deferred != nil {
			if d, ok := b.Deferred(err); ok {
				// The budget had no room for this poll within max_wait: poll
				// again when it has, while the caller still waits, rather
				// than give up a run already paid for.
				pause = max(pause, d)
				continue
			}
		}
		if err != nil {
			var retryAfter time.Duration
			if zerr, ok := zapierapi.AsError(err); ok && (zerr.Kind == zapierapi.KindRateLimited || zerr.Kind == zapierapi.KindUnavailable) {
				retryAfter = cmp.Or(zerr.RetryAfter, zapierapi.DefaultRateLimitCooldown)
			}
			return last, retryAfter, err
		}
		last = run
		if run.Done() {
			return run, 0, nil
		}
	}
}
