package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// burst sends n proxied echo calls at once for tenant (users u0…) and
// returns the answers' statuses and Retry-After values, failing on any
// answer but 200 or 503 zapier_budget_exhausted with a Retry-After.
type burstResult struct {
	ok, shed   int
	retryAfter []int
}

func burst(t *testing.T, base int, tenant string, n int) burstResult {
	t.Helper()
	var mu sync.Mutex
	var res burstResult
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, hdr, body, err := send(request{path: "/zapier/api/v2/echo", tenant: tenant, user: fmt.Sprintf("u%d", i%5), base: base})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("request lost: %v", err)
			case status == http.StatusOK:
				res.ok++
			case status == http.StatusServiceUnavailable:
				var v struct{ Error struct{ Code string } }
				_ = json.Unmarshal(body, &v)
				retry, _ := strconv.Atoi(hdr.Get("Retry-After"))
				if v.Error.Code != "zapier_budget_exhausted" || retry < 1 {
					t.Errorf("503 without budget code or Retry-After: %q %s", hdr.Get("Retry-After"), body)
				}
				res.shed++
				res.retryAfter = append(res.retryAfter, retry)
			default:
				t.Errorf("unexpected answer %d %s", status, body)
			}
		}()
	}
	wg.Wait()
	return res
}

// The budget answers what it cannot serve with 503 and a computed
// Retry-After, and the fake (with Zapier's limits) never answers 429.
func TestBudgetShedsInsteadOfDrawingA429(t *testing.T) {
	g := startGateway(t, gatewayOptions{budget: "api_budget {\n\t\t\tper_ip 10/2s\n\t\t\tmax_wait 0s\n\t\t\tburst 10\n\t\t}",
		fake: fakezapier.Config{RateLimits: &testRateLimits}})
	g.echoAs("warm", "up") // the token exchange does not spend the API budget
	start := time.Now()
	res := burst(t, 0, "org", 40)
	elapsed := time.Since(start)
	// 9 left in the window after the warm-up call; a burst shorter than
	// the window gets no more.
	if elapsed < 2*time.Second && res.ok != 9 {
		t.Errorf("%d of 40 went through a budget of 9 left", res.ok)
	}
	if res.shed == 0 {
		t.Fatal("nothing was shed")
	}
	for _, r := range res.retryAfter {
		if r > 3 {
			t.Errorf("Retry-After %d is past the 2s window", r)
		}
	}
	// The admin status shows the spent budget.
	status, body := admin(t, http.MethodGet, "/zapier/status")
	var st struct {
		APIBudget struct {
			PerIP struct{ Limit string } `json:"per_ip"`
		} `json:"api_budget"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &st) != nil || st.APIBudget.PerIP.Limit != "10/2s" {
		t.Errorf("/zapier/status: %d %s", status, body)
	}
	if got := scrapeMetric(t, "caddy_zapier_budget_shed_total", `reason="queue_full"`); got < float64(res.shed) {
		t.Errorf("shed metric %v < %d", got, res.shed)
	}
}

// A tenant sending ten times another's load does not push the other below
// its fair share: of what the budget grants within max_wait, the light
// tenant gets at least as much as the heavy one (its whole demand when that
// is less than half), and only the heavy tenant's excess is shed.
func TestBudgetIsFairAcrossTenants(t *testing.T) {
	g := startGateway(t, gatewayOptions{budget: "api_budget {\n\t\t\tper_ip 10/1s\n\t\t\tmax_wait 4s\n\t\t}",
		fake: fakezapier.Config{RateLimits: &testRateLimits}})
	for _, tenant := range []string{"heavy", "light"} {
		for u := range 5 {
			g.echoAs(tenant, fmt.Sprintf("u%d", u)) // tokens cached before the burst
		}
	}
	var heavy, light burstResult
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); heavy = burst(t, 0, "heavy", 60) }()
	go func() { defer wg.Done(); light = burst(t, 0, "light", 6) }()
	wg.Wait()
	granted := heavy.ok + light.ok
	if granted < 10 {
		t.Errorf("only %d granted within max_wait", granted)
	}
	if light.ok < min(6, granted/2) {
		t.Errorf("the light tenant got %d of %d granted (heavy %d, %d shed): below its fair share", light.ok, granted, heavy.ok, heavy.shed)
	}
	if heavy.shed == 0 {
		t.Errorf("the heavy tenant's excess was not shed (%d ok)", heavy.ok)
	}
}

// Sidecars sharing Redis draw from one partner budget: with the fake's
// partner limit set to the budget's, none of them draws a 429; with Redis
// away each keeps serving from its share.
func TestBudgetSharedAcrossSidecarsInRedis(t *testing.T) {
	f, _ := startRedisFleetWith(t, 2, "redis_timeout 200ms", fakezapier.Config{
		RateLimits: &fakezapier.RateLimits{PerIP: 1000, PerPartner: 12, Window: 2 * time.Second, Cooldown: 2 * time.Second},
	}, "api_budget {\n\t\t\tper_ip 50/1s\n\t\t\tpartner 10/2s\n\t\t\tmax_wait 0s\n\t\t}")
	for _, s := range f.sidecars {
		s.echoAs("org", "warm") // tokens first: the exchange is not an API call
	}
	// Both sidecars together, at once: the partner budget is one.
	total := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, s := range f.sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := burst(t, s.port, "org", 15)
			mu.Lock()
			total += res.ok
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total > 10+2 { // 2 warm-up calls already spent part of it; the window may roll once
		t.Errorf("two sidecars got %d calls through a shared partner budget of 10", total)
	}
	if n := f.fake.ThrottledCount(); n != 0 {
		t.Fatalf("the fake throttled %d calls", n)
	}

}

// With Redis away each sidecar serves from its share of the partner
// budget, failing no request, and goes back to Redis when it returns.
func TestBudgetFallsBackWhileRedisIsAway(t *testing.T) {
	f, redis := startRedisFleetWith(t, 2, "redis_timeout 200ms", fakezapier.Config{RateLimits: &testRateLimits},
		"api_budget {\n\t\t\tper_ip 50/1s\n\t\t\tpartner 100/1s\n\t\t\tmax_wait 5s\n\t\t}")
	for _, s := range f.sidecars {
		s.echoAs("org", "warm")
	}
	redis.Pause()
	for _, s := range f.sidecars {
		if res := burst(t, s.port, "org", 10); res.ok != 10 {
			t.Errorf("%s: %d of 10 served while Redis was away", s.name, res.ok)
		}
	}
	redis.Resume()
	for _, s := range f.sidecars {
		eventually(t, 10*time.Second, s.name+" back on the shared budget", func() bool {
			status, body := s.admin(http.MethodGet, "/zapier/status")
			return status == http.StatusOK && strings.Contains(string(body), `"partner_mode":"shared"`)
		})
		s.echoAs("org", "warm")
	}
}
