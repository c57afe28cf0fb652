package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The partner's signing secret for events, and Zapier's for connection
// webhooks (both whsec_, as the Standard Webhooks format has them).
var (
	trgEventsSecret = fakezapier.NewWebhookSecret()
	trgConnSecret   = fakezapier.NewWebhookSecret()
)

// trgDelivery is one event the partner's receiver accepted or refused,
// after the reference Standard Webhooks library verified it.
type trgDelivery struct {
	ID   string
	Body map[string]any
}

// trgReceiver is the partner's deliver_to endpoint. It verifies every
// POST with the reference library (not the gateway's webhooksig), answers
// status(n) to the n-th, and hands accepted deliveries to ch.
type trgReceiver struct {
	url string
	// lifecycle keeps connection.created/deleted events; otherwise they
	// are accepted and dropped (every test stores a connection first).
	lifecycle bool
	mu        sync.Mutex
	all       []trgDelivery
	status    func(n int) int
	ch        chan trgDelivery
}

func newTrgReceiver(t *testing.T) *trgReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(trgEventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &trgReceiver{status: func(int) int { return http.StatusOK }, ch: make(chan trgDelivery, 2000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("the reference Standard Webhooks library refused a delivery: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		d := trgDelivery{ID: r.Header.Get("webhook-id")}
		if err := json.Unmarshal(body, &d.Body); err != nil {
			t.Errorf("delivery body: %v", err)
		}
		rc.mu.Lock()
		if typ := d.Body["type"]; !rc.lifecycle && (typ == "connection.created" || typ == "connection.deleted") {
			rc.mu.Unlock()
			w.WriteHeader(http.StatusOK)
			return
		}
		rc.all = append(rc.all, d)
		status := rc.status(len(rc.all))
		rc.mu.Unlock()
		w.WriteHeader(status)
		if status/100 == 2 {
			rc.ch <- d
		}
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL + "/zapier/events"
	return rc
}

func (rc *trgReceiver) setStatus(f func(n int) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status = f
}

func (rc *trgReceiver) deliveries() []trgDelivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]trgDelivery(nil), rc.all...)
}

// next waits for the next accepted delivery; the timeout only guards
// against a hang.
func (rc *trgReceiver) next(t *testing.T) trgDelivery {
	t.Helper()
	select {
	case d := <-rc.ch:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery reached the partner")
		return trgDelivery{}
	}
}

// startTriggersGateway mounts zapier_connect (to store connections) and
// zapier_triggers delivering to rc, with Zapier's notifications pointed at
// the gateway's notify route and fast retries.
func startTriggersGateway(t *testing.T, rc *trgReceiver, extra ...string) *gateway {
	t.Helper()
	return startTriggersGatewayNotify(t, rc, gatewayURL+"/zapier/triggers/notify", extra...)
}

// startTriggersGatewayNotify is startTriggersGateway with another
// notification_url ("" for none).
func startTriggersGatewayNotify(t *testing.T, rc *trgReceiver, notifyURL string, extra ...string) *gateway {
	t.Helper()
	if notifyURL != "" {
		extra = append(extra, "notification_url "+notifyURL)
	}
	site := fmt.Sprintf(`
	handle_path /zapier/connect/* {
		zapier_connect {
			app %[1]s %[2]s
		}
	}
	handle_path /zapier/triggers/* {
		zapier_triggers {
			app %[1]s %[2]s
			deliver_to %[3]s
			signing_secret %[4]s
			connection_webhook_secret %[5]s
			retry_base 10ms
			retry_max 20ms
			drain_interval 1h
			%[6]s
		}
	}
`, actApp, actAppUUID, rc.url, trgEventsSecret, trgConnSecret, strings.Join(extra, "\n\t\t\t"))
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s", gatewayURL, gatewayURL),
		siteExtra:   site,
	})
	g.fake.RegisterApp(actApp, actAppUUID)
	return g
}

func (g *gateway) trgDo(method, route, user, body string) (int, []byte) {
	g.t.Helper()
	r := request{method: method, path: "/zapier/triggers/" + route, tenant: "org", user: user, body: body}
	if body != "" {
		r.header = http.Header{"Content-Type": {"application/json"}}
	}
	status, _, b := g.do(r)
	return status, b
}

