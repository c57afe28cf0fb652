package caddymodule

import (
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// A Retry-After Zapier sends is passed on only up to gateway.MaxRetryAfter: a day
// would make clients give up on the gateway for a day.
func TestRetryAfterIsCapped(t *testing.T) {
	for _, kind := range []zapierapi.Kind{zapierapi.KindRateLimited, zapierapi.KindUnavailable} {
		e := gateway.UnavailableError(&zapierapi.Error{Kind: kind, RetryAfter: 24 * time.Hour}, "calls")
		if e == nil || e.RetryAfter != gateway.MaxRetryAfter {
			t.Errorf("kind %v: Retry-After %v, want %v", kind, e.RetryAfter, gateway.MaxRetryAfter)
		}
		e = gateway.UnavailableError(&zapierapi.Error{Kind: kind, RetryAfter: 90 * time.Second}, "calls")
		if e.RetryAfter != 90*time.Second {
			t.Errorf("kind %v: a sane Retry-After became %v", kind, e.RetryAfter)
		}
	}
}
