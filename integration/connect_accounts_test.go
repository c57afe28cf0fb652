package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// TestConnectSeveralAccountsPerApp: a user connects a work and a personal
// Slack; both are stored with Zapier's titles and listed, the most
// recently verified is the default for runs, connection_id picks the
// other, and disconnecting needs to say which.
func TestConnectSeveralAccountsPerApp(t *testing.T) {
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "send_message", Title: "Send Channel Message"})
	g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Title: "Slack alice@work"})
	work := g.actConnect("org", "alice")
	alice := newHTTPBrowser(g, "org", "alice")

	// Connecting the app again reuses the stored account...
	if tok := alice.token(map[string]any{"app": actApp}); tok.URL != "" || decodeConnection(t, tok.Reused).ConnectionID != work {
		t.Fatalf("reuse: %+v", tok)
	}
	// ...unless another account is asked for.
	g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Title: "Slack alice@home"})
	tok := alice.token(map[string]any{"app": actApp, "new_account": true, "theme": "dark-blue"})
	if tok.URL == "" || !strings.Contains(tok.URL, "theme=dark-blue") {
		t.Fatalf("new_account: %+v", tok)
	}
	msg := alice.popupMessage(tok.URL)
	status, _, raw := alice.complete(actApp, msg["authId"], tok.State)
	personal := decodeConnection(t, raw).ConnectionID
	if status != http.StatusOK || personal == work {
		t.Fatalf("second account: %d %s", status, raw)
	}

	status, _, raw = alice.call(http.MethodGet, "connections", nil)
	var list struct{ Data []storedConnection }
	if err := json.Unmarshal(raw, &list); status != http.StatusOK || err != nil || len(list.Data) != 2 ||
		list.Data[0].ConnectionID != personal || list.Data[0].Title != "Slack alice@home" ||
		list.Data[1].ConnectionID != work || list.Data[1].Title != "Slack alice@work" {
		t.Fatalf("GET connections: %d %s", status, raw)
	}
	if status, _, raw := alice.call(http.MethodGet, "connections/"+actApp+"?connection_id="+work, nil); status != http.StatusOK || decodeConnection(t, raw).Title != "Slack alice@work" {
		t.Errorf("GET one by connection_id: %d %s", status, raw)
	}

	// Runs use the default account, or the one named.
	runWith := func(extra string) string {
		t.Helper()
		before := len(g.fake.ActionRuns())
		status, _, body := g.actDo(http.MethodPost, "run", "alice", `{"app":"`+actApp+`","action":"send_message"`+extra+`}`)
		runs := g.fake.ActionRuns()
		if status != http.StatusOK || len(runs) != before+1 {
			t.Fatalf("POST run%s: %d %s", extra, status, body)
		}
		// The connection the run was made with (a stored action's or a
		// /v2/action-runs run's alike).
		return runs[len(runs)-1].Authentication
	}
	if got := runWith(""); got != personal {
		t.Errorf("default run used %s, want the most recent %s", got, personal)
	}
	if got := runWith(`,"connection_id":"` + work + `"`); got != work {
		t.Errorf("run with connection_id used %s, want %s", got, work)
	}
	if got := runWith(fmt.Sprintf(`,"connection_id":%s`, work)); got != work { // a number, as Connect's authId
		t.Errorf("run with a numeric connection_id used %s", got)
	}
	bobs := g.fake.AddConnection("org", "bob", actAppUUID, "bob's")
	for _, body := range []string{
		`{"app":"` + actApp + `","action":"send_message","connection_id":"` + bobs + `"}`,
		`{"app":"` + actApp + `","action":"send_message","connection_id":"999"}`,
	} {
		status, _, raw := g.actDo(http.MethodPost, "inputs", "alice", body)
		if status != http.StatusConflict || actErrorCode(t, raw) != "connection_missing" {
			t.Errorf("inputs with another's connection: %d %s", status, raw)
		}
	}
	if status, _, raw := g.actDo(http.MethodPost, "inputs", "alice", `{"app":"`+actApp+`","action":"send_message","connection_id":1.5}`); status != http.StatusBadRequest {
		t.Errorf("a float connection_id: %d %s", status, raw)
	}

	// Disconnecting needs to say which account; then the other is default.
	status, hdr, raw := alice.call(http.MethodDelete, "connections/"+actApp, nil)
	expectError(t, status, hdr, raw, http.StatusConflict, "connection_ambiguous")
	if status, a, raw := alice.disconnect(actApp + "?connection_id=" + personal); status != http.StatusOK || a.ConnectionID != personal {
		t.Fatalf("DELETE personal: %d %s", status, raw)
	}
	if got := runWith(""); got != work {
		t.Errorf("default after disconnecting personal: %s", got)
	}
	if n := len(g.fake.Connections("org", "alice", actAppUUID)); n != 1 {
		t.Errorf("at Zapier: %d", n)
	}
}
