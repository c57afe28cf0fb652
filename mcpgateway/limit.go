package mcpgateway

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrToolCallLimit is a tools/call over the per-user cap.
var ErrToolCallLimit = errors.New("mcpgateway: the user's tool-call cap is reached")

// LimitError carries when the next call would be allowed.
type LimitError struct{ RetryAfter time.Duration }

func (e *LimitError) Error() string { return ErrToolCallLimit.Error() }

func (e *LimitError) Unwrap() error { return ErrToolCallLimit }

// SharedWindow takes one of id's perMinute tool calls in a window every
// gateway shares (in Redis): it returns 0 when the call may go, or how
// long until it may.
type SharedWindow func(ctx context.Context, id Identity, perMinute int) (time.Duration, error)

// CallLimiter caps tool calls per identity: a token bucket of PerMinute
// calls, refilled continuously at PerMinute per minute; or, with Shared,
// a window of PerMinute calls per minute shared by every gateway.
type CallLimiter struct {
	PerMinute int
	Now       func() time.Time // default time.Now
	// Shared, if set, decides; while it fails (Redis away) this gateway's
	// own bucket does, so calls go on at no more than the cap per gateway.
	Shared SharedWindow
	// Quota, if set, is asked after the cap let a call through (the
	// tenant's task quota reserves the call's tasks); its error refuses
	// the call and is answered as it is (a *gateway.Error).
	Quota func(ctx context.Context, id Identity) error

	mu      sync.Mutex
	buckets map[Identity]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

const maxLimiterEntries = 100000

func (l *CallLimiter) active() bool { return l != nil && (l.PerMinute > 0 || l.Quota != nil) }

// Allow takes one call for id, or returns a *LimitError (or Quota's
// refusal).
func (l *CallLimiter) Allow(ctx context.Context, id Identity) error {
	if l == nil {
		return nil
	}
	if err := l.allowRate(ctx, id); err != nil {
		return err
	}
	if l.Quota != nil {
		return l.Quota(ctx, id)
	}
	return nil
}

func (l *CallLimiter) allowRate(ctx context.Context, id Identity) error {
	if l.PerMinute <= 0 {
		return nil
	}
	if l.Shared != nil {
		wait, err := l.Shared(ctx, id, l.PerMinute)
		if err == nil && wait > 0 {
			return &LimitError{RetryAfter: wait}
		}
		if err == nil {
			return nil
		}
	}
	now := time.Now()
	if l.Now != nil {
		now = l.Now()
	}
	rate := float64(l.PerMinute) / float64(time.Minute)
	capacity := float64(l.PerMinute)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[Identity]*bucket{}
	}
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= maxLimiterEntries {
			l.pruneLocked(now, rate, capacity)
		}
		b = &bucket{tokens: capacity, at: now}
		l.buckets[id] = b
	}
	b.tokens = min(capacity, b.tokens+float64(now.Sub(b.at))*rate)
	b.at = now
	if b.tokens < 1 {
		return &LimitError{RetryAfter: time.Duration((1 - b.tokens) / rate)}
	}
	b.tokens--
	return nil
}

// pruneLocked drops the buckets that are full again (their users are
// idle): a new bucket starts full anyway.
func (l *CallLimiter) pruneLocked(now time.Time, rate, capacity float64) {
	for id, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))*rate >= capacity {
			delete(l.buckets, id)
		}
	}
}
