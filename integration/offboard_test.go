package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// offboardReport is POST /zapier/forget's answer.
type offboardReport struct {
	Tenant      string `json:"tenant"`
	User        string `json:"user"`
	Complete    bool   `json:"complete"`
	Failed      int    `json:"failed"`
	Connections []struct {
		User         string `json:"user"`
		App          string `json:"app"`
		ConnectionID string `json:"connection_id"`
		Upstream     string `json:"upstream"`
		Error        string `json:"error"`
	} `json:"connections"`
	TokensPurged int `json:"tokens_purged"`
	PendingFlows int `json:"pending_flows_forgotten"`
	Runs         int `json:"runs_forgotten"`
}

func decodeReport(t *testing.T, status int, body []byte, wantStatus int) offboardReport {
	t.Helper()
	var rep offboardReport
	if err := json.Unmarshal(body, &rep); status != wantStatus || err != nil {
		t.Fatalf("forget: %d %s, want %d", status, body, wantStatus)
	}
	return rep
}

// startConnectRedisFleet starts sidecars sharing storage and the Redis
// tier, with zapier_connect, re-reading storage every 200ms.
func startConnectRedisFleet(t *testing.T, n int) *fleet {
	t.Helper()
	redis := redisserver.Start(t, redisPort)
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/connect/callback", sidecarPort(0))
	f := startFleet(t, fleetOptions{
		n: n,
		zapierExtra: fmt.Sprintf("key_sync 200ms\n\t\tcallback_url %s\n\t\treturn_origins %s\n\t\tcache {\n\t\t\tredis %s\n\t\t\tredis_key {env.ITEST_REDIS_KEY}\n\t\t\tredis_timeout 2s\n\t\t}",
			callback, partnerOrigin, redis.URL()),
		siteExtra: fmt.Sprintf("handle_path /zapier/connect/* {\n\t\tzapier_connect {\n\t\t\tapp %s %s\n\t\t}\n\t}", slackApp, slackUUID),
		env:       []string{"ITEST_REDIS_KEY=" + testRedisKey},
	})
	f.fake.RegisterPartner(partnerOrigin, callback)
	f.fake.RegisterApp(slackApp, slackUUID)
	t.Cleanup(func() { assertNoSecretsInOutput(t, f) })
	return f
}

