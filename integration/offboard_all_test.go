package integration

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// storageFiles lists the files under a file storage root (lock files
// aside), relative to it.
func storageFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(p, ".lock") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return files
}

// notPerUser are the storage records that hold nothing of a user: keys,
// leases and sweeps, the forget log (sealed), one-time marks of spent
// states, webhook ids and callback tokens, and the catalog caches.
var notPerUser = []string{
	"zapier/keys.json", "zapier/connect-state.key", "zapier/forget-log/", "zapier/connect/used-states/",
	"zapier/connect/forgotten/", "zapier/connect/health-sweep", "zapier/triggers/drain-leases/",
	"zapier/events/connection-webhooks/", "zapier/run-callback-tokens/", "zapier/mcp/keys",
	"zapier/idempotency/sweep", "zapier/action-runs/sweep", "last_clean.json", "instance.uuid",
}

func isPerUser(name string) bool {
	for _, p := range notPerUser {
		if name == p || strings.HasPrefix(name, p) {
			return false
		}
	}
	return true
}

// Issue #22 item 2: offboarding reaches every store that holds per-user
// data. One user drives every capability (a connection, a run with an
// Idempotency-Key, an MCP authorization and an aggregate session, a
// trigger subscription with a delivery and a dead letter, cached tokens);
// POST /zapier/forget then leaves nothing of that user in storage (a file
// the user's activity wrote that is still there fails the test, unless it
// is on the short list of records that hold nothing of anyone) and nothing
// usable through any route, while another user's data stays.
func TestForgetReachesEveryStore(t *testing.T) {
	const tenant, user = "tenant-forget-all-5e2", "user-forget-all-a91"
	rc := newTrgReceiver(t)
	site := fmt.Sprintf(`
	handle_path /zapier/connect/* {
		zapier_connect {
			app %[1]s %[2]s
		}
	}
	handle_path /zapier/actions/* {
		zapier_actions {
			app %[1]s %[2]s
			poll_interval 50ms
			max_poll_interval 200ms
		}
	}
	handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %[6]s
		}
	}
	handle_path /zapier/triggers/* {
		zapier_triggers {
			app %[1]s %[2]s
			deliver_to %[3]s
			signing_secret %[4]s
			connection_webhook_secret %[5]s
			notification_url %[7]s/zapier/triggers/notify
			retry_base 10ms
			retry_max 20ms
			attempts 1
			max_leases 1
			drain_interval 1h
		}
	}
`, actApp, actAppUUID, rc.url, trgEventsSecret, trgConnSecret, mcpCallbackURL, gatewayURL)
	g := startGateway(t, gatewayOptions{
		zapierExtra: fmt.Sprintf("callback_url %s/zapier/connect/callback\n\t\treturn_origins %s\n\t\trate_limit {\n\t\t\tidentity off\n\t\t\ttenant off\n\t\t}", gatewayURL, gatewayURL),
		siteExtra:   site,
	})
	g.fake.RegisterApp(actApp, actAppUUID)
	g.fake.SetActions(actAppUUID, fakezapier.ActionSpec{Key: "send_message"})
	g.fake.RegisterMCPApp(mcpSlack, "Slack")
	g.fake.RegisterMCPApp(mcpSheets, "Google Sheets")
	g.fake.SetMCPRedirectURIs(mcpCallbackURL)

	// The fake titles accounts after the user (alice@acme.example); a title
	// is Zapier's label of the app account, stored as Zapier gives it, so
	// these accounts get one that names neither id.
	g.fake.QueueConnectOutcomes(fakezapier.ConnectOutcome{Kind: fakezapier.ConnectApprove, Title: "Work Slack"},
		fakezapier.ConnectOutcome{Kind: fakezapier.ConnectApprove, Title: "Team Slack"})
	// Another user's data, which offboarding must leave alone.
	g.actConnect(tenant, "user-stays-b07")
	before := storageFiles(t, g.storageDir)

	// Connect, run (with an Idempotency-Key), authorize MCP and call a tool
	// through the aggregate endpoint, subscribe and get a delivery and a
	// dead letter.
	g.actConnect(tenant, user)
	as := func(r request) (int, []byte) {
		t.Helper()
		r.tenant, r.user = tenant, user
		if r.body != "" {
			r.header = http.Header{"Content-Type": {"application/json"}}
		}
		status, _, body := g.do(r)
		return status, body
	}
	run := request{method: http.MethodPost, path: "/zapier/actions/run", body: `{"app":"` + actApp + `","action":"send_message","inputs":{"text":"hi"},"wait":"5s"}`}
	run.header = http.Header{"Idempotency-Key": {"forget-me-1"}}
	status, _, body := g.do(request{method: run.method, path: run.path, body: run.body, tenant: tenant, user: user,
		header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"forget-me-1"}}})
	if status != http.StatusOK {
		t.Fatalf("run: %d %s", status, body)
	}
	runID := actDecodeRun(t, body).ID
	g.mcpAuthorize(tenant, user, mcpSlack)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A 2025-11-25 session (a 2026-07-28 client has none to end).
	agg, err := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: gatewayURL + "/zapier/mcp/", HTTPClient: &http.Client{Transport: identityTransport{tenant, user}}, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer agg.Close()
	if _, err := agg.ListTools(ctx, nil); err != nil {
		t.Fatalf("aggregate tools/list: %v", err)
	}
	// A tool of an app not authorized: an authorize link is stored.
	if res, err := agg.CallTool(ctx, &mcp.CallToolParams{Name: mcpSheets + "__whoami"}); err != nil || !res.IsError {
		t.Fatalf("a tool of an app not authorized: %+v %v", res, err)
	}
	if status, body := as(request{method: http.MethodPut, path: "/zapier/triggers/subscriptions/s1", body: trgSub}); status != http.StatusCreated {
		t.Fatalf("subscribe: %d %s", status, body)
	}
	status, body = as(request{path: "/zapier/triggers/subscriptions/s1"})
	sub := trgDecode(t, body)
	g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 1})
	rc.next(t)
	rc.setStatus(func(int) int { return http.StatusInternalServerError })
	g.fake.InjectTriggerEvent(sub.InboxID, map[string]any{"n": 2})
	eventually(t, 20*time.Second, "a dead letter", func() bool {
		_, b := admin(t, http.MethodGet, "/zapier/deliveries")
		return strings.Contains(string(b), user)
	})
	// Issue #22 item 3: after every capability ran, nothing in storage names
	// the user or tenant in clear or in a reversible encoding.
	assertNoRawIdentity(t, g.storageDir, tenant, user)
	written := storageFiles(t, g.storageDir)
	var userFiles []string
	for name := range written {
		if !before[name] && isPerUser(name) {
			userFiles = append(userFiles, name)
		}
	}
	if len(userFiles) < 5 {
		t.Fatalf("the user's activity wrote only %v: the test does not exercise the stores", userFiles)
	}

	status, raw := adminJSON(t, adminAddr, http.MethodPost, "/zapier/forget", map[string]any{"tenant": tenant, "user": user})
	rep := decodeReport(t, status, raw, http.StatusOK)
	if !rep.Complete {
		t.Fatalf("forget: %s", raw)
	}
	for _, store := range []string{"connections", "connect_states", "runs", "idempotency", "stored_actions", "mcp_authorizations", "mcp_sessions", "mcp_links",
		"trigger_subscriptions", "trigger_dead_letters", "usage", "tokens"} {
		if !strings.Contains(string(raw), `"store":"`+store+`"`) {
			t.Errorf("the report does not list the %s store: %s", store, raw)
		}
	}

	// Nothing the user's activity wrote is left, but what holds nobody's data.
	after := storageFiles(t, g.storageDir)
	var left []string
	for _, name := range userFiles {
		if after[name] {
			left = append(left, name)
		}
	}
	sort.Strings(left)
	if len(left) > 0 {
		t.Errorf("offboarding left the user's records in storage (a store that keeps per-user data must register with the offboarding registry):\n%s", strings.Join(left, "\n"))
	}
	for name := range before {
		if isPerUser(name) && !after[name] {
			t.Errorf("offboarding deleted another user's record %s", name)
		}
	}
	assertNoRawIdentity(t, g.storageDir, tenant, user)

	// Nothing usable through any route.
	if status, body := as(request{path: "/zapier/connect/connections"}); status != http.StatusOK || string(body) != "{\"data\":[]}\n" {
		t.Errorf("connections after forget: %d %s", status, body)
	}
	if status, _ := as(request{path: "/zapier/actions/runs/" + runID}); status != http.StatusNotFound {
		t.Errorf("runs/{id} after forget: %d", status)
	}
	if status, _ := as(request{path: "/zapier/triggers/subscriptions/s1"}); status != http.StatusNotFound {
		t.Errorf("subscription after forget: %d", status)
	}
	if status, body := as(request{path: "/zapier/mcp/apps"}); status != http.StatusOK || strings.Contains(string(body), mcpSlack) {
		t.Errorf("MCP apps after forget: %d %s", status, body)
	}
	if _, err := agg.ListTools(ctx, nil); err == nil {
		t.Error("the user's aggregate MCP session still answers after forget")
	}
	if s, err := g.mcpSession(ctx, tenant, user, mcpSlack, nil); err == nil {
		_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
		_ = s.Close()
		if err == nil {
			t.Error("the user's MCP authorization still works after forget")
		}
	}
	for _, ib := range g.fake.Inboxes() {
		if ib.Tenant == tenant && ib.User == user && ib.Status != "deleting" {
			t.Errorf("the user's trigger inbox %s is left at Zapier (%s)", ib.ID, ib.Status)
		}
	}
}
