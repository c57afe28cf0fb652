package fakezapier

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The demo hook fires one event in each active inbox of the identity it
// names, and in nobody else's; the fake's own routes do not serve it.
func TestDemoHooksFireTheUsersActiveInboxes(t *testing.T) {
	e := newEnv(t)
	mk := func(user, key string) string {
		conn := e.fz.AddConnection("org", user, "app-uuid", "Slack")
		tok := e.fz.IssueAccessToken("org", user, "external")
		res := e.api(http.MethodPut, InboxPrefix+"/inboxes", tok,
			`{"key":"`+key+`","subscription":{"app_key":"SlackCLIAPI","action_key":"new_message","inputs":{},"connection_id":"`+conn+`"}}`)
		if res.status != http.StatusCreated {
			t.Fatalf("PUT inbox: %d %s", res.status, res.raw)
		}
		for _, ib := range e.fz.Inboxes() {
			if ib.Key == key {
				return ib.ID
			}
		}
		t.Fatal("no inbox")
		return ""
	}
	a1, a2, paused, bob := mk("alice", "a1"), mk("alice", "a2"), mk("alice", "a3"), mk("bob", "b1")
	e.fz.PauseInbox(paused, "user")

	hooks := httptest.NewServer(e.fz.DemoHooks())
	defer hooks.Close()
	resp, err := http.Post(hooks.URL+DemoHooksPath, "application/json", strings.NewReader(`{"tenant":"org","user":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Fired []struct{ InboxID, MessageID string } `json:"fired"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Fired) != 2 {
		t.Fatalf("fire: %d %+v %v", resp.StatusCode, out, err)
	}
	for id, want := range map[string]int{a1: 1, a2: 1, paused: 0, bob: 0} {
		if got := len(e.fz.InboxMessages(id)); got != want {
			t.Errorf("inbox %s has %d messages, want %d", id, got, want)
		}
	}
	if resp, err := http.Post(hooks.URL+DemoHooksPath, "application/json", strings.NewReader(`{}`)); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no identity: %v %v", resp.StatusCode, err)
	}
	// Not on the fake's own handler.
	rec := httptest.NewRecorder()
	e.fz.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, DemoHooksPath, strings.NewReader(`{"tenant":"org","user":"alice"}`)))
	if rec.Code == http.StatusOK || len(e.fz.InboxMessages(a1)) != 1 {
		t.Errorf("the fake itself serves the demo hook: %d", rec.Code)
	}
}
