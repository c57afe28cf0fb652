package integration

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// startCallbackGateway serves zapier_actions on HTTPS too (Caddy's internal
// CA), where the fake delivers run callbacks: Zapier only calls https URLs.
func startCallbackGateway(t *testing.T, callbackTimeout string, specs ...fakezapier.ActionSpec) *gateway {
	t.Helper()
	return startCallbackGatewayVia(t, "auto", callbackTimeout, specs...)
}

// startCallbackGatewayVia is startCallbackGateway with zapier_actions'
// run_via.
func startCallbackGatewayVia(t *testing.T, runVia, callbackTimeout string, specs ...fakezapier.ActionSpec) *gateway {
	t.Helper()
	callbackURL := fmt.Sprintf("https://localhost:%d/zapier/actions/callback", httpsPort)
	actions := actionsSite(fmt.Sprintf("run_callback_url %s\n\t\t\tcallback_jwks_url {env.ITEST_CALLBACK_JWKS}\n\t\t\tcallback_issuer %s\n\t\t\tcallback_timeout %s\n\t\t\trun_via %s",
		callbackURL, fakezapier.CallbackIssuer, callbackTimeout, runVia))
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s", gatewayURL, gatewayURL),
		siteExtra:   actions,
		budget:      testBudget,
		extraSites:  fmt.Sprintf("https://localhost:%d {\n\ttls internal\n%s\n}", httpsPort, actions),
		fake: fakezapier.Config{
			CallbackAllowHosts: []string{"localhost"},
			// The test trusts Caddy's internal CA blindly; what is under
			// test is the signature, not the TLS chain.
			CallbackHTTPClient: &http.Client{Transport: validating(&http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}})},
			CallbackRetryBase:  50 * time.Millisecond,
			RateLimits:         &testRateLimits,
		},
		// The JWKS URL is the fake's, known only once it listens.
		preStart: func(fakeURL string) { t.Setenv("ITEST_CALLBACK_JWKS", fakeURL+fakezapier.CallbackJWKSPath) },
	})
	g.fake.RegisterApp(actApp, actAppUUID)
	g.fake.SetActions(actAppUUID, specs...)
	return g
}

// With callbacks a run through /v2/action-runs costs Zapier two calls (the
// fresh action id and the create); it finishes from the callback, never from
// a poll, and runs/{id} answers from what the callback stored. (Through
// stored actions, the default, it costs one: stored_actions_test.go.)
func TestRunFinishesFromCallbackInTwoCalls(t *testing.T) {
	g := startCallbackGatewayVia(t, "action_runs", "10s", fakezapier.ActionSpec{Key: "send_message", Delay: 300 * time.Millisecond})
	g.actConnect("org", "alice")
	g.fake.ResetCounts()

	status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","inputs":{"text":"hi"},"wait":"10s"}`)
	if status != http.StatusOK {
		t.Fatalf("POST run: %d %s", status, body)
	}
	run := actDecodeRun(t, body)
	if run.Status != "success" {
		t.Fatalf("run %+v", run)
	}
	calls := g.fake.CallCounts()
	if calls["GET /v2/action-runs/{id}"] != 0 || calls["POST /v2/action-runs"] != 1 || calls["GET /v2/actions"] != 1 {
		t.Errorf("calls for one run with a callback: %v", calls)
	}
	if status, _, body := g.actDo(http.MethodGet, "runs/"+run.ID, "alice", ""); status != http.StatusOK {
		t.Errorf("runs/{id}: %d %s", status, body)
	}
	if n := g.fake.CallCounts()["GET /v2/action-runs/{id}"]; n != 0 {
		t.Errorf("runs/{id} polled Zapier %d times despite the stored callback", n)
	}

	// A replayed delivery and a forged one change nothing.
	var se *fakezapier.CallbackStatusError
	if err := g.fake.ResendCallback(run.ID); !errors.As(err, &se) || se.Status != http.StatusConflict {
		t.Errorf("replayed callback: %v", err)
	}
	url := fmt.Sprintf("https://localhost:%d/zapier/actions/callback", httpsPort)
	if err := g.fake.SendForgedCallback(url, run.ID, "error"); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("forged callback: %v", err)
	}
	if err := g.fake.SendForgedCallback(url, "arun_unknown", "success"); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("forged callback for an unknown run: %v", err)
	}
	if status, _, body := g.actDo(http.MethodGet, "runs/"+run.ID, "alice", ""); status != http.StatusOK || actDecodeRun(t, body).Status != "success" {
		t.Errorf("after the replay and forgeries: %d %s", status, body)
	}
}

// Without a callback in time the run falls back to polling.
func TestRunFallsBackToPollingWithoutCallback(t *testing.T) {
	g := startCallbackGateway(t, "300ms", fakezapier.ActionSpec{Key: "send_message", Delay: 100 * time.Millisecond})
	g.actConnect("org", "alice")
	g.fake.SetCallbackFault(fakezapier.CallbackDrop)
	status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","wait":"10s"}`)
	if status != http.StatusOK || actDecodeRun(t, body).Status != "success" {
		t.Fatalf("POST run: %d %s", status, body)
	}
	// The run is a stored action's (run_via auto): its polls read the
	// stored action's run.
	if n := g.fake.CallCounts()["GET /actions/v1/stored-actions/{id}/runs/{run_id}"]; n == 0 {
		t.Errorf("no poll after the callback did not come: %v", g.fake.CallCounts())
	}
}

// Idempotency-Key: the same key and body answer the first run again, a
// different body is refused, concurrent duplicates create one run.
func TestRunIdempotencyKey(t *testing.T) {
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "send_message", Delay: -1})
	g.actConnect("org", "alice")
	runBody := `{"app":"` + actApp + `","action":"send_message","inputs":{"text":"once"},"wait":"30s"}`
	do := func(key, body string) (int, http.Header, []byte) {
		return g.do(request{method: http.MethodPost, path: "/zapier/actions/run", tenant: "org", user: "alice", body: body,
			header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {key}}})
	}
	status, _, first := do("k1", runBody)
	if status != http.StatusOK {
		t.Fatalf("first: %d %s", status, first)
	}
	status, hdr, again := do("k1", runBody)
	if status != http.StatusOK || string(again) != string(first) || hdr.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d %s (first %s)", status, again, first)
	}
	if status, _, body := do("k1", `{"app":"`+actApp+`","action":"send_message","inputs":{"text":"other"}}`); status != http.StatusConflict || actErrorCode(t, body) != "idempotency_key_reused" {
		t.Errorf("other body: %d %s", status, body)
	}
	if n := g.fake.ActionStats().RunsCreated; n != 1 {
		t.Errorf("%d runs created for one key", n)
	}

	var wg sync.WaitGroup
	ids := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, body := do("k2", runBody)
			if status == http.StatusOK {
				ids <- actDecodeRun(t, body).ID
			} else {
				t.Errorf("duplicate: %d %s", status, body)
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 || g.fake.ActionStats().RunsCreated != 2 {
		t.Errorf("8 concurrent duplicates gave run ids %v, %d runs in all", seen, g.fake.ActionStats().RunsCreated)
	}
}
