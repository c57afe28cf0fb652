package ratelimit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newLimiter(t *testing.T, c *clock, cfg Config) *Limiter {
	t.Helper()
	cfg.Now = c.Now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func count(l *Limiter, key string, n int) (allowed int, retry time.Duration) {
	for range n {
		ok, ra := l.Allow(key)
		if ok {
			allowed++
		} else {
			retry = ra
		}
	}
	return allowed, retry
}

// 70 quick requests from one key: the first Events pass, the rest are
// refused with the time until the next token; other keys are untouched.
func TestBurstThenRefill(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, Config{Events: 20, Window: time.Minute})
	allowed, retry := count(l, "alice", 70)
	if allowed != 20 {
		t.Fatalf("allowed %d of 70, want 20", allowed)
	}
	if retry != 3*time.Second { // one token every 60s/20
		t.Fatalf("Retry-After %v, want 3s", retry)
	}
	if n, _ := count(l, "bob", 5); n != 5 {
		t.Fatalf("bob allowed %d of 5", n)
	}
	c.Advance(3 * time.Second)
	if n, _ := count(l, "alice", 2); n != 1 {
		t.Fatalf("after 3s alice allowed %d, want 1", n)
	}
	c.Advance(time.Hour)
	if n, _ := count(l, "alice", 30); n != 20 {
		t.Fatalf("after an hour alice allowed %d, want a full bucket of 20", n)
	}
}

// AllowAll takes from every bucket or from none: a tenant's budget is not
// spent by a user already over their own, and the reported wait is the
// longest.
func TestAllowAllIsAllOrNothing(t *testing.T) {
	c := newClock()
	users := newLimiter(t, c, Config{Events: 2, Window: time.Minute})
	tenants := newLimiter(t, c, Config{Events: 3, Window: time.Minute})
	var by int
	ok := func(user string) (allowed bool, retry time.Duration) {
		allowed, retry, by = AllowAll(Check{users, "acme\x00" + user}, Check{tenants, "acme"})
		return allowed, retry
	}
	for i := range 2 {
		if allowed, _ := ok("alice"); !allowed {
			t.Fatalf("alice request %d refused", i)
		}
	}
	for range 5 {
		if allowed, _ := ok("alice"); allowed || by != 0 {
			t.Fatalf("alice over her limit: allowed %v, refused by check %d (want 0, her own)", allowed, by)
		}
	}
	// The tenant still has one token: alice's refusals spent none.
	if allowed, _ := ok("bob"); !allowed {
		t.Fatal("bob refused: alice's refused requests spent the tenant's budget")
	}
	allowed, retry := ok("carol")
	if allowed || retry != 20*time.Second || by != 1 {
		t.Fatalf("carol: allowed %v, retry %v; want refused by the tenant limit with 20s", allowed, retry)
	}
	// Carol's own bucket was not spent by the refusal.
	c.Advance(20 * time.Second)
	if allowed, _ := ok("carol"); !allowed {
		t.Fatal("carol refused after the tenant refilled")
	}
}

func TestDisabledAndBadConfig(t *testing.T) {
	var nilLimiter *Limiter
	if ok, _ := nilLimiter.Allow("x"); !ok {
		t.Fatal("a nil limiter refuses")
	}
	for _, cfg := range []Config{
		{Events: -1, Window: time.Second},
		{Events: 1, Window: 0},
		{Events: 1, Window: -time.Second},
		{Events: 1, Window: time.Second, MaxKeys: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	l, err := New(Config{Events: 0, Window: time.Second})
	if err != nil || l != nil {
		t.Fatalf("Events 0 should disable: %v %v", l, err)
	}
}

// Memory is bounded: past MaxKeys, full buckets (keys idle long enough to
// have refilled, whose state equals none) are dropped first, then others.
func TestKeysAreBounded(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, Config{Events: 2, Window: time.Minute, MaxKeys: 100})
	count(l, "busy", 2) // empty bucket
	for i := range 1000 {
		l.Allow(fmt.Sprintf("idle-%d", i))
		c.Advance(time.Second)
		if i%200 == 0 {
			count(l, "busy", 1)
		}
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("%d keys held, want at most 100", n)
	}
	c.Advance(time.Hour)
	for i := range 1000 {
		l.Allow(strings.Repeat("k", i%7) + fmt.Sprint(i))
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("%d keys held, want at most 100", n)
	}
}

func TestConcurrentUseCountsExactly(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, Config{Events: 50, Window: time.Hour})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, _ := count(l, "k", 100)
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if allowed != 50 {
		t.Fatalf("allowed %d of 800 concurrent requests, want exactly 50", allowed)
	}
}
