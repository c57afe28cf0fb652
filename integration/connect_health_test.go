package integration

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

type checkedConnection struct {
	ConnectionID string    `json:"connection_id"`
	App          string    `json:"app"`
	Status       string    `json:"status"`
	Checked      time.Time `json:"checked"`
}

func (b *httpBrowser) checkedConnections() map[string]checkedConnection {
	b.g.t.Helper()
	status, _, raw := b.call(http.MethodGet, "connections", nil)
	var list struct{ Data []checkedConnection }
	if err := json.Unmarshal(raw, &list); status != http.StatusOK || err != nil {
		b.g.t.Fatalf("GET connections: %d %s", status, raw)
	}
	out := map[string]checkedConnection{}
	for _, c := range list.Data {
		out[c.ConnectionID] = c
	}
	return out
}

// TestConnectHealthSweepMarksAndAnnounces: the sweep finds one of alice's
// connections expired at Zapier and another deleted there, marks them in
// GET connections, and announces each once; bob's stays ok and silent.
func TestConnectHealthSweepMarksAndAnnounces(t *testing.T) {
	takeEvents()
	g := startConnectGateway(t, connectOptions{
		connectExtra: "health_check 1s",
		zapierExtra:  "rate_limit {\n\t\t\tidentity off\n\t\t\ttenant off\n\t\t}", // the test polls
		globalExtra:  "events {\n\t\ton zapier_connection_expired itest_record\n\t\ton zapier_connection_missing itest_record\n\t}",
	})
	alice, bob := newHTTPBrowser(g, "org_1", "alice"), newHTTPBrowser(g, "org_1", "bob")
	slack := alice.connectPopup(slackApp)
	other := alice.connectPopup(unmappedUUID)
	bobs := bob.connectPopup(slackApp)
	for _, c := range alice.checkedConnections() {
		if c.Status != "ok" {
			t.Fatalf("a new connection: %+v", c)
		}
	}

	g.fake.SetConnectionExpired(slack.ConnectionID, true)
	if status := deleteAtFake(t, g, "org_1", "alice", other.ConnectionID); status != http.StatusNoContent {
		t.Fatalf("deleting at the fake: %d", status)
	}
	eventually(t, 20*time.Second, "the sweep marks alice's connections", func() bool {
		got := alice.checkedConnections()
		return got[slack.ConnectionID].Status == "expired" && got[other.ConnectionID].Status == "missing"
	})
	firstCheck := bob.checkedConnections()[bobs.ConnectionID]
	if firstCheck.Status != "ok" {
		t.Errorf("bob's: %+v", firstCheck)
	}
	// A later sweep checks again and announces nothing new.
	eventually(t, 20*time.Second, "another sweep", func() bool {
		return bob.checkedConnections()[bobs.ConnectionID].Checked.After(firstCheck.Checked)
	})
	ev := takeEvents()
	seen := map[string]string{}
	for _, e := range ev {
		if e.origin != "zapier" || e.data["identity"] == "" || e.data["identity"] == "alice" {
			t.Errorf("event %+v", e)
		}
		seen[e.name] = e.data["connection_id"].(string)
	}
	if len(ev) != 2 || seen["zapier_connection_expired"] != slack.ConnectionID || seen["zapier_connection_missing"] != other.ConnectionID {
		t.Errorf("events %+v", ev)
	}
	// A reconnect makes it ok again.
	tok := alice.token(map[string]any{"app": slackApp, "reconnect": true})
	msg := alice.popupMessage(tok.URL)
	if status, _, raw := alice.complete(slackApp, msg["authId"], tok.State); status != http.StatusOK {
		t.Fatalf("reconnect: %d %s", status, raw)
	}
	if c := alice.checkedConnections()[slack.ConnectionID]; c.Status != "ok" {
		t.Errorf("after reconnecting: %+v", c)
	}
}
