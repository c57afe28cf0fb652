package zapierapi

import (
	"errors"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var (
	errTransient = &Error{Kind: KindFailed, StatusCode: 503}
	errRejected  = &Error{Kind: KindRejected, StatusCode: 400}
)

func mustAllow(t *testing.T, b *Breaker) {
	t.Helper()
	if err := b.Before(); err != nil {
		t.Fatalf("Before() = %v, want allowed (state %s)", err, b.State())
	}
}

func mustRefuse(t *testing.T, b *Breaker, wantRetry time.Duration) {
	t.Helper()
	err := b.Before()
	zerr, ok := AsError(err)
	if !ok || zerr.Kind != KindUnavailable {
		t.Fatalf("Before() = %v, want KindUnavailable", err)
	}
	if zerr.RetryAfter != wantRetry {
		t.Fatalf("RetryAfter = %s, want %s", zerr.RetryAfter, wantRetry)
	}
	if IsPermanent(err) {
		t.Fatal("an open breaker must not be negative-cached")
	}
}

func TestBreakerOpensAfterConsecutiveTransientFailuresAndRecovers(t *testing.T) {
	clk := &testClock{now: time.Unix(1e9, 0)}
	var opened []time.Duration
	b := NewBreaker(BreakerConfig{Threshold: 3, Open: 2 * time.Second, MaxOpen: 5 * time.Second, Now: clk.Now,
		OnOpen: func(d time.Duration) { opened = append(opened, d) }})

	for range 2 {
		mustAllow(t, b)
		b.After(errTransient)
	}
	mustAllow(t, b)
	b.After(nil) // a success resets the count
	for range 3 {
		mustAllow(t, b)
		b.After(errTransient)
	}
	if b.State() != "open" || len(opened) != 1 || opened[0] != 2*time.Second {
		t.Fatalf("state %s, opened %v", b.State(), opened)
	}
	mustRefuse(t, b, 2*time.Second)
	clk.Advance(1500 * time.Millisecond)
	mustRefuse(t, b, 500*time.Millisecond)

	// Half-open: exactly one probe.
	clk.Advance(time.Second)
	if b.State() != "half_open" {
		t.Fatalf("state %s, want half_open", b.State())
	}
	mustAllow(t, b)
	mustRefuse(t, b, time.Second)
	b.After(errTransient) // failed probe: open twice as long
	mustRefuse(t, b, 4*time.Second)
	clk.Advance(4 * time.Second)
	mustAllow(t, b)
	b.After(errTransient)
	mustRefuse(t, b, 5*time.Second) // capped
	clk.Advance(5 * time.Second)
	mustAllow(t, b)
	b.After(nil) // successful probe closes it
	if b.State() != "closed" {
		t.Fatalf("state %s after a good probe", b.State())
	}
	mustAllow(t, b)
	b.After(errTransient) // and the count starts over
	mustAllow(t, b)
	if len(opened) != 3 {
		t.Errorf("OnOpen called %d times, want 3", len(opened))
	}
}

func TestBreakerIgnoresRejectionsAndCountsUnknownErrors(t *testing.T) {
	clk := &testClock{now: time.Unix(1e9, 0)}
	b := NewBreaker(BreakerConfig{Threshold: 2, Now: clk.Now})
	for range 10 {
		mustAllow(t, b)
		b.After(errRejected) // Zapier is up; the request was bad
	}
	mustAllow(t, b)
	b.After(errors.New("dial tcp: connection refused"))
	mustAllow(t, b)
	b.After(&Error{Kind: KindTimeout})
	mustRefuse(t, b, DefaultBreakerOpen)
}

func TestRateLimitCooldownHonoursRetryAfter(t *testing.T) {
	clk := &testClock{now: time.Unix(1e9, 0)}
	b := NewBreaker(BreakerConfig{Now: clk.Now})
	mustAllow(t, b)
	b.After(&Error{Kind: KindRateLimited, StatusCode: 429, RetryAfter: 7 * time.Second})
	if b.State() != "cooling_down" {
		t.Fatalf("state %s", b.State())
	}
	mustRefuse(t, b, 7*time.Second)
	clk.Advance(7 * time.Second)
	mustAllow(t, b)
	b.After(&Error{Kind: KindRateLimited, StatusCode: 429}) // no Retry-After: Zapier's documented 60s
	mustRefuse(t, b, DefaultRateLimitCooldown)
	clk.Advance(DefaultRateLimitCooldown)
	mustAllow(t, b)
	b.After(nil)
	if b.State() != "closed" {
		t.Fatalf("state %s", b.State())
	}
}

func TestBreakerConcurrentUse(t *testing.T) {
	b := NewBreaker(BreakerConfig{Threshold: 3, Open: time.Millisecond})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 2000 {
				if b.Before() != nil {
					continue
				}
				if (i+j)%3 == 0 {
					b.After(errTransient)
				} else {
					b.After(nil)
				}
			}
		}()
	}
	wg.Wait()
	_ = b.State()
}
