package budget

import (
	"testing"
	"time"
)

// manualBudget is a budget without its dispatch goroutine: the test grants
// with next.
func manualBudget(t *testing.T, cfg Config) (*Budget, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Clock, cfg.manual = clk, true
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, clk
}

func mustAdmit(t *testing.T, b *Budget, req Request) *waiter {
	t.Helper()
	w, err := b.admit(req)
	if err != nil {
		t.Fatalf("%+v refused: %v", req, err)
	}
	return w
}

// next grants the request dispatch would grant now, or returns nil.
func next(b *Budget) *waiter {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if w, _ := b.due(now); w == nil {
		return nil
	}
	return b.grant(now)
}

// Two windows: per-IP slots free after 10s while the 20s partner window
// still remembers who was granted what.
var twoWindows = Config{PerIP: Limit{10, 10 * time.Second}, Partner: Limit{20, 20 * time.Second}, Margin: -1, MaxWait: time.Minute}

func TestTenantBelowItsShareGoesFirst(t *testing.T) {
	b, clk := manualBudget(t, twoWindows)
	for range 8 {
		mustAdmit(t, b, Request{Tenant: "heavy"})
	}
	for range 2 {
		mustAdmit(t, b, Request{Tenant: "mid"})
	}
	heavy := mustAdmit(t, b, Request{Tenant: "heavy"})
	mid := mustAdmit(t, b, Request{Tenant: "mid"})
	light := mustAdmit(t, b, Request{Tenant: "light"})
	if heavy == nil || mid == nil || light == nil {
		t.Fatal("granted with the per-IP window full")
	}
	clk.Advance(10 * time.Second)
	// Round robin would serve heavy (queued first); by the window, light
	// (nothing granted) goes first, then mid (2) before heavy (8).
	for i, want := range []*waiter{light, mid, heavy} {
		if got := next(b); got != want {
			t.Fatalf("grant %d went to %v, want %v (light %p, mid %p, heavy %p)", i, got, want, light, mid, heavy)
		}
	}
}

func TestUrgentGoesAheadOfNewWorkOfTenantsAtTheirShare(t *testing.T) {
	b, clk := manualBudget(t, twoWindows)
	for range 5 {
		mustAdmit(t, b, Request{Tenant: "a"})
		mustAdmit(t, b, Request{Tenant: "b"})
	}
	fresh := mustAdmit(t, b, Request{Tenant: "a"})
	poll := mustAdmit(t, b, Request{Tenant: "b", Urgent: true})
	clk.Advance(10 * time.Second)
	// Both used their share (5 of 10 each): b's poll finishes work already
	// paid for and goes before a's new work.
	if got := next(b); got != poll {
		t.Fatalf("first grant %p, want the urgent poll %p (new work %p)", got, poll, fresh)
	}
	if got := next(b); got != fresh {
		t.Fatalf("second grant %p, want %p", got, fresh)
	}
}

func TestAdmissionCountsOnlyWhoGoesFirst(t *testing.T) {
	cfg := twoWindows
	cfg.MaxWait = 2 * time.Second
	cfg.PerIP = Limit{1, time.Second}
	b, clk := manualBudget(t, cfg)
	mustAdmit(t, b, Request{Tenant: "heavy"})
	clk.Advance(time.Second)
	mustAdmit(t, b, Request{Tenant: "heavy"})
	// heavy was granted 2 in the partner window; 2 more of its requests
	// wait (1s, 2s).
	for range 2 {
		if w := mustAdmit(t, b, Request{Tenant: "heavy"}); w == nil {
			t.Fatal("granted with the window full")
		}
	}
	if _, err := b.admit(Request{Tenant: "heavy"}); err == nil {
		t.Fatal("a third queued heavy request admitted past max_wait")
	}
	// A light tenant (nothing granted, below its share) goes before both:
	// admitted, and granted first.
	light := mustAdmit(t, b, Request{Tenant: "light"})
	clk.Advance(time.Second)
	if got := next(b); got != light {
		t.Fatalf("first grant %p, want light %p", got, light)
	}
}