type trgSubscription struct {
	Name, App, Trigger, Status string
	InboxID                    string `json:"inbox_id"`
	ConnectionID               string `json:"connection_id"`
	PausedReason               string `json:"paused_reason"`
	Counts                     struct {
		Delivered, DeadLettered int64
	}
}

func trgDecode(t *testing.T, body []byte) trgSubscription {
	t.Helper()
	var v struct{ Subscription trgSubscription }
	if err := json.Unmarshal(body, &v); err != nil || v.Subscription.InboxID == "" {
		t.Fatalf("not a subscription: %s", body)
	}
	return v.Subscription
}

const trgSub = `{"app":"SlackCLIAPI","trigger":"new_message","inputs":{"channel":"C1"}}`

func TestTriggerDeliveryEndToEnd(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc)
	conn := g.actConnect("org", "alice")

	// Identity as elsewhere; no stored connection is a 409.
	if status, _ := g.trgDo(http.MethodPut, "subscriptions/slack-new", "", trgSub); status != http.StatusUnauthorized {
		t.Fatalf("no identity: %d", status)
	}
	if status, body := g.trgDo(http.MethodPut, "subscriptions/slack-new", "bob", trgSub); status != http.StatusConflict || actErrorCode(t, body) != "connection_missing" {
		t.Fatalf("bob without a connection: %d %s", status, body)
	}

	status, body := g.trgDo(http.MethodPut, "subscriptions/slack-new", "alice", trgSub)
	if status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", status, body)
	}
	sub := trgDecode(t, body)
	if sub.ConnectionID != conn || sub.Status != "active" || sub.App != actApp {
		t.Fatalf("subscription: %+v", sub)
	}
	if status, _ := g.trgDo(http.MethodPut, "subscriptions/slack-new", "alice", trgSub); status != http.StatusOK {
		t.Fatalf("the same PUT again: %d", status)
	}
	if status, body := g.trgDo(http.MethodPut, "subscriptions/slack-new", "alice", `{"app":"SlackCLIAPI","trigger":"new_reaction"}`); status != http.StatusConflict || actErrorCode(t, body) != "subscription_conflict" {
		t.Fatalf("another configuration: %d %s", status, body)
	}
	inboxes := g.fake.Inboxes()
	if len(inboxes) != 1 || inboxes[0].ID != sub.InboxID || inboxes[0].Tenant != "org" || inboxes[0].User != "alice" ||
		*inboxes[0].Subscription.ConnectionID != conn || !strings.HasPrefix(inboxes[0].NotificationURL, gatewayURL+"/zapier/triggers/notify?inbox_token=") {
		t.Fatalf("inboxes at Zapier: %+v", inboxes)
	}

	// Zapier queues events and notifies the gateway, which delivers them.
	var ids []string
	for i := range 5 {
		ids = append(ids, g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"text": fmt.Sprint("hello ", i)}))
	}
	got := map[string]bool{}
	for range ids {
		d := rc.next(t)
		if d.Body["type"] != "trigger.event" || d.Body["message_id"] != d.ID || d.Body["user"] != "alice" || d.Body["tenant"] != "org" ||
			d.Body["subscription"] != "slack-new" || d.Body["trigger"] != "new_message" {
			t.Fatalf("delivery: %s %v", d.ID, d.Body)
		}
		got[d.ID] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("message %s not delivered", id)
		}
	}
	eventually(t, 10*time.Second, "every message acked at Zapier", func() bool {
		for _, m := range g.fake.InboxMessages(sub.InboxID) {
			if m.Status != "acked" {
				return false
			}
		}
		return true
	})
	for _, m := range g.fake.InboxMessages(sub.InboxID) {
		if m.Acks != 1 || m.LeaseCount != 1 {
			t.Errorf("message %s: %+v", m.ID, m)
		}
	}
	if n := len(rc.deliveries()); n != len(ids) {
		t.Errorf("the partner got %d POSTs for %d messages", n, len(ids))
	}
	// Counted once the ack returned, a moment after Zapier marked it.
	eventually(t, 10*time.Second, "five deliveries counted", func() bool {
		status, body := g.trgDo(http.MethodGet, "subscriptions/slack-new", "alice", "")
		return status == http.StatusOK && trgDecode(t, body).Counts.Delivered == 5
	})
	if status, _ := g.trgDo(http.MethodGet, "subscriptions/slack-new", "bob", ""); status != http.StatusNotFound {
		t.Fatalf("bob reads alice's subscription: %d", status)
	}
	if v := scrapeMetric(t, "caddy_zapier_trigger_deliveries_total", `outcome="delivered"`); v < 5 {
		t.Errorf("trigger_deliveries_total{delivered} = %v", v)
	}
	// An unknown inbox id on notify, with a token the gateway minted, is
	// acknowledged and ignored; without a genuine token it is refused
	// before any lookup.
	notifyURL, err := url.Parse(g.fake.Inboxes()[0].NotificationURL)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _, _ := send(request{method: http.MethodPost, path: "/zapier/triggers/notify?" + notifyURL.RawQuery, body: `{"inbox_id":"nope","received_message_count":99}`}); status != http.StatusOK {
		t.Fatalf("notify with an unknown inbox: %d", status)
	}
	for _, q := range []string{"", "?inbox_token=" + strings.Repeat("ab", 32)} {
		if status, _, _, _ := send(request{method: http.MethodPost, path: "/zapier/triggers/notify" + q, body: `{"inbox_id":"nope"}`}); status != http.StatusBadRequest {
			t.Fatalf("notify with token %q: %d", q, status)
		}
	}

	// Pause through the gateway, resume, delete.
	if status, body := g.trgDo(http.MethodPost, "subscriptions/slack-new/pause", "alice", ""); status != http.StatusOK || trgDecode(t, body).Status != "paused" {
		t.Fatalf("pause: %d %s", status, body)
	}
	if g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"text": "dropped"}) != "" {
		t.Fatal("Zapier queued an event on a paused inbox")
	}
	if status, body := g.trgDo(http.MethodPost, "subscriptions/slack-new/resume", "alice", ""); status != http.StatusOK || trgDecode(t, body).Status != "active" {
		t.Fatalf("resume: %d %s", status, body)
	}
	if status, _ := g.trgDo(http.MethodDelete, "subscriptions/slack-new", "alice", ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	if len(g.fake.Inboxes()) != 0 {
		t.Fatal("the inbox survived DELETE")
	}
	if status, body := g.trgDo(http.MethodGet, "subscriptions", "alice", ""); status != http.StatusOK || !strings.Contains(string(body), `"data":[]`) {
		t.Fatalf("list after delete: %d %s", status, body)
	}
}