// TestOffboardingAUserAcrossTwoSidecars offboards alice through one
// sidecar's admin API while the other holds her token: her connection goes
// at Zapier and in storage (after a failure, by running it again), her
// token on both sidecars and in Redis, her pending flows; bob is untouched.
func TestOffboardingAUserAcrossTwoSidecars(t *testing.T) {
	f := startConnectRedisFleet(t, 2)
	a, b := f.sidecars[0], f.sidecars[1]
	alice, bob := newFleetBrowser(t, "org_1", "alice"), newFleetBrowser(t, "org_1", "bob")
	_, aliceConn := alice.connectPopup(a, b)
	_, bobConn := bob.connectPopup(b, a)
	// A redirect flow alice left open, and a popup flow she has yet to
	// finish, both started before she is offboarded.
	if status, _, raw := alice.call(b, http.MethodGet, "start?app="+slackApp+"&reconnect=1&return_to=/x", nil); status != http.StatusFound {
		t.Fatalf("start: %d %s", status, raw)
	}
	status, _, raw := alice.call(a, http.MethodPost, "token", map[string]any{"app": unmappedUUID})
	var open connectToken
	if err := json.Unmarshal(raw, &open); status != http.StatusOK || err != nil {
		t.Fatalf("token: %d %s", status, raw)
	}
	// Both sidecars hold both users' tokens (one exchange each, shared
	// through Redis).
	oldAlice, oldBob := bearer(a.echoAs("org_1", "alice")), bearer(a.echoAs("org_1", "bob"))
	if bearer(b.echoAs("org_1", "alice")) != oldAlice || bearer(b.echoAs("org_1", "bob")) != oldBob {
		t.Fatal("the sidecars do not share the tokens")
	}
	bobExchanges := f.fake.ExchangesFor("org_1", "bob")

	// Zapier fails: reported, and the record stays for the retry.
	f.fake.FailNextAuthenticationDeletes(100, http.StatusServiceUnavailable)
	status, body := a.adminJSON(http.MethodPost, "/zapier/forget", map[string]any{"tenant": "org_1", "user": "alice"})
	rep := decodeReport(t, status, body, http.StatusBadGateway)
	if rep.Complete || rep.Failed != 1 || len(rep.Connections) != 1 || rep.Connections[0].Upstream != "" ||
		!strings.Contains(rep.Connections[0].Error, "zapier_api_failed") || rep.PendingFlows != 1 {
		t.Fatalf("partial failure: %s", body)
	}
	if status, _, raw := alice.call(b, http.MethodGet, "connections/"+slackApp, nil); status != http.StatusOK {
		t.Fatalf("the record went although Zapier failed: %d %s", status, raw)
	}
	// Run again: done.
	f.fake.FailNextAuthenticationDeletes(0, 0)
	status, body = a.adminJSON(http.MethodPost, "/zapier/forget", map[string]any{"tenant": "org_1", "user": "alice"})
	rep = decodeReport(t, status, body, http.StatusOK)
	if !rep.Complete || len(rep.Connections) != 1 || rep.Connections[0].ConnectionID != aliceConn.ConnectionID || rep.Connections[0].Upstream != "deleted" {
		t.Fatalf("second run: %s", body)
	}
	// (The retry's DELETE at Zapier took alice a token again, purged since.)
	aliceExchanges := f.fake.ExchangesFor("org_1", "alice")
	if n := len(f.fake.Connections("org_1", "alice", slackUUID)); n != 0 || len(f.fake.Connections("org_1", "bob", slackUUID)) != 1 {
		t.Errorf("at Zapier: alice %d connections", n)
	}
	for _, s := range f.sidecars {
		if status, _, raw := alice.call(s, http.MethodGet, "connections", nil); status != http.StatusOK || string(raw) != "{\"data\":[]}\n" {
			t.Errorf("%s: alice's connections: %d %s", s.name, status, raw)
		}
		if status, _, raw := bob.call(s, http.MethodGet, "connections/"+slackApp, nil); status != http.StatusOK || decodeConnection(t, raw) != bobConn {
			t.Errorf("%s: bob's connection: %d %s", s.name, status, raw)
		}
	}
	// The popup flow started before is refused on either sidecar.
	id := f.fake.AddConnection("org_1", "alice", unmappedUUID, "Other")
	status, hdr, raw := alice.call(b, http.MethodPost, "complete", map[string]any{"app": unmappedUUID, "auth_id": id, "state": open.State})
	expectError(t, status, hdr, raw, http.StatusBadRequest, "connect_state_invalid")
	if !strings.Contains(string(raw), "offboarded") {
		t.Errorf("popup state after offboarding: %s", raw)
	}

	// Alice's token is gone from a (and Redis) at once, from b within
	// key_sync; one new exchange serves both. Bob keeps his.
	newAlice := bearer(a.echoAs("org_1", "alice"))
	if newAlice == oldAlice {
		t.Fatal("sidecar a still has alice's token")
	}
	eventually(t, 10*time.Second, "sidecar b drops alice's token", func() bool {
		return bearer(b.echoAs("org_1", "alice")) == newAlice
	})
	if n := f.fake.ExchangesFor("org_1", "alice") - aliceExchanges; n != 1 {
		t.Errorf("alice: %d exchanges after offboarding, want 1", n)
	}
	if bearer(a.echoAs("org_1", "bob")) != oldBob || bearer(b.echoAs("org_1", "bob")) != oldBob || f.fake.ExchangesFor("org_1", "bob") != bobExchanges {
		t.Error("bob's token changed")
	}
	// And once more: nothing left.
	status, body = b.adminJSON(http.MethodPost, "/zapier/forget", map[string]any{"tenant": "org_1", "user": "alice"})
	if rep = decodeReport(t, status, body, http.StatusOK); !rep.Complete || len(rep.Connections) != 0 {
		t.Errorf("third run: %s", body)
	}
}

