package integration

import (
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// expectGatewayError checks one request's answer against the error table,
// including Retry-After: wantRetryAfter "" means the header must be absent.
func (g *gateway) expectGatewayError(tenant, user string, wantStatus int, wantCode, wantRetryAfter string) {
	g.t.Helper()
	status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", tenant: tenant, user: user})
	expectError(g.t, status, hdr, body, wantStatus, wantCode)
	if got := hdr.Get("Retry-After"); got != wantRetryAfter {
		g.t.Errorf("%s: Retry-After = %q, want %q", wantCode, got, wantRetryAfter)
	}
}

func (g *gateway) tokenRequests() int { return g.fake.Stats().TokenRequests }

// TestZapierFaults injects each fault the fake knows at the token endpoint
// and checks the gateway's answer, that it does not hammer Zapier, that
// cached identities keep working, and that traffic recovers once the fault
// clears, without a restart and without leaking goroutines.
func TestZapierFaults(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: `exchange {
			timeout 400ms
		}
		cache {
			negative_ttl 1s
		}`})
	g.echoAs("faults", "cached") // this identity must keep working through every fault
	goroutinesBefore := settledGoroutines()
	cachedStillWorks := func() {
		t.Helper()
		g.echoAs("faults", "cached")
	}
	n := 0
	fresh := func() string { n++; return "user-" + strconv.Itoa(n) }

	t.Run("5xx burst shorter than the retries is absorbed", func(t *testing.T) {
		before := g.tokenRequests()
		g.fake.FailNextTokenRequests(2, http.StatusServiceUnavailable, "")
		g.echoAs("faults", fresh())
		if got := g.tokenRequests() - before; got != 3 {
			t.Errorf("token requests = %d, want 3 (two failures retried, then success)", got)
		}
	})

	t.Run("5xx past the retries fails without Retry-After, then recovers", func(t *testing.T) {
		before := g.tokenRequests()
		g.fake.FailNextTokenRequests(3, http.StatusInternalServerError, "")
		g.expectGatewayError("faults", fresh(), http.StatusBadGateway, "token_exchange_failed", "")
		if got := g.tokenRequests() - before; got != 3 {
			t.Errorf("token requests = %d, want exactly 3 attempts", got)
		}
		cachedStillWorks()
		g.echoAs("faults", fresh())
	})

	for _, mode := range []string{fakezapier.ModeEmpty, fakezapier.ModeGarbage, fakezapier.ModeReset} {
		t.Run("200 "+mode+" body", func(t *testing.T) {
			g.fake.SetTokenResponseMode(mode)
			g.expectGatewayError("faults", fresh(), http.StatusBadGateway, "token_exchange_failed", "")
			cachedStillWorks()
			g.fake.SetTokenResponseMode(fakezapier.ModeNormal)
			g.echoAs("faults", fresh())
		})
	}

	t.Run("slow token endpoint times out, then recovers", func(t *testing.T) {
		g.fake.SetTokenDelay(2 * time.Second)
		g.expectGatewayError("faults", fresh(), http.StatusGatewayTimeout, "token_exchange_timeout", "")
		cachedStillWorks()
		g.fake.SetTokenDelay(0)
		g.echoAs("faults", fresh())
	})

	t.Run("4xx is not retried and is negative-cached per identity", func(t *testing.T) {
		user := fresh()
		before := g.tokenRequests()
		g.fake.FailNextTokenRequests(1, http.StatusBadRequest, "")
		g.expectGatewayError("faults", user, http.StatusBadGateway, "token_exchange_rejected", "")
		g.expectGatewayError("faults", user, http.StatusBadGateway, "token_exchange_rejected", "")
		if got := g.tokenRequests() - before; got != 1 {
			t.Errorf("token requests = %d, want 1 (no retry, then the negative cache)", got)
		}
		g.echoAs("faults", fresh()) // other identities are not affected
		time.Sleep(1100 * time.Millisecond)
		g.echoAs("faults", user) // negative_ttl passed
	})

	t.Run("429 with Retry-After starts a cooldown that honours it", func(t *testing.T) {
		before := g.tokenRequests()
		g.fake.FailNextTokenRequests(1, http.StatusTooManyRequests, "2")
		g.expectGatewayError("faults", fresh(), http.StatusServiceUnavailable, "zapier_unavailable", "2")
		// During the cooldown the gateway does not call Zapier at all.
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", tenant: "faults", user: fresh()})
		expectError(t, status, hdr, body, http.StatusServiceUnavailable, "zapier_unavailable")
		if ra, _ := strconv.Atoi(hdr.Get("Retry-After")); ra < 1 || ra > 2 {
			t.Errorf("Retry-After during the cooldown = %q, want 1-2", hdr.Get("Retry-After"))
		}
		if got := g.tokenRequests() - before; got != 1 {
			t.Errorf("token requests during the cooldown = %d, want 1", got)
		}
		cachedStillWorks()
		time.Sleep(2100 * time.Millisecond)
		g.echoAs("faults", fresh())
	})

	t.Run("breaker opens after repeated failures, fails fast, half-opens and recovers", func(t *testing.T) {
		g.fake.FailNextTokenRequests(1000, http.StatusBadGateway, "")
		for range 5 { // each exhausts its retries: 5 consecutive transient failures
			g.expectGatewayError("faults", fresh(), http.StatusBadGateway, "token_exchange_failed", "")
		}
		before := g.tokenRequests()
		g.expectGatewayError("faults", fresh(), http.StatusServiceUnavailable, "zapier_unavailable", "5")
		if got := g.tokenRequests() - before; got != 0 {
			t.Errorf("the open breaker let %d token requests through", got)
		}
		status, body := admin(t, http.MethodGet, "/zapier/status")
		if status != http.StatusOK || !contains(body, `"breaker":"open"`) {
			t.Errorf("status while open: %d %s", status, body)
		}
		cachedStillWorks()
		g.fake.FailNextTokenRequests(0, 0, "")
		time.Sleep(5100 * time.Millisecond)
		g.echoAs("faults", fresh()) // the half-open probe succeeds
		g.echoAs("faults", fresh())
		if _, body := admin(t, http.MethodGet, "/zapier/status"); !contains(body, `"breaker":"closed"`) {
			t.Errorf("status after recovery: %s", body)
		}
	})

	t.Run("429 without Retry-After uses Zapier's documented 60s", func(t *testing.T) {
		// Last: the 60s cooldown outlives the test.
		g.fake.FailNextTokenRequests(1, http.StatusTooManyRequests, "")
		g.expectGatewayError("faults", fresh(), http.StatusServiceUnavailable, "zapier_unavailable", "60")
		cachedStillWorks()
	})

	if st := g.fake.Stats(); st.JWTFailures != 0 {
		t.Errorf("JWT failures: %d", st.JWTFailures)
	}
	after := settledGoroutines()
	t.Logf("plugin goroutines: %d before the faults, %d after", goroutinesBefore, after)
	if after > goroutinesBefore {
		t.Errorf("goroutines: %d before the faults, %d after", goroutinesBefore, after)
	}
}

