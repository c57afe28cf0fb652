package integration

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

// Issue #27: usage in Zapier's units, quotas before the call, the export.
// Two sidecars share storage and a real Redis; tenant org has a quota of
// 10 tasks a day; the partner's receiver gets the usage.threshold events.

type usageOutcomes struct{ Success, Error int64 }

type usageReport struct {
	Tenant        string        `json:"tenant"`
	User          string        `json:"user"`
	Since         time.Time     `json:"since"`
	Until         time.Time     `json:"until"`
	Tasks         int64         `json:"tasks"`
	ActionRuns    usageOutcomes `json:"action_runs"`
	MCPCalls      usageOutcomes `json:"mcp_calls"`
	TriggerEvents int64         `json:"trigger_events"`
	APICalls      int64         `json:"api_calls"`
	Buckets       []struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
		Tasks int64     `json:"tasks"`
	} `json:"buckets"`
	Users []struct {
		User  string `json:"user"`
		Tasks int64  `json:"tasks"`
	} `json:"users"`
}

func (s *sidecar) usage(t *testing.T, q map[string]any) usageReport {
	t.Helper()
	status, body := s.adminJSON(http.MethodPost, "/zapier/usage", q)
	if status != http.StatusOK {
		t.Fatalf("POST /zapier/usage on %s: %d %s", s.name, status, body)
	}
	var rep usageReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("usage: %v: %s", err, body)
	}
	return rep
}

func startUsageFleet(t *testing.T, rc *trgReceiver) *fleet {
	t.Helper()
	redis := redisserver.Start(t, redisPort)
	callback := fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/callback", sidecarPort(0))
	site := actionsSite("") + fmt.Sprintf(`
	handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %s
		}
	}
	handle_path /zapier/triggers/* {
		zapier_triggers {
			app %s %s
			deliver_to %s
			signing_secret %s
			retry_base 10ms
			retry_max 20ms
			drain_interval 1h
		}
	}`, callback, actApp, actAppUUID, rc.url, trgEventsSecret)
	f := startFleet(t, fleetOptions{
		n: 2,
		zapierExtra: fmt.Sprintf(`return_origins http://127.0.0.1:%d
		cache {
			redis %s
			redis_key {env.ITEST_REDIS_KEY}
			redis_timeout 2s
		}
		quota {
			tasks 1000/720h
			tenant org 10/24h
		}`, sidecarPort(0), redis.URL()),
		siteExtra: site,
		env:       []string{"ITEST_REDIS_KEY=" + testRedisKey},
	})
	f.fake.RegisterApp(actApp, actAppUUID)
	f.fake.SetActions(actAppUUID, fakezapier.ActionSpec{Key: "send_message", Delay: -1},
		fakezapier.ActionSpec{Key: "refused", Delay: -1, Errors: []fakezapier.RunError{{Code: "user", Title: "no such channel"}}})
	for _, user := range []string{"alice", "bob", "carol"} {
		cbSeedConnection(t, f, "org", user)
	}
	// Carol's connection no longer works: her runs fail at Zapier.
	if conns := f.fake.Connections("org", "carol", actAppUUID); len(conns) != 1 || !f.fake.SetConnectionExpired(conns[0].ID, true) {
		t.Fatalf("carol's connection: %+v", conns)
	}
	f.fake.RegisterMCPApp(mcpSlack, "Slack")
	f.fake.SetMCPRedirectURIs(callback)
	sidecarMCPAuthorize(t, f.sidecars[0], "org", "alice", mcpSlack)
	return f
}

// usageRun is POST run of action on s as org/user: the status and body.
func usageRun(t *testing.T, s *sidecar, user, action string) (int, http.Header, []byte) {
	t.Helper()
	status, hdr, body, err := send(request{method: http.MethodPost, path: "/zapier/actions/run", tenant: "org", user: user, base: s.port,
		header: http.Header{"Content-Type": {"application/json"}},
		body:   `{"app":"` + actApp + `","action":"` + action + `","inputs":{"text":"hi"},"wait":"10s"}`})
	if err != nil {
		t.Fatal(err)
	}
	return status, hdr, body
}

func usageMCPSession(ctx context.Context, t *testing.T, s *sidecar, user string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "itest-agent", Version: "1.0.0"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   fmt.Sprintf("http://127.0.0.1:%d/zapier/mcp/%s", s.port, mcpSlack),
		HTTPClient: &http.Client{Transport: identityTransport{"org", user}},
		MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	t.Cleanup(func() { session.Close() })
	return session
}

// thresholdEvents are the usage.threshold events the receiver accepted.
func thresholdEvents(rc *trgReceiver) []trgDelivery {
	var out []trgDelivery
	for _, d := range rc.deliveries() {
		if d.Body["type"] == "usage.threshold" {
			out = append(out, d)
		}
	}
	return out
}

