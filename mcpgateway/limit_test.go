package mcpgateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

var ctx = context.Background()

func TestCallLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &CallLimiter{PerMinute: 3, Now: func() time.Time { return now }}
	for i := range 3 {
		if err := l.Allow(ctx, alice); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	err := l.Allow(ctx, alice)
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrToolCallLimit) || le.RetryAfter != 20*time.Second {
		t.Fatalf("fourth call: %v", err)
	}
	if err := l.Allow(ctx, bob); err != nil {
		t.Fatalf("bob is capped by alice's calls: %v", err)
	}
	now = now.Add(20 * time.Second) // one call's worth refilled
	if err := l.Allow(ctx, alice); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if err := l.Allow(ctx, alice); err == nil {
		t.Fatal("a second call after one call's refill")
	}
	var off *CallLimiter
	if off.Allow(ctx, alice) != nil || (&CallLimiter{}).Allow(ctx, alice) != nil {
		t.Fatal("a limiter that is off refused")
	}
}

// With a shared window, it decides; while it fails, the local bucket does.
func TestCallLimiterShared(t *testing.T) {
	var shared []Identity
	down := false
	l := &CallLimiter{PerMinute: 2, Shared: func(_ context.Context, id Identity, perMinute int) (time.Duration, error) {
		if down {
			return 0, errors.New("redis away")
		}
		shared = append(shared, id)
		if perMinute != 2 || len(shared) > 2 {
			return 7 * time.Second, nil
		}
		return 0, nil
	}}
	for range 2 {
		if err := l.Allow(ctx, alice); err != nil {
			t.Fatal(err)
		}
	}
	var le *LimitError
	if err := l.Allow(ctx, alice); !errors.As(err, &le) || le.RetryAfter != 7*time.Second {
		t.Fatalf("third call: %v", err)
	}
	down = true
	for range 2 {
		if err := l.Allow(ctx, alice); err != nil {
			t.Fatalf("with the shared window away, the local bucket refused: %v", err)
		}
	}
	if err := l.Allow(ctx, alice); err == nil {
		t.Fatal("the local bucket let a third call through")
	}
}

// Quota is asked for every call the cap lets through, also without a cap,
// and its refusal is the call's.
func TestCallLimiterAsksQuota(t *testing.T) {
	refuse := errors.New("quota")
	asked := 0
	l := &CallLimiter{Quota: func(_ context.Context, id Identity) error {
		asked++
		if asked > 2 {
			return refuse
		}
		return nil
	}}
	if !l.active() {
		t.Fatal("a quota alone does not make the limiter check bodies")
	}
	id := Identity{Tenant: "t", User: "u"}
	for range 2 {
		if err := l.Allow(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Allow(context.Background(), id); !errors.Is(err, refuse) {
		t.Fatalf("third call: %v", err)
	}
	capped := &CallLimiter{PerMinute: 1, Quota: func(context.Context, Identity) error { asked = 100; return nil }}
	_ = capped.Allow(context.Background(), id)
	asked = 0
	if err := capped.Allow(context.Background(), id); err == nil || asked != 0 {
		t.Fatalf("a call over the cap reached the quota: %v, asked %d", err, asked)
	}
}