// TestOffboardingATenant forgets every user of a tenant that has stored
// connections, emits the event, and leaves other tenants alone.
func TestOffboardingATenant(t *testing.T) {
	takeEvents()
	g := startConnectGateway(t, connectOptions{globalExtra: "events {\n\t\ton zapier_identity_forgotten itest_record\n\t}"})
	alice, bob, other := newHTTPBrowser(g, "org_1", "alice"), newHTTPBrowser(g, "org_1", "bob"), newHTTPBrowser(g, "org_2", "alice")
	alice.connectPopup(slackApp)
	alice.connectPopup(unmappedUUID)
	bob.connectPopup(slackApp)
	otherConn := other.connectPopup(slackApp)

	status, body := adminJSON(t, adminAddr, http.MethodPost, "/zapier/forget", map[string]any{"tenant": "org_1", "keep_upstream": true})
	rep := decodeReport(t, status, body, http.StatusOK)
	if !rep.Complete || len(rep.Connections) != 3 || rep.TokensPurged < 2 {
		t.Fatalf("tenant: %s", body)
	}
	for _, c := range rep.Connections {
		if c.Upstream != "kept" {
			t.Errorf("keep_upstream: %+v", c)
		}
	}
	if n := len(g.fake.Connections("org_1", "alice", slackUUID)) + len(g.fake.Connections("org_1", "bob", slackUUID)); n != 2 {
		t.Errorf("keep_upstream deleted at Zapier: %d left", n)
	}
	for _, b := range []*httpBrowser{alice, bob} {
		if status, _, raw := b.call(http.MethodGet, "connections", nil); status != http.StatusOK || string(raw) != "{\"data\":[]}\n" {
			t.Errorf("%s: %d %s", b.user, status, raw)
		}
	}
	if status, _, raw := other.call(http.MethodGet, "connections/"+slackApp, nil); status != http.StatusOK || decodeConnection(t, raw) != otherConn {
		t.Errorf("org_2's connection: %d %s", status, raw)
	}
	var ev []seenEvent
	eventually(t, 10*time.Second, "a zapier_identity_forgotten event", func() bool {
		ev = append(ev, takeEvents()...)
		return len(ev) > 0
	})
	if len(ev) != 1 || ev[0].origin != "zapier" || ev[0].data["scope"] != "tenant" || ev[0].data["complete"] != true ||
		fmt.Sprint(ev[0].data["connections"]) != "3" || strings.Contains(fmt.Sprint(ev[0].data), "org_1") {
		t.Errorf("events: %+v", ev)
	}
	for _, bad := range []any{nil, map[string]any{"user": "alice"}, map[string]any{"tenant": "org_1", "keep_upstream": "maybe"}, map[string]any{"tenant": "org_1", "extra": 1}} {
		if status, body := adminJSON(t, adminAddr, http.MethodPost, "/zapier/forget", bad); status != http.StatusBadRequest {
			t.Errorf("POST %v: %d %s", bad, status, body)
		}
	}
	// The identity never travels in the URI, which Caddy's admin log writes.
	if status, body := admin(t, http.MethodPost, "/zapier/forget?tenant=org_1&user=alice"); status != http.StatusBadRequest || !strings.Contains(string(body), "JSON body") {
		t.Errorf("POST with the identity in the query: %d %s", status, body)
	}
	if status, _ := admin(t, http.MethodGet, "/zapier/forget?tenant=org_1"); status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", status)
	}
}

// TestZapierForgetCommand offboards a user with `caddy zapier forget`; a
// Zapier failure exits non-zero with the report, and the same command
// finishes the job.
func TestZapierForgetCommand(t *testing.T) {
	caddyBinary(t) // build first, outside the gateway's lifetime
	g := startConnectGateway(t, connectOptions{})
	address := fmt.Sprintf("localhost:%d", adminPort)
	conn := newHTTPBrowser(g, "org_1", "cli-user").connectPopup(slackApp)

	g.fake.FailNextAuthenticationDeletes(100, http.StatusServiceUnavailable)
	out, err := runZapierCommand(t, "forget", "--tenant", "org_1", "--user", "cli-user", "--address", address)
	if err == nil || !strings.Contains(out, "HTTP 502") || !strings.Contains(out, `\"complete\":false`) {
		t.Fatalf("forget with Zapier failing: %v\n%s", err, out)
	}
	g.fake.FailNextAuthenticationDeletes(0, 0)
	out, err = runZapierCommand(t, "forget", "--tenant", "org_1", "--user", "cli-user", "--address", address)
	if err != nil || !strings.Contains(out, "cli-user "+slackApp+" "+conn.ConnectionID+": deleted") || !strings.Contains(out, "Offboarded: 1 connections") {
		t.Fatalf("forget: %v\n%s", err, out)
	}
	if n := len(g.fake.Connections("org_1", "cli-user", slackUUID)); n != 0 {
		t.Errorf("at Zapier: %d connections", n)
	}
	out, err = runZapierCommand(t, "forget", "--user", "cli-user", "--address", address)
	if err == nil || !strings.Contains(out, "give --tenant") {
		t.Errorf("forget without a tenant: %v\n%s", err, out)
	}
}