func TestTriggerPartnerFailsThenRecovers(t *testing.T) {
	rc := newTrgReceiver(t)
	rc.setStatus(func(n int) int {
		if n <= 4 { // more than one lease's attempts
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	g := startTriggersGateway(t, rc)
	g.actConnect("org", "alice")
	status, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	if status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", status, body)
	}
	sub := trgDecode(t, body)
	ids := []string{g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1}), g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 2})}
	seen := map[string]bool{}
	for len(seen) < len(ids) {
		seen[rc.next(t).ID] = true
	}
	eventually(t, 10*time.Second, "both messages acked", func() bool {
		msgs := g.fake.InboxMessages(sub.InboxID)
		return len(msgs) == 2 && msgs[0].Status == "acked" && msgs[1].Status == "acked"
	})
	var first []trgDelivery
	for _, d := range rc.deliveries() {
		if d.Body["message_id"] == ids[0] {
			first = append(first, d)
		}
	}
	if len(first) != 5 {
		t.Fatalf("the first message was POSTed %d times, want 5 (4 refused, 1 accepted)", len(first))
	}
	for _, d := range first {
		if d.ID != ids[0] {
			t.Fatalf("webhook-id %q changed across retries (want %q)", d.ID, ids[0])
		}
	}
	if v := scrapeMetric(t, "caddy_zapier_trigger_deliveries_total", `outcome="failed"`); v < 4 {
		t.Errorf("trigger_deliveries_total{failed} = %v", v)
	}
}

