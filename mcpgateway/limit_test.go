package mcpgateway

import (
	"errors"
	"testing"
	"time"
)

func TestCallLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &CallLimiter{PerMinute: 3, Now: func() time.Time { return now }}
	for i := range 3 {
		if err := l.Allow(alice); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	err := l.Allow(alice)
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrToolCallLimit) || le.RetryAfter != 20*time.Second {
		t.Fatalf("fourth call: %v", err)
	}
	if err := l.Allow(bob); err != nil {
		t.Fatalf("bob is capped by alice's calls: %v", err)
	}
	now = now.Add(20 * time.Second) // one call's worth refilled
	if err := l.Allow(alice); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if err := l.Allow(alice); err == nil {
		t.Fatal("a second call after one call's refill")
	}
	var off *CallLimiter
	if off.Allow(alice) != nil || (&CallLimiter{}).Allow(alice) != nil {
		t.Fatal("a limiter that is off refused")
	}
}
