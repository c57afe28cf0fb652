package actions

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func TestBudgetDeferred(t *testing.T) {
	wrap := func(ee *budget.ExhaustedError) error {
		// As a poll sees it: the client's transport wraps the budget's refusal.
		return fmt.Errorf("polling: %w", &zapierapi.Error{Kind: zapierapi.KindUnavailable, RetryAfter: ee.RetryAfter, Err: ee})
	}
	cases := []struct {
		err      error
		want     time.Duration
		deferred bool
	}{
		{wrap(&budget.ExhaustedError{RetryAfter: 300 * time.Millisecond, Reason: budget.ShedQueueFull}), 300 * time.Millisecond, true},
		{wrap(&budget.ExhaustedError{RetryAfter: time.Second, Reason: budget.ShedDeadline}), time.Second, true},
		{wrap(&budget.ExhaustedError{RetryAfter: time.Minute, Reason: budget.ShedCooldown}), 0, false}, // Zapier's 429
		{wrap(&budget.ExhaustedError{RetryAfter: time.Second, Reason: budget.ShedClosed}), 0, false},
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited}, 0, false},
		{errors.New("boom"), 0, false},
		{nil, 0, false},
	}
	for i, c := range cases {
		got, ok := BudgetDeferred(c.err)
		if ok != c.deferred || got != c.want {
			t.Errorf("case %d (%v): BudgetDeferred = %v, %v; want %v, %v", i, c.err, got, ok, c.want, c.deferred)
		}
	}
}
