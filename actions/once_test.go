package actions

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
)

// do with an Idempotency-Key.
func (e *actionsEnv) doOnce(key, user, body string) actionsResponse {
	e.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/run", strings.NewReader(body))
	req.RemoteAddr, req.Host = "127.0.0.1:40000", "localhost"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Zapier-Tenant", "org")
	req.Header.Set("X-Zapier-User", user)
	req.Header.Set("Idempotency-Key", key)
	rec := httptest.NewRecorder()
	err := e.h.Serve(rec, req)
	return actionsResponse{rec.Code, rec.Header(), rec.Body.String(), err}
}

func TestIdempotencyKeyRunsOnce(t *testing.T) {
	e := newActionsEnv(t)
	body := `{"app":"SlackCLIAPI","action":"send_message","inputs":{"channel":"#general"}}`
	first := e.doOnce("k1", "alice", body)
	if first.status != http.StatusOK || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v %s", first.status, first.header, first.body)
	}
	again := e.doOnce("k1", "alice", body)
	if again.status != http.StatusOK || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d %v %s", again.status, again.header, again.body)
	}
	if n := len(e.api.callsTo(http.MethodPost, "/v2/action-runs")); n != 1 {
		t.Errorf("%d runs created, want 1", n)
	}
	// Another body under the key is refused; another user's key is theirs.
	if res := e.doOnce("k1", "alice", `{"app":"SlackCLIAPI","action":"find_user"}`); res.status != http.StatusConflict || res.code() != "idempotency_key_reused" {
		t.Errorf("reused key: %d %s", res.status, res.body)
	}
	e.connect("bob", "556")
	if res := e.doOnce("k1", "bob", body); res.status != http.StatusOK || res.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("bob's k1: %d %v %s", res.status, res.header, res.body)
	}
	if res := e.doOnce(strings.Repeat("k", 256), "alice", body); res.status != http.StatusBadRequest {
		t.Errorf("long key: %d %s", res.status, res.body)
	}
	// A request refused before the create call leaves the key free.
	if res := e.doOnce("k2", "alice", `{"app":"SlackCLIAPI","action":"nope"}`); res.code() != "action_not_found" {
		t.Errorf("unknown action: %d %s", res.status, res.body)
	}
	e.api.set(func(s *stubAPI) { s.actions = append(s.actions, "nope:WRITE") })
	if res := e.doOnce("k2", "alice", `{"app":"SlackCLIAPI","action":"nope"}`); res.status != http.StatusOK || res.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("k2 after a refusal: %d %v %s", res.status, res.header, res.body)
	}
}

// A 202 stored under a key answers 200 once the run has ended.
func TestIdempotentReplayOfAnEndedRun(t *testing.T) {
	e := newActionsEnv(t)
	e.api.set(func(s *stubAPI) { s.statuses = []string{"running"} })
	body := `{"app":"SlackCLIAPI","action":"send_message","wait":0}`
	if res := e.doOnce("k", "alice", body); res.status != http.StatusAccepted || res.header.Get("Location") != "runs/run-1" {
		t.Fatalf("first: %d %v %s", res.status, res.header, res.body)
	}
	if res := e.doOnce("k", "alice", body); res.status != http.StatusAccepted || res.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay while running: %d %v %s", res.status, res.header, res.body)
	}
	e.api.set(func(s *stubAPI) { s.statuses = []string{"success"} })
	if res := e.doOnce("k", "alice", body); res.status != http.StatusOK || !strings.Contains(res.body, `"results":[{"id":123}]`) {
		t.Errorf("replay after the end: %d %s", res.status, res.body)
	}
}

func TestFailAnswersOrHandsBack(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	var herr *gateway.HandlerError
	if err := gateway.Fail(w, r, errors.New("disk on fire")); !errors.As(err, &herr) || herr.Status != http.StatusInternalServerError || w.Body.Len() != 0 {
		t.Errorf("internal failure: %v, body %q", err, w.Body.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := gateway.Fail(httptest.NewRecorder(), r.WithContext(ctx), errors.New("x")); !errors.As(err, &herr) || herr.Status != gateway.StatusClientGone {
		t.Errorf("caller gone: %v", err)
	}
	w = httptest.NewRecorder()
	if err := gateway.Fail(w, r, &gatewayErr); err != nil || w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), `"code":"c"`) {
		t.Errorf("gateway error: %v %d %s", err, w.Code, w.Body.String())
	}
}

// ServeHTTP answers a failure it could not answer itself with its status.
func TestServeHTTPWritesHandedBackStatus(t *testing.T) {
	e := newActionsEnv(t)
	e.cfg.Lookup.Store = nil // no store: the lookup fails inside the handler
	e.cfg.Lookup.Configured = func(string) (App, bool, error) { return App{}, false, errors.New("storage down") }
	req := httptest.NewRequest(http.MethodGet, "/actions?app=SlackCLIAPI", nil)
	req.RemoteAddr, req.Host = "127.0.0.1:40000", "localhost"
	req.Header.Set("X-Zapier-Tenant", "org")
	req.Header.Set("X-Zapier-User", "alice")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "storage down") {
		t.Errorf("%d %s", rec.Code, rec.Body.String())
	}
}

var gatewayErr = gateway.Error{Status: http.StatusConflict, Code: "c", Message: "m"}
