package fakezapier

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func inboxBody(t *testing.T, res tokenResult) map[string]any {
	t.Helper()
	if res.body == nil {
		t.Fatalf("not JSON: %d %s", res.status, res.raw)
	}
	return res.body
}

func TestInboxEnsureLeaseAckRelease(t *testing.T) {
	e := newEnv(t)
	conn := e.fz.AddConnection("org", "alice", "app-uuid", "Slack")
	tok := e.fz.IssueAccessToken("org", "alice", "external")
	sub := `{"key":"k1","subscription":{"app_key":"SlackCLIAPI","action_key":"new_message","inputs":{"channel":"C1"},"connection_id":"` + conn + `"}}`

	for _, prefix := range []string{InboxPrefix, InboxPrefixSpec} {
		res := e.api(http.MethodPut, prefix+"/inboxes", tok, sub)
		if res.status != http.StatusCreated && res.status != http.StatusOK {
			t.Fatalf("PUT %s/inboxes: %d %s", prefix, res.status, res.raw)
		}
	}
	infos := e.fz.Inboxes()
	if len(infos) != 1 {
		t.Fatalf("ensure twice made %d inboxes", len(infos))
	}
	id := infos[0].ID
	// Same key, different configuration: 409.
	if res := e.api(http.MethodPut, InboxPrefix+"/inboxes", tok, `{"key":"k1","subscription":{"app_key":"SlackCLIAPI","action_key":"other","inputs":{},"connection_id":"`+conn+`"}}`); res.status != http.StatusConflict {
		t.Fatalf("conflicting ensure: %d %s", res.status, res.raw)
	}
	// Another user's connection is refused; another user cannot see the inbox.
	bob := e.fz.IssueAccessToken("org", "bob", "external")
	if res := e.api(http.MethodPut, InboxPrefix+"/inboxes", bob, sub); res.status != http.StatusBadRequest {
		t.Fatalf("ensure with someone else's connection: %d", res.status)
	}
	if res := e.api(http.MethodGet, InboxPrefix+"/inboxes/"+id, bob, ""); res.status != http.StatusNotFound {
		t.Fatalf("another user's inbox: %d", res.status)
	}
	// Token checks.
	if res := e.api(http.MethodGet, InboxPrefix+"/inboxes", "nope", ""); res.status != http.StatusBadRequest || apiErrorCode(t, res) != "unauthenticated" {
		t.Fatalf("dead token: %d %s", res.status, res.raw)
	}
	if res := e.api(http.MethodGet, InboxPrefix+"/inboxes", e.fz.IssueAccessToken("org", "alice", "zap"), ""); res.status != http.StatusUnauthorized {
		t.Fatalf("token without external: %d", res.status)
	}

	m1 := e.fz.InjectTriggerEvent(id, map[string]any{"text": "one"})
	m2 := e.fz.InjectTriggerEvent(id, map[string]any{"text": "two"})
	res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/lease", tok, `{"lease_seconds":60,"lease_limit":10}`)
	lease := inboxBody(t, res)
	results := lease["results"].([]any)
	if res.status != 200 || len(results) != 2 {
		t.Fatalf("lease: %d %s", res.status, res.raw)
	}
	first := results[0].(map[string]any)
	if first["id"] != m1 || first["payload"].(map[string]any)["text"] != "one" {
		t.Fatalf("first leased message: %v", first)
	}
	leaseID := lease["lease_id"].(string)
	// Nothing left to lease while leased.
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/lease", tok, `{}`); len(inboxBody(t, res)["results"].([]any)) != 0 {
		t.Fatalf("leased twice: %s", res.raw)
	}
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/ack", tok, `{"lease_id":"`+leaseID+`","message_ids":["`+m1+`"]}`); res.status != 200 {
		t.Fatalf("ack: %d %s", res.status, res.raw)
	}
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/release", tok, `{"lease_id":"`+leaseID+`","message_ids":["`+m2+`"]}`); res.status != 200 {
		t.Fatalf("release: %d %s", res.status, res.raw)
	}
	// Acking again, or after the lease, is lease_expired.
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/ack", tok, `{"lease_id":"`+leaseID+`","message_ids":["`+m1+`"]}`); res.status != 400 || apiErrorCode(t, res) != "lease_expired" {
		t.Fatalf("second ack: %d %s", res.status, res.raw)
	}
	msgs := e.fz.InboxMessages(id)
	if msgs[0].Status != "acked" || msgs[0].Acks != 1 || msgs[1].Status != "available" || msgs[1].LeaseCount != 1 {
		t.Fatalf("messages: %+v", msgs)
	}

	// A lease that runs out returns the message, then quarantine at the limit.
	e.fz.SetInboxLeaseLimit(2)
	res = e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/lease", tok, `{"lease_seconds":1}`)
	expired := inboxBody(t, res)["lease_id"].(string)
	e.advance(2 * time.Second)
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/ack", tok, `{"lease_id":"`+expired+`"}`); res.status != 400 || apiErrorCode(t, res) != "lease_expired" {
		t.Fatalf("ack after expiry: %d %s", res.status, res.raw)
	}
	if msgs := e.fz.InboxMessages(id); msgs[1].Status != "quarantined" || msgs[1].LeaseCount != 2 {
		t.Fatalf("after the lease limit: %+v", msgs[1])
	}

	// Paused and drained: 409 with inbox_attributes; events are dropped.
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/pause", tok, ""); res.status != 200 || inboxBody(t, res)["paused_reason"] != "user" {
		t.Fatalf("pause: %d %s", res.status, res.raw)
	}
	if e.fz.InjectTriggerEvent(id, map[string]any{"text": "dropped"}) != "" {
		t.Fatal("event queued on a paused inbox")
	}
	res = e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/messages/lease", tok, `{}`)
	var conflict struct {
		Detail          string
		InboxAttributes struct{ Status, PausedReason string } `json:"inbox_attributes"`
	}
	_ = json.Unmarshal([]byte(res.raw), &conflict)
	if res.status != http.StatusConflict || conflict.InboxAttributes.Status != "paused" {
		t.Fatalf("lease on a paused drained inbox: %d %s", res.status, res.raw)
	}
	if res := e.api(http.MethodPost, InboxPrefix+"/inboxes/"+id+"/resume", tok, ""); res.status != 200 || inboxBody(t, res)["status"] != "active" {
		t.Fatalf("resume: %d %s", res.status, res.raw)
	}
	if res := e.api(http.MethodDelete, InboxPrefix+"/inboxes/"+id, tok, ""); res.status != 200 {
		t.Fatalf("delete: %d", res.status)
	}
	if res := e.api(http.MethodGet, InboxPrefix+"/inboxes/"+id, tok, ""); res.status != 404 {
		t.Fatalf("deleted inbox: %d", res.status)
	}
}

func TestInboxNotification(t *testing.T) {
	e := newEnv(t)
	got := make(chan string, 4)
	recv := newTestReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		var v struct {
			InboxID string `json:"inbox_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&v)
		got <- v.InboxID
	})
	tok := e.fz.IssueAccessToken("org", "alice", "external")
	res := e.api(http.MethodPut, InboxPrefix+"/inboxes", tok, `{"key":"k","notification_url":"`+recv+`","subscription":{"app_key":"A","action_key":"t","inputs":{},"connection_id":null}}`)
	id := inboxBody(t, res)["id"].(string)
	e.fz.InjectTriggerEvent(id, map[string]any{"n": 1})
	if v := <-got; v != id {
		t.Fatalf("notified inbox %q, want %q", v, id)
	}
	e.fz.WaitInboxNotifications()
}

func newTestReceiver(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