func TestUsageCountedQuotaEnforcedAndExported(t *testing.T) {
	rc := newTrgReceiver(t)
	f := startUsageFleet(t, rc)
	s0, s1 := f.sidecars[0], f.sidecars[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Three successful runs of alice, across both sidecars: 3 tasks.
	for i := range 3 {
		status, _, body := usageRun(t, f.sidecars[i%2], "alice", "send_message")
		if status != http.StatusOK || actDecodeRun(t, body).Status != "success" {
			t.Fatalf("run %d: %d %s", i, status, body)
		}
	}
	// A run that ends in error costs nothing: its reserved task is given back.
	if status, _, body := usageRun(t, s1, "alice", "refused"); status != http.StatusOK || actDecodeRun(t, body).Status != "error" {
		t.Fatalf("refused run: %d %s", status, body)
	}
	// A run Zapier refuses to create fails: its task is given back too.
	if status, _, body := usageRun(t, s0, "carol", "send_message"); status/100 == 2 {
		t.Fatalf("carol's run with an expired connection: %d %s", status, body)
	}
	// Two successful tool calls (2 tasks each) through both sidecars, and
	// one that fails (a tool error: nothing).
	sessions := []*mcp.ClientSession{usageMCPSession(ctx, t, s0, "alice"), usageMCPSession(ctx, t, s1, "alice")}
	for i, s := range sessions {
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": strconv.Itoa(i)}})
		if err != nil || res.IsError {
			t.Fatalf("tool call %d: %v %+v", i, err, res)
		}
	}
	if res, err := sessions[1].CallTool(ctx, &mcp.CallToolParams{Name: "fail"}); err != nil || !res.IsError {
		t.Fatalf("failing tool call: %v %+v", err, res)
	}
	rep := s0.usage(t, map[string]any{"tenant": "org"})
	if rep.Tasks != 7 || rep.ActionRuns != (usageOutcomes{3, 1}) || rep.MCPCalls != (usageOutcomes{2, 1}) {
		t.Fatalf("after 3 runs, 1 failed run, 2 tool calls and 1 failed: %+v", rep)
	}
	if len(thresholdEvents(rc)) != 0 {
		t.Fatalf("a threshold event at 7 of 10 tasks: %v", thresholdEvents(rc))
	}

	// Bob's run makes 8 of 10: the 80 % event; a tool call makes 10: 100 %.
	if status, _, body := usageRun(t, s1, "bob", "send_message"); status != http.StatusOK {
		t.Fatalf("bob's run: %d %s", status, body)
	}
	if res, err := sessions[0].CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "last"}}); err != nil || res.IsError {
		t.Fatalf("the call that fills the quota: %v %+v", err, res)
	}

	// Past the quota: refused before any call to Zapier.
	runsBefore, callsBefore := len(f.fake.ActionRuns()), f.fake.MCPStats().ToolCalls
	for _, s := range f.sidecars {
		status, hdr, body := usageRun(t, s, "bob", "send_message")
		if status != http.StatusTooManyRequests || actErrorCode(t, body) != "quota_exceeded" || hdr.Get("Retry-After") == "" {
			t.Fatalf("a run past the quota on %s: %d %s (Retry-After %q)", s.name, status, body, hdr.Get("Retry-After"))
		}
		if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 {
			t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
		}
	}
	if _, err := sessions[1].CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "over"}}); err == nil {
		t.Fatal("a tool call past the quota went through")
	}
	if runs, calls := len(f.fake.ActionRuns()), f.fake.MCPStats().ToolCalls; runs != runsBefore || calls != callsBefore {
		t.Fatalf("refused calls reached Zapier: runs %d → %d, tool calls %d → %d", runsBefore, runs, callsBefore, calls)
	}

	// The threshold events: 80 % and 100 %, each once across the sidecars.
	eventually(t, 30*time.Second, "the 80 % and 100 % events", func() bool { return len(thresholdEvents(rc)) >= 2 })
	sent := 0.0
	for _, s := range f.sidecars {
		_, metrics := s.admin(http.MethodGet, "/metrics")
		sent += metricValue(t, metrics, "caddy_zapier_usage_threshold_events_total", `percent="80"`) +
			metricValue(t, metrics, "caddy_zapier_usage_threshold_events_total", `percent="100"`)
	}
	events := thresholdEvents(rc)
	if sent != 2 || len(events) != 2 {
		t.Fatalf("%v threshold events sent, %d delivered (%v); want 2", sent, len(events), events)
	}
	for i, pct := range []float64{80, 100} {
		b := events[i].Body
		if b["tenant"] != "org" || b["percent"] != pct || b["quota"] != float64(10) || b["period"] != "24h" {
			t.Errorf("event %d: %v", i, b)
		}
	}
	if b := events[1].Body; b["tasks"] != float64(10) {
		t.Errorf("100 %% event: %v", b)
	}

	// The export: the same numbers on both sidecars, per tenant and per user.
	want := usageOutcomes{4, 1}
	var reports []usageReport
	for _, s := range f.sidecars {
		rep := s.usage(t, map[string]any{"tenant": "org"})
		if rep.Tenant != "org" || rep.Tasks != 10 || rep.ActionRuns != want || rep.MCPCalls != (usageOutcomes{3, 1}) || rep.APICalls == 0 || len(rep.Buckets) != 0 {
			t.Fatalf("export on %s: %+v", s.name, rep)
		}
		reports = append(reports, rep)
	}
	if reports[0].APICalls != reports[1].APICalls {
		t.Fatalf("api_calls differ between sidecars: %d, %d", reports[0].APICalls, reports[1].APICalls)
	}
	// Each user's part, by keyed name: alice's 9 tasks and bob's 1; carol spent nothing.
	parts := []int64{}
	for _, u := range reports[0].Users {
		if len(u.User) != 65 || u.User[0] != 'k' || strings.Contains(u.User, "alice") {
			t.Errorf("a user named %q in the export", u.User)
		}
		parts = append(parts, u.Tasks)
	}
	if len(parts) != 2 || parts[0]+parts[1] != 10 || (parts[0] != 9 && parts[1] != 9) {
		t.Fatalf("users' parts: %+v", reports[0].Users)
	}
	alice := s1.usage(t, map[string]any{"tenant": "org", "user": "alice", "by": "day"})
	if alice.User != "alice" || alice.Tasks != 9 || alice.ActionRuns != (usageOutcomes{3, 1}) || len(alice.Buckets) != 1 || alice.Buckets[0].Tasks != 9 {
		t.Fatalf("alice: %+v", alice)
	}
	if bob := s0.usage(t, map[string]any{"tenant": "org", "user": "bob"}); bob.Tasks != 1 || bob.ActionRuns != (usageOutcomes{1, 0}) {
		t.Fatalf("bob: %+v", bob)
	}
	if carol := s0.usage(t, map[string]any{"tenant": "org", "user": "carol"}); carol.Tasks != 0 || carol.ActionRuns != (usageOutcomes{}) || carol.APICalls != 0 {
		t.Fatalf("carol: %+v", carol)
	}
	if none := s0.usage(t, map[string]any{"tenant": "never-seen"}); none.Tasks != 0 || none.APICalls != 0 {
		t.Fatalf("unknown tenant: %+v", none)
	}
	// The identity travels in the body; a query is refused.
	if status, body := s0.adminJSON(http.MethodPost, "/zapier/usage?tenant=org", map[string]any{"tenant": "org"}); status != http.StatusBadRequest {
		t.Fatalf("query string: %d %s", status, body)
	}
	if status, body := s0.adminJSON(http.MethodPost, "/zapier/usage", map[string]any{"tenant": "org", "by": "week"}); status != http.StatusBadRequest {
		t.Fatalf("by week: %d %s", status, body)
	}

	// The quota's state in the status.
	_, raw := s1.admin(http.MethodGet, "/zapier/status")
	var st struct {
		Usage struct {
			Backend string `json:"backend"`
			Tenants []struct {
				Tenant string `json:"tenant"`
				Used   int64  `json:"used"`
			} `json:"tenants"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Usage.Backend != "redis" || len(st.Usage.Tenants) != 1 || st.Usage.Tenants[0].Used != 10 {
		t.Fatalf("status: %v %s", err, raw)
	}

	// The CLI exports the same numbers, as JSON and as CSV.
	cli := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(caddyBinary(t), append([]string{"zapier", "usage", "--address", fmt.Sprintf("localhost:%d", s1.adminPort)}, args...)...).Output()
		if err != nil {
			t.Fatalf("caddy zapier usage %v: %v\n%s", args, err, out)
		}
		return out
	}
	var fromCLI usageReport
	if err := json.Unmarshal(cli("--tenant", "org"), &fromCLI); err != nil || fromCLI.Tasks != 10 || fromCLI.ActionRuns != want || fromCLI.APICalls != reports[1].APICalls {
		t.Fatalf("CLI json: %v %+v", err, fromCLI)
	}
	rows, err := csv.NewReader(strings.NewReader(string(cli("--tenant", "org", "--format", "csv")))).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("CLI csv: %v %v", err, rows)
	}
	col := map[string]string{}
	for i, h := range rows[0] {
		col[h] = rows[1][i]
	}
	if col["tenant"] != "org" || col["tasks"] != "10" || col["action_runs_success"] != "4" || col["action_runs_error"] != "1" ||
		col["mcp_calls_success"] != "3" || col["mcp_calls_error"] != "1" || col["api_calls"] != strconv.FormatInt(reports[1].APICalls, 10) {
		t.Fatalf("CLI csv: %v", col)
	}
}
