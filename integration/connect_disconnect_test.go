package integration

import (
	"encoding/json"
	"net/http"
	"testing"
)

type disconnectAnswer struct {
	Deleted      bool   `json:"deleted"`
	ConnectionID string `json:"connection_id"`
	App          string `json:"app"`
	Upstream     string `json:"upstream"`
}

func (b *httpBrowser) disconnect(app string) (int, disconnectAnswer, []byte) {
	b.g.t.Helper()
	status, _, raw := b.call(http.MethodDelete, "connections/"+app, nil)
	var a disconnectAnswer
	if status == http.StatusOK {
		if err := json.Unmarshal(raw, &a); err != nil {
			b.g.t.Fatalf("DELETE answer %s: %v", raw, err)
		}
	}
	return status, a, raw
}

func TestConnectDisconnectDeletesAtZapierAndRetries(t *testing.T) {
	g := startConnectGateway(t, connectOptions{})
	alice := newHTTPBrowser(g, "org_1", "alice")
	conn := alice.connectPopup(slackApp)

	// Zapier fails (after the client's bounded retries): the record stays,
	// so the partner can try again.
	g.fake.FailNextAuthenticationDeletes(10, http.StatusServiceUnavailable)
	status, hdr, raw := alice.call(http.MethodDelete, "connections/"+slackApp, nil)
	expectError(t, status, hdr, raw, http.StatusBadGateway, "zapier_api_failed")
	if status, _, _ := alice.call(http.MethodGet, "connections/"+slackApp, nil); status != http.StatusOK {
		t.Fatalf("the record went although Zapier failed: %d", status)
	}
	if n := len(g.fake.Connections("org_1", "alice", slackUUID)); n != 1 {
		t.Fatalf("connections at Zapier = %d", n)
	}
	g.fake.FailNextAuthenticationDeletes(0, 0)
	status, a, raw := alice.disconnect(slackApp)
	if status != http.StatusOK || a != (disconnectAnswer{Deleted: true, ConnectionID: conn.ConnectionID, App: slackApp, Upstream: "deleted"}) {
		t.Fatalf("retry: %d %s", status, raw)
	}
	if n := len(g.fake.Connections("org_1", "alice", slackUUID)); n != 0 || g.fake.AuthenticationDeletes() != 1 {
		t.Errorf("at Zapier after the retry: %d connections, %d deletes", n, g.fake.AuthenticationDeletes())
	}
	status, hdr, raw = alice.call(http.MethodDelete, "connections/"+slackApp, nil)
	expectError(t, status, hdr, raw, http.StatusNotFound, "connection_missing")

	// Deleted at Zapier meanwhile (e.g. by the user): the record still goes.
	other := alice.connectPopup(unmappedUUID)
	if status := deleteAtFake(t, g, "org_1", "alice", other.ConnectionID); status != http.StatusNoContent {
		t.Fatalf("deleting at the fake: %d", status)
	}
	if status, a, raw := alice.disconnect(unmappedUUID); status != http.StatusOK || a.Upstream != "already_gone" || !a.Deleted {
		t.Errorf("already gone at Zapier: %d %s", status, raw)
	}
}

// deleteAtFake deletes a connection at the fake the way its owner would,
// with the owner's own access token.
func deleteAtFake(t *testing.T, g *gateway, tenant, user, id string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, g.fakeURL+"/v2/authentications/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+g.fake.IssueAccessToken(tenant, user, "connection:write"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestConnectDisconnectKeepUpstream(t *testing.T) {
	g := startConnectGateway(t, connectOptions{connectExtra: "keep_upstream"})
	alice := newHTTPBrowser(g, "org_1", "alice")
	conn := alice.connectPopup(slackApp)
	apiCalls := g.fake.Stats().APIRequests
	status, a, raw := alice.disconnect(slackApp)
	if status != http.StatusOK || a != (disconnectAnswer{Deleted: true, ConnectionID: conn.ConnectionID, App: slackApp, Upstream: "kept"}) {
		t.Fatalf("DELETE: %d %s", status, raw)
	}
	if n := len(g.fake.Connections("org_1", "alice", slackUUID)); n != 1 || g.fake.Stats().APIRequests != apiCalls {
		t.Errorf("keep_upstream: %d connections at Zapier, %d API calls", n, g.fake.Stats().APIRequests-apiCalls)
	}
}
