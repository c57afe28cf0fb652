package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// After subscriptions, deliveries and a dead letter, nothing in the
// storage names the tenant or the user, in clear or encoded.
func TestTriggerStorageHoldsNoRawIdentity(t *testing.T) {
	const tenant, user = "tenant-rawid-acme-7d1", "user-rawid-alice-93c"
	rc := newTrgReceiver(t)
	g := startTriggersGateway(t, rc, "max_leases 1", "attempts 1")
	// A title is Zapier's label of the app account, stored as Zapier gives
	// it; the fake's default one is made from the ids, so name it here.
	g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectApprove, Title: "Work Slack"})
	g.actConnect(tenant, user)
	do := func(method, route, body string) (int, []byte) {
		t.Helper()
		r := request{method: method, path: "/zapier/triggers/" + route, tenant: tenant, user: user, body: body}
		if body != "" {
			r.header = http.Header{"Content-Type": {"application/json"}}
		}
		status, _, b := g.do(r)
		return status, b
	}
	status, body := do(http.MethodPut, "subscriptions/s1", trgSub)
	if status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", status, body)
	}
	sub := trgDecode(t, body)
	if _, body := do(http.MethodPut, "subscriptions/s2", trgSub); !strings.Contains(string(body), user) {
		t.Fatalf("the answer names its user: %s", body) // answers do; storage does not
	}
	g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1})
	if d := rc.next(t); d.Body["user"] != user {
		t.Fatalf("delivered: %v", d.Body)
	}
	// The partner fails: one attempt, one lease, a dead letter.
	rc.setStatus(func(int) int { return http.StatusInternalServerError })
	g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 2})
	eventually(t, 20*time.Second, "a dead letter", func() bool {
		_, b := admin(t, http.MethodGet, "/zapier/deliveries")
		return strings.Contains(string(b), user) // the admin API opens it
	})
	if status, _ := do(http.MethodPost, "subscriptions/s2/pause", ""); status != http.StatusOK {
		t.Fatalf("pause: %d", status)
	}
	if status, _ := do(http.MethodDelete, "subscriptions/s2", ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	assertNoRawIdentity(t, g.storageDir, tenant, user)
	if _, err := os.Stat(filepath.Join(g.storageDir, "zapier", "triggers", "dead-letters")); err != nil {
		t.Fatalf("no dead letter was stored: %v", err)
	}
}
