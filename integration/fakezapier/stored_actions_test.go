package fakezapier

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestStoredActionLifecycle(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	alice := e.exchange(k, "org", "alice")
	bob := e.exchange(k, "org", "bob")
	conn := e.fz.AddConnection("org", "alice", testApp, "Alice's Slack")
	bobConn := e.fz.AddConnection("org", "bob", testApp, "Bob's Slack")
	otherApp := e.fz.AddConnection("org", "alice", "other-app", "Other")
	e.fz.SetActions(testApp, ActionSpec{Key: "send", Delay: -1}, ActionSpec{Key: "custom", External: true})
	create := func(typ, key, c string) string {
		return fmt.Sprintf(`{"data":{"selected_api":%q,"action_type":%q,"action_key":%q,"connection_id":%q}}`, testApp+"@1.0.0", typ, key, c)
	}

	// Refusals: the triple, a core action, the caller's connection of that app.
	for name, body := range map[string]string{
		"no selected_api":   `{"data":{"action_type":"write","action_key":"send","connection_id":"` + conn + `"}}`,
		"no action_type":    `{"data":{"selected_api":"` + testApp + `","action_key":"send","connection_id":"` + conn + `"}}`,
		"no action_key":     `{"data":{"selected_api":"` + testApp + `","action_type":"write","connection_id":"` + conn + `"}}`,
		"action_id instead": `{"data":{"action_id":"core:1","connection_id":"` + conn + `"}}`,
		"upper-case type":   create("WRITE", "send", conn),
		"unknown action":    create("write", "nope", conn),
		"non-core action":   create("write", "custom", conn),
		"bob's connection":  create("write", "send", bobConn),
		"other app":         create("write", "send", otherApp),
		"no connection":     `{"data":{"selected_api":"` + testApp + `","action_type":"write","action_key":"send"}}`,
		"garbage":           `{"data":`,
	} {
		if r := e.api(http.MethodPost, "/actions/v1/stored-actions", alice, body); r.status != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d %s", name, r.status, r.raw)
		}
	}
	if st := e.fz.StoredActionStats(); st.Refused != 11 || st.Created != 0 {
		t.Errorf("stats after refusals %+v", st)
	}

	res := e.api(http.MethodPost, "/actions/v1/stored-actions", alice, create("write", "send", conn))
	var sa struct{ Type, ID string }
	if err := json.Unmarshal([]byte(res.raw), &sa); err != nil || res.status != http.StatusCreated || sa.Type != "stored_action" || len(sa.ID) != 36 {
		t.Fatalf("create: HTTP %d %s", res.status, res.raw)
	}
	base := "/actions/v1/stored-actions/" + sa.ID

	// Run: one call, a run id; bob does not see alice's stored action.
	res = e.api(http.MethodPost, base+"/run", alice, `{"data":{"inputs":{"text":"hi"}}}`)
	var run struct{ Data struct{ Type, ID string } }
	if err := json.Unmarshal([]byte(res.raw), &run); err != nil || res.status != http.StatusAccepted || run.Data.Type != "run" {
		t.Fatalf("run: HTTP %d %s", res.status, res.raw)
	}
	for name, r := range map[string]tokenResult{
		"bob runs":     e.api(http.MethodPost, base+"/run", bob, `{"data":{"inputs":{}}}`),
		"bob reads":    e.api(http.MethodGet, base+"/runs/"+run.Data.ID, bob, ""),
		"bob gets":     e.api(http.MethodGet, base, bob, ""),
		"bob deletes":  e.api(http.MethodDelete, base, bob, ""),
		"v2 poll":      e.api(http.MethodGet, "/v2/action-runs/"+run.Data.ID, alice, ""),
		"unknown":      e.api(http.MethodPost, "/actions/v1/stored-actions/nope/run", alice, `{"data":{}}`),
		"another's id": e.api(http.MethodGet, "/actions/v1/stored-actions/nope/runs/"+run.Data.ID, alice, ""),
	} {
		if r.status != http.StatusNotFound {
			t.Errorf("%s: HTTP %d %s", name, r.status, r.raw)
		}
	}
	if r := e.api(http.MethodPost, base+"/run", alice, `{"data":{"inputs":{}},"callback_url":"https://example.com/cb"}`); r.status != http.StatusBadRequest {
		t.Errorf("a callback_url outside data: HTTP %d %s", r.status, r.raw)
	}
	res = e.api(http.MethodGet, base+"/runs/"+run.Data.ID, alice, "")
	if res.status != http.StatusOK || !strings.Contains(res.raw, `"status":"success"`) || !strings.Contains(res.raw, `"next_page":"0"`) || !strings.Contains(res.raw, `"id":"`+run.Data.ID+`"`) {
		t.Errorf("read run: HTTP %d %s", res.status, res.raw)
	}
	if runs := e.fz.ActionRuns(); len(runs) != 1 || runs[0].Authentication != conn || runs[0].ActionID != "stored:"+sa.ID {
		t.Errorf("ActionRuns %+v", runs)
	}

	// A connection gone since the create: the run is refused.
	e.fz.SetConnectionExpired(conn, true)
	if r := e.api(http.MethodPost, base+"/run", alice, `{"data":{"inputs":{}}}`); r.status != http.StatusBadRequest {
		t.Errorf("run with an expired connection: HTTP %d %s", r.status, r.raw)
	}
	e.fz.SetConnectionExpired(conn, false)

	// Delete: 204, then gone.
	if r := e.api(http.MethodDelete, base, alice, ""); r.status != http.StatusNoContent {
		t.Errorf("delete: HTTP %d %s", r.status, r.raw)
	}
	if r := e.api(http.MethodPost, base+"/run", alice, `{"data":{"inputs":{}}}`); r.status != http.StatusNotFound {
		t.Errorf("run after delete: HTTP %d %s", r.status, r.raw)
	}
	counts := e.fz.CallCounts()
	if counts["POST /actions/v1/stored-actions"] != 12 || counts["DELETE /actions/v1/stored-actions/{id}"] != 2 || counts["GET /actions/v1/stored-actions/{id}/runs/{run_id}"] != 3 {
		t.Errorf("call counts %v", counts)
	}
}
