package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The per-user subscription cap and the notify route's per-address limit.
func TestTriggerSubscriptionCapAndNotifyLimit(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc, "max_subscriptions_per_user 1", "notify_rate_limit 3 1m")
	g.actConnect("org", "alice")
	status, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	if status != http.StatusCreated {
		t.Fatalf("PUT s1: %d %s", status, body)
	}
	status, body = g.trgDo(http.MethodPut, "subscriptions/s2", "alice", trgSub)
	var env struct{ Error struct{ Code string } }
	if err := json.Unmarshal(body, &env); status != http.StatusConflict || err != nil || env.Error.Code != "subscription_limit" {
		t.Fatalf("PUT s2 past the cap: %d %s", status, body)
	}
	if status, _ := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub); status != http.StatusOK {
		t.Fatalf("PUT s1 again: %d", status)
	}
	if len(g.fake.Inboxes()) != 1 {
		t.Fatalf("inboxes at Zapier: %d", len(g.fake.Inboxes()))
	}

	u, err := url.Parse(g.fake.Inboxes()[0].NotificationURL)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	var retryAfter string
	for range 5 {
		status, hdr, _, err := send(request{method: http.MethodPost, path: "/zapier/triggers/notify?" + u.RawQuery, body: `{"inbox_id":"nope"}`})
		if err != nil {
			t.Fatal(err)
		}
		codes[status]++
		if status == http.StatusTooManyRequests {
			retryAfter = hdr.Get("Retry-After")
		}
	}
	if codes[http.StatusOK] != 3 || codes[http.StatusTooManyRequests] != 2 || retryAfter == "" {
		t.Fatalf("5 notifications with a limit of 3: %v (Retry-After %q)", codes, retryAfter)
	}
}

// The test flag of a forwarded connection webhook comes from the signed
// body only, never from the unsigned webhook-test header.
func TestConnectionWebhookTestFlagFromSignedBodyOnly(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc)
	conn := g.actConnect("org", "alice")
	hook := gatewayURL + "/zapier/triggers/connection-webhooks"
	expires := time.Now().Add(72 * time.Hour)
	// A genuine delivery relayed with webhook-test: true added.
	if status, _, err := g.fake.SendConnectionWebhook(fakezapier.ConnectionWebhook{URL: hook, Secret: trgConnSecret, Test: true,
		Body: fakezapier.ConnectionExpiryBody(conn, actAppUUID, expires)}); err != nil || status != http.StatusOK {
		t.Fatalf("send: %d %v", status, err)
	}
	if d := rc.next(t); d.Body["test"] == true {
		t.Fatalf("the unsigned header made a real event a test: %v", d.Body)
	}
	// A delivery whose signed body says it is a test.
	var body map[string]any
	_ = json.Unmarshal(fakezapier.ConnectionExpiryBody(conn, actAppUUID, expires), &body)
	body["test"] = true
	raw, _ := json.Marshal(body)
	if status, _, err := g.fake.SendConnectionWebhook(fakezapier.ConnectionWebhook{URL: hook, Secret: trgConnSecret, Body: raw}); err != nil || status != http.StatusOK {
		t.Fatalf("send: %d %v", status, err)
	}
	if d := rc.next(t); d.Body["test"] != true || !strings.HasPrefix(d.ID, "msg_") {
		t.Fatalf("a signed test delivery: %s %v", d.ID, d.Body)
	}
}
