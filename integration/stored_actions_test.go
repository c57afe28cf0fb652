package integration

import (
	"net/http"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// storedOf returns the fake's stored actions of (org, user).
func storedOf(f *fakezapier.Server, user string) []fakezapier.StoredAction {
	var out []fakezapier.StoredAction
	for _, sa := range f.StoredActions() {
		if sa.Tenant == "org" && sa.User == user {
			out = append(out, sa)
		}
	}
	return out
}

// With run_via auto (the default) and callbacks, the same action run ten
// times costs Zapier one create and ten runs: no action lookup, no
// /v2/action-runs, no poll. An action Zapier will not store (not a core
// action) falls back to /v2/action-runs and the refusal is not paid for
// again; a stored action deleted at Zapier is created again; disconnecting
// the connection and offboarding the user delete the stored actions at
// Zapier.
func TestStoredActionsOneCallPerRun(t *testing.T) {
	g := startCallbackGateway(t, "10s",
		fakezapier.ActionSpec{Key: "send_message", Delay: 100 * time.Millisecond},
		fakezapier.ActionSpec{Key: "custom_send", Delay: 100 * time.Millisecond, External: true})
	g.actConnect("org", "alice")
	g.fake.ResetCounts()

	run := func(user, action string) actRun {
		t.Helper()
		status, _, body := g.actDo(http.MethodPost, "run", user, `{"app":"`+actApp+`","action":"`+action+`","action_type":"WRITE","inputs":{"text":"hi"},"wait":"10s"}`)
		if status != http.StatusOK {
			t.Fatalf("POST run %s as %s: %d %s", action, user, status, body)
		}
		r := actDecodeRun(t, body)
		if r.Status != "success" {
			t.Fatalf("run %+v", r)
		}
		return r
	}
	var last actRun
	for range 10 {
		last = run("alice", "send_message")
	}
	calls := g.fake.CallCounts()
	if calls["POST /actions/v1/stored-actions"] != 1 || calls["POST /actions/v1/stored-actions/{id}/run"] != 10 ||
		calls["GET /v2/actions"] != 0 || calls["POST /v2/action-runs"] != 0 ||
		calls["GET /actions/v1/stored-actions/{id}/runs/{run_id}"] != 0 || calls["GET /v2/action-runs/{id}"] != 0 {
		t.Errorf("calls for ten runs of one action: %v", calls)
	}
	// runs/{id} answers from the callback, without a call.
	if status, _, body := g.actDo(http.MethodGet, "runs/"+last.ID, "alice", ""); status != http.StatusOK {
		t.Errorf("runs/{id}: %d %s", status, body)
	}
	if len(storedOf(g.fake, "alice")) != 1 {
		t.Fatalf("stored actions of alice: %+v", storedOf(g.fake, "alice"))
	}

	// Not a core action: refused once, then /v2/action-runs without asking again.
	g.fake.ResetCounts()
	run("alice", "custom_send")
	run("alice", "custom_send")
	calls = g.fake.CallCounts()
	if calls["POST /actions/v1/stored-actions"] != 1 || calls["POST /v2/action-runs"] != 2 || g.fake.StoredActionStats().Refused != 1 {
		t.Errorf("calls for two runs of a non-core action: %v (%+v)", calls, g.fake.StoredActionStats())
	}

	// Deleted at Zapier: the next run creates it again.
	g.fake.ResetCounts()
	if !g.fake.DeleteStoredAction(storedOf(g.fake, "alice")[0].ID) {
		t.Fatal("no stored action to delete")
	}
	run("alice", "send_message")
	calls = g.fake.CallCounts()
	if calls["POST /actions/v1/stored-actions"] != 1 || calls["POST /actions/v1/stored-actions/{id}/run"] != 2 || len(storedOf(g.fake, "alice")) != 1 {
		t.Errorf("calls for a run of a stored action deleted at Zapier: %v", calls)
	}

	// Disconnecting deletes the connection's stored actions at Zapier.
	status, _, body := g.do(request{method: http.MethodDelete, path: "/zapier/connect/connections/" + actApp, tenant: "org", user: "alice"})
	if status != http.StatusOK {
		t.Fatalf("disconnect: %d %s", status, body)
	}
	if left := storedOf(g.fake, "alice"); len(left) != 0 {
		t.Errorf("stored actions left after the disconnect: %+v", left)
	}

	// Offboarding deletes them too.
	g.actConnect("org", "bob")
	run("bob", "send_message")
	if len(storedOf(g.fake, "bob")) != 1 {
		t.Fatalf("stored actions of bob: %+v", storedOf(g.fake, "bob"))
	}
	status, body = adminJSON(t, adminAddr, http.MethodPost, "/zapier/forget", map[string]any{"tenant": "org", "user": "bob"})
	if status != http.StatusOK {
		t.Fatalf("forget bob: %d %s", status, body)
	}
	if left := storedOf(g.fake, "bob"); len(left) != 0 {
		t.Errorf("stored actions left after offboarding: %+v", left)
	}
}

// run_via action_runs keeps the /v2/action-runs path: a fresh action id and
// a create per run, no stored action.
func TestRunViaActionRunsKeepsTheOldPath(t *testing.T) {
	g := startGateway(t, gatewayOptions{
		zapierExtra: "callback_url " + gatewayURL + "/zapier/connect/callback\n\t\treturn_origins " + gatewayURL,
		siteExtra:   actionsSite("run_via action_runs"),
	})
	g.fake.RegisterApp(actApp, actAppUUID)
	g.fake.SetActions(actAppUUID, fakezapier.ActionSpec{Key: "send_message", Delay: -1})
	g.actConnect("org", "alice")
	g.fake.ResetCounts()
	for range 2 {
		status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message","inputs":{"text":"hi"}}`)
		if status != http.StatusOK {
			t.Fatalf("POST run: %d %s", status, body)
		}
	}
	calls := g.fake.CallCounts()
	if calls["GET /v2/actions"] != 2 || calls["POST /v2/action-runs"] != 2 || calls["POST /actions/v1/stored-actions"] != 0 || len(g.fake.StoredActions()) != 0 {
		t.Errorf("calls for two runs with run_via action_runs: %v", calls)
	}
}