func TestTriggerPausedByZapier(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc)
	g.actConnect("org", "alice")
	_, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	sub := trgDecode(t, body)
	g.fake.PauseInbox(sub.InboxID, "authentication")
	// Zapier sends no notification for a pause; any wake-up finds it. A
	// notification without the inbox's token is refused.
	notify := func(url string, want int) {
		t.Helper()
		resp, err := plainClient.Post(url, "application/json", strings.NewReader(`{"inbox_id":"`+sub.InboxID+`"}`))
		if err != nil || resp.StatusCode != want {
			t.Fatalf("notify: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	before := scrapeMetric(t, "caddy_zapier_trigger_notifications_total", `known="token_invalid"`)
	notify(gatewayURL+"/zapier/triggers/notify", http.StatusBadRequest)
	if after := scrapeMetric(t, "caddy_zapier_trigger_notifications_total", `known="token_invalid"`); after != before+1 {
		t.Fatalf("a notification without the inbox token was not refused (%v → %v)", before, after)
	}
	notify(g.fake.Inboxes()[0].NotificationURL, http.StatusOK)
	d := rc.next(t)
	if d.Body["type"] != "trigger.paused" || d.Body["reason"] != "authentication" || d.Body["reconnect"] != true {
		t.Fatalf("pause notice: %v", d.Body)
	}
	_, body = g.trgDo(http.MethodGet, "subscriptions/s1", "alice", "")
	if s := trgDecode(t, body); s.Status != "paused" || s.PausedReason != "authentication" {
		t.Fatalf("subscription: %+v", s)
	}
}

func TestTriggerConnectionWebhooks(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc)
	conn := g.actConnect("org", "alice")
	hook := gatewayURL + "/zapier/triggers/connection-webhooks"
	expires := time.Now().Add(72 * time.Hour)
	send := func(d fakezapier.ConnectionWebhook) (int, string) {
		t.Helper()
		d.URL = hook
		if d.Secret == "" {
			d.Secret = trgConnSecret
		}
		if d.Body == nil {
			d.Body = fakezapier.ConnectionExpiryBody(conn, actAppUUID, expires)
		}
		status, id, err := g.fake.SendConnectionWebhook(d)
		if err != nil {
			t.Fatal(err)
		}
		return status, id
	}
	// Forged and stale deliveries are refused.
	if status, _ := send(fakezapier.ConnectionWebhook{Secret: fakezapier.NewWebhookSecret()}); status != http.StatusUnauthorized {
		t.Fatalf("forged: %d", status)
	}
	if status, _ := send(fakezapier.ConnectionWebhook{Timestamp: time.Now().Add(-10 * time.Minute)}); status != http.StatusUnauthorized {
		t.Fatalf("stale: %d", status)
	}
	// A genuine one is forwarded once, under Zapier's webhook-id.
	status, id := send(fakezapier.ConnectionWebhook{})
	if status != http.StatusOK {
		t.Fatalf("genuine: %d", status)
	}
	d := rc.next(t)
	if d.ID != id || d.Body["type"] != "connection.expiring" || d.Body["tenant"] != "org" || d.Body["user"] != "alice" ||
		d.Body["app"] != actApp || d.Body["connection_id"] != conn || d.Body["expires_at"] != expires.UTC().Format(time.RFC3339) {
		t.Fatalf("forwarded: %s %v", d.ID, d.Body)
	}
	// Zapier's retry of the same delivery is acknowledged, not forwarded again.
	if status, _ := send(fakezapier.ConnectionWebhook{ID: id}); status != http.StatusOK {
		t.Fatalf("replay: %d", status)
	}
	// An unknown connection is acknowledged and not forwarded.
	if status, _ := send(fakezapier.ConnectionWebhook{Body: fakezapier.ConnectionExpiryBody("999999999", actAppUUID, expires)}); status != http.StatusOK {
		t.Fatalf("unknown connection: %d", status)
	}
	if n := len(rc.deliveries()); n != 1 {
		t.Fatalf("the partner got %d connection events, want 1", n)
	}
	for outcome, want := range map[string]float64{"forwarded": 1, "duplicate": 1, "unknown_connection": 1, "signature_invalid": 1, "stale": 1} {
		if v := scrapeMetric(t, "caddy_zapier_connection_webhooks_total", `outcome="`+outcome+`"`); v < want {
			t.Errorf("connection_webhooks_total{%s} = %v", outcome, v)
		}
	}
}

func TestTriggerDeadLetterAndReplay(t *testing.T) {
	rc := newTrgReceiver(t)
	rc.setStatus(func(int) int { return http.StatusInternalServerError })
	g := startTriggersGateway(t, rc, "max_leases 2")
	g.actConnect("org", "alice")
	_, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	sub := trgDecode(t, body)
	id := g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1})
	// Two leases of three attempts each, then the dead letter (acked at Zapier).
	eventually(t, 20*time.Second, "the message given up on", func() bool {
		msgs := g.fake.InboxMessages(sub.InboxID)
		return len(msgs) == 1 && msgs[0].Status == "acked"
	})
	if n := len(rc.deliveries()); n != 6 {
		t.Fatalf("%d attempts, want 6 (3 per lease, 2 leases)", n)
	}
	status, body := admin(t, http.MethodGet, "/zapier/deliveries")
	var dls struct {
		DeadLetters []struct {
			ID, Subscription string
			Attempts         int
		} `json:"dead_letters"`
	}
	if err := json.Unmarshal(body, &dls); status != http.StatusOK || err != nil || len(dls.DeadLetters) != 1 ||
		dls.DeadLetters[0].ID != id || dls.DeadLetters[0].Attempts != 6 || dls.DeadLetters[0].Subscription != "s1" {
		t.Fatalf("GET /zapier/deliveries: %d %s", status, body)
	}
	if v := scrapeMetric(t, "caddy_zapier_trigger_deliveries_total", `outcome="dead_lettered"`); v < 1 {
		t.Errorf("trigger_deliveries_total{dead_lettered} = %v", v)
	}
	rc.setStatus(func(int) int { return http.StatusOK })
	if status, body := admin(t, http.MethodPost, "/zapier/deliveries/replay?id="+id); status != http.StatusOK {
		t.Fatalf("replay: %d %s", status, body)
	}
	if d := rc.next(t); d.ID != id || d.Body["message_id"] != id {
		t.Fatalf("replayed: %s %v", d.ID, d.Body)
	}
	if _, body := admin(t, http.MethodGet, "/zapier/deliveries"); !strings.Contains(string(body), `"dead_letters":[]`) {
		t.Fatalf("after replay: %s", body)
	}
}

