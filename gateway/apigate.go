package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// APIGate is the one way out to Zapier's API: every call the gateway makes
// itself (through Transport) and every request zapier_auth proxies (Admit,
// then Proxied) spends from the request budget, passes the API breaker, is
// counted, and a 429 starts Zapier's cooldown for all of them.
type APIGate struct {
	// Budget is nil when the budget is off.
	Budget  *budget.Budget
	Breaker *zapierapi.Breaker
	// APIURL is the API's base; TokenURL, under it or not, has limits of
	// its own and is not budgeted.
	APIURL, TokenURL string
	// RetryAfter reads a Retry-After header (the client's rules and caps).
	RetryAfter func(header string) time.Duration
	// Observe, if set, counts one API call: its method, path and status
	// (0 when no answer came).
	Observe func(method, path string, status int)
	// RateLimited, if set, hears of a 429 and the cooldown it started.
	RateLimited func(retryAfter time.Duration)
}

// budgetClaim is what a context says about its API calls' budget.
type budgetClaim struct {
	prepaid atomic.Int32
	urgent  bool
}

type budgetClaimKey struct{}

// spend takes budget for one API request of tenant (from what the
// context's claim prepaid, if any).
func (g *APIGate) spend(ctx context.Context, tenant string) error {
	if g.Budget == nil {
		return nil
	}
	claim, _ := ctx.Value(budgetClaimKey{}).(*budgetClaim)
	if claim != nil && claim.prepaid.Add(-1) >= 0 {
		return nil
	}
	return g.Budget.AcquireRequest(ctx, budget.Request{Tenant: tenant, Urgent: claim != nil && claim.urgent})
}

// Prepay takes budget for units API calls of tenant at once, before the
// first is made: an operation of several calls (a run: the fresh action id
// and the create) gets all of them or fails before spending any. The calls
// made with the returned context draw from it. A refusal is the gateway's
// answer (503 zapier_budget_exhausted, or Zapier's unavailability).
func (g *APIGate) Prepay(ctx context.Context, tenant string, units int) (context.Context, error) {
	if g.Budget == nil {
		return ctx, nil
	}
	// During Zapier's cooldown (or with the breaker open) the answer is
	// Zapier's unavailability, not the budget's.
	if err := g.Breaker.Before(); err != nil {
		return ctx, err
	}
	g.Breaker.After(&zapierapi.Error{Kind: zapierapi.KindUnavailable}) // only asked; nothing learnt
	if err := g.Budget.AcquireRequest(ctx, budget.Request{Tenant: tenant, Units: units}); err != nil {
		return ctx, budgetError(err)
	}
	claim := &budgetClaim{}
	claim.prepaid.Store(int32(units))
	return context.WithValue(ctx, budgetClaimKey{}, claim), nil
}

// Urgent marks the API calls made with ctx as finishing work already paid
// for (the polls of a created run): they go ahead of their tenant's others.
func (g *APIGate) Urgent(ctx context.Context) context.Context {
	return context.WithValue(ctx, budgetClaimKey{}, &budgetClaim{urgent: true})
}

// Queued is how long the budget has no room for one more request.
func (g *APIGate) Queued() time.Duration {
	if g.Budget == nil {
		return 0
	}
	return g.Budget.Snapshot().BlockedFor
}

// budgetError answers a budget refusal as the gateway's 503, and passes any
// other error (the caller went away) on.
func budgetError(err error) error {
	var ee *budget.ExhaustedError
	if errors.As(err, &ee) {
		return BudgetExhaustedError(ee.RetryAfter)
	}
	return err
}

// rateLimited records a 429 from Zapier's API: its cooldown holds the
// budget (queued requests that cannot wait it out are refused now).
func (g *APIGate) rateLimited(retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = zapierapi.DefaultRateLimitCooldown
	}
	if g.Budget != nil {
		g.Budget.Exhaust(time.Now().Add(retryAfter))
	}
	if g.RateLimited != nil {
		g.RateLimited(retryAfter)
	}
}

func (g *APIGate) observe(method, path string, status int) {
	if g.Observe != nil {
		g.Observe(method, path, status)
	}
}

// Transport spends budget for every request to Zapier's API that next
// sends (the token endpoint has limits of its own), counts it, and reports
// a 429.
func (g *APIGate) Transport(next http.RoundTripper) http.RoundTripper {
	return gateTransport{next: next, gate: g}
}

type gateTransport struct {
	next http.RoundTripper
	gate *APIGate
}

func (t gateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	g := t.gate
	u := req.URL.String()
	rest, isAPI := strings.CutPrefix(u, strings.TrimRight(g.APIURL, "/")+"/")
	if !isAPI || u == g.TokenURL {
		return t.next.RoundTrip(req)
	}
	if err := g.spend(req.Context(), TenantOf(req.Context())); err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	endpoint, _, _ := strings.Cut("/"+rest, "?")
	code := 0
	if err == nil {
		code = resp.StatusCode
	}
	g.observe(req.Method, endpoint, code)
	if code == http.StatusTooManyRequests {
		g.rateLimited(g.RetryAfter(resp.Header.Get("Retry-After")))
	}
	return resp, err
}

// Admit decides whether a proxied request of tenant may go to Zapier now:
// not during an API cooldown or open breaker, and only with budget. nil
// means go, and then Proxied must follow.
func (g *APIGate) Admit(ctx context.Context, tenant string) error {
	if err := g.Breaker.Before(); err != nil {
		return CallError(err)
	}
	if err := g.spend(ctx, tenant); err != nil {
		g.Breaker.After(&zapierapi.Error{Kind: zapierapi.KindUnavailable}) // nothing learnt
		return budgetError(err)
	}
	return nil
}

// Proxied records the outcome of a proxied request: the breaker learns
// from it and a 429 starts the cooldown.
func (g *APIGate) Proxied(method, path string, status int, header http.Header, err error) {
	var outcome error
	switch {
	case err != nil || status >= 500:
		outcome = &zapierapi.Error{Kind: zapierapi.KindFailed, StatusCode: status}
	case status == http.StatusTooManyRequests:
		retryAfter := g.RetryAfter(header.Get("Retry-After"))
		outcome = &zapierapi.Error{Kind: zapierapi.KindRateLimited, StatusCode: status, RetryAfter: retryAfter}
		g.rateLimited(retryAfter)
	}
	g.Breaker.After(outcome)
	g.observe(method, path, status)
}