func contains(body []byte, s string) bool { return strings.Contains(string(body), s) }

// settledGoroutines counts the goroutines running the plugin's own code (not
// the test's, not Caddy's connection handlers), once they have had a moment
// to finish: a fetch, refresh or retry left behind shows up here.
func settledGoroutines() int {
	count := func() int {
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		n := 0
		for _, stack := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(stack, "github.com/zapgate/caddy-zapier/") &&
				!strings.Contains(stack, "github.com/zapgate/caddy-zapier/integration") {
				n++
			}
		}
		return n
	}
	n := count()
	for range 30 {
		time.Sleep(100 * time.Millisecond)
		if m := count(); m < n {
			n = m
		}
	}
	return n
}

// TestMaxInflightBoundsExchangesAndWaitersHonourTheirDeadline sends 12 cold
// identities at once with max_inflight 2 and slow exchanges: Zapier never
// sees more than 2 at a time, everyone is served, and a caller that gives up
// while queued gets its answer at its own deadline without stopping the rest.
func TestMaxInflightBoundsExchangesAndWaitersHonourTheirDeadline(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: "exchange {\n\t\t\tmax_inflight 2\n\t\t}"})
	g.fake.SetTokenDelay(150 * time.Millisecond)

	impatient := &http.Client{Timeout: 200 * time.Millisecond}
	var wg sync.WaitGroup
	errs := make(chan error, 13)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, body, err := send(request{path: "/zapier/api/v2/echo", tenant: "inflight", user: fmt.Sprintf("u%d", i)})
			if err != nil || status != http.StatusOK {
				errs <- fmt.Errorf("u%d: %d %v %s", i, status, err, body)
			}
		}()
	}
	// Once the first exchanges are in progress, this caller queues behind the
	// others and its deadline passes first.
	eventually(t, 5*time.Second, "the first exchanges to start", func() bool { return g.fake.Stats().TokenRequests >= 2 })
	time.Sleep(50 * time.Millisecond) // let the other goroutines queue up
	_, _, _, err := send(request{path: "/zapier/api/v2/echo", tenant: "inflight", user: "impatient", client: impatient})
	if err == nil {
		t.Error("the impatient caller was served before its deadline; the queue did not form")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak := g.fake.Stats().TokenConcurrencyPeak; peak > 2 || peak < 1 {
		t.Errorf("Zapier saw %d concurrent exchanges, want at most max_inflight 2", peak)
	}
}