// Without a notification URL the gateway watches each inbox's events
// stream: an event queued at Zapier reaches the partner with no
// notification and no safety drain (drain_interval is 1h).
func TestTriggerEventsStream(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGatewayNotify(t, rc, "")
	t.Cleanup(g.fake.CloseInboxStreams) // before the fake's server closes: it waits for open streams
	g.fake.SetInboxHeartbeat(100 * time.Millisecond)
	g.actConnect("org", "alice")
	status, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	if status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", status, body)
	}
	sub := trgDecode(t, body)
	if n := g.fake.Inboxes()[0].NotificationURL; n != "" {
		t.Fatalf("a notification URL was registered: %q", n)
	}
	eventually(t, 10*time.Second, "the events stream open", func() bool {
		open, _ := g.fake.InboxStreams()
		return open == 1
	})
	id := g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1})
	if d := rc.next(t); d.ID != id {
		t.Fatalf("delivered %s, want %s", d.ID, id)
	}
	if status, _ := g.trgDo(http.MethodDelete, "subscriptions/s1", "alice", ""); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d", status)
	}
	eventually(t, 10*time.Second, "the events stream closed", func() bool {
		open, _ := g.fake.InboxStreams()
		return open == 0
	})
}

// A config reload with the same zapier_triggers settings keeps the delivery
// loop, which then calls Zapier through the new config's app.
func TestTriggerSurvivesReload(t *testing.T) {
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc)
	g.actConnect("org", "alice")
	_, body := g.trgDo(http.MethodPut, "subscriptions/s1", "alice", trgSub)
	sub := trgDecode(t, body)
	first := g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1})
	if d := rc.next(t); d.ID != first {
		t.Fatalf("delivered %s", d.ID)
	}
	// A real reload: the config differs (one more route), the triggers block does not.
	if err := g.reload(g.opts.siteExtra + "\n\trespond /reload-marker 204"); err != nil {
		t.Fatal(err)
	}
	waitForSingleListener(t, gatewayPort)
	second := g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 2})
	if d := rc.next(t); d.ID != second {
		t.Fatalf("delivered %s after the reload", d.ID)
	}
	// The counts live in the loop, so they survived too (counted once the
	// ack is done, just after the partner's answer).
	eventually(t, 10*time.Second, "both deliveries counted", func() bool {
		_, body := g.trgDo(http.MethodGet, "subscriptions/s1", "alice", "")
		return trgDecode(t, body).Counts.Delivered == 2
	})
}

// Storing and forgetting a connection through zapier_connect reaches the
// partner as connection.created and connection.deleted.
func TestTriggerConnectionLifecycleEvents(t *testing.T) {
	rc := newTrgReceiver(t)
	rc.mu.Lock()
	rc.lifecycle = true
	rc.mu.Unlock()
	g := startTriggersGateway(t, rc)
	conn := g.actConnect("org", "alice")
	d := rc.next(t)
	if d.Body["type"] != "connection.created" || d.Body["tenant"] != "org" || d.Body["user"] != "alice" ||
		d.Body["app"] != actApp || d.Body["connection_id"] != conn || !strings.HasPrefix(d.ID, "evt_") {
		t.Fatalf("created: %s %v", d.ID, d.Body)
	}
	status, _, _ := g.do(request{method: http.MethodDelete, path: "/zapier/connect/connections/" + actApp, tenant: "org", user: "alice"})
	if status != http.StatusOK { // the disconnect's answer (connect_disconnect_test.go)
		t.Fatalf("DELETE connection: %d", status)
	}
	d = rc.next(t)
	if d.Body["type"] != "connection.deleted" || d.Body["connection_id"] != conn || d.Body["user"] != "alice" {
		t.Fatalf("deleted: %s %v", d.ID, d.Body)
	}
}

// caddy zapier webhooks manages the registrations at Zapier (the fake).
func TestTriggerWebhooksCommand(t *testing.T) {
	fake := fakezapier.New(fakezapier.Config{ClientID: testClientID, ClientSecret: testSecret})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.SetConnectionWebhooksToken("hooks-token", false)
	env := []string{"ZAPIER_WEBHOOKS_TOKEN=hooks-token"}
	run := func(args ...string) string {
		t.Helper()
		out, err := runCaddy(t, env, append([]string{"zapier", "webhooks"}, append(args, "--api-url", srv.URL)...)...)
		if err != nil {
			t.Fatalf("caddy zapier webhooks %s: %v\n%s", args[0], err, out)
		}
		return out
	}
	out := run("register", "--callback-url", "https://app.example.com/zapier/triggers/connection-webhooks")
	if !strings.Contains(out, "Secret (shown once") || !strings.Contains(out, "whsec_") {
		t.Fatalf("register: %s", out)
	}
	id := strings.Fields(strings.TrimPrefix(out, "Registered "))[0]
	if out := run("list"); !strings.Contains(out, id) || strings.Contains(out, "whsec_") {
		t.Fatalf("list: %s", out)
	}
	run("delete", "--id", id)
	if out := run("list"); !strings.Contains(out, "No registrations.") {
		t.Fatalf("list after delete: %s", out)
	}
	if out, err := runCaddy(t, []string{"ZAPIER_WEBHOOKS_TOKEN=wrong"}, "zapier", "webhooks", "list", "--api-url", srv.URL); err == nil || strings.Contains(out, "wrong") { // refused, and the token never printed
		t.Fatalf("a wrong token: %v %s", err, out)
	}
}
