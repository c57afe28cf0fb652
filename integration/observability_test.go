package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// --- helpers ---

// metricsText scrapes the admin endpoint's /metrics.
func metricsText(t *testing.T) string {
	t.Helper()
	status, body := admin(t, http.MethodGet, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", status, body)
	}
	return string(body)
}

// sampleSum adds up the samples of name whose labels contain every one of
// labelMatches (so a sum over the labels left out).
func sampleSum(text, name string, labelMatches ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		matched := true
		for _, m := range labelMatches {
			matched = matched && strings.Contains(rest, m)
		}
		if !matched {
			continue
		}
		var v float64
		fields := strings.Fields(rest)
		if _, err := fmt.Sscan(fields[len(fields)-1], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// counterSnapshot is a few counters read in one scrape.
type counterSnapshot map[string]float64

var tokenPathCounters = map[string][]string{
	"miss":            {"caddy_zapier_token_lookups_total", `result="miss"`},
	"coalesced":       {"caddy_zapier_token_lookups_total", `result="coalesced"`},
	"hit":             {"caddy_zapier_token_lookups_total", `result="hit"`},
	"exchange_ok":     {"caddy_zapier_exchanges_total", `kind="access_token"`, `outcome="success"`},
	"exchange_failed": {"caddy_zapier_exchanges_total", `kind="access_token"`, `outcome="failed"`},
	"latency_count":   {"caddy_zapier_exchange_duration_seconds_count", `kind="access_token"`},
	"refused_missing": {"caddy_zapier_identity_refusals_total", `reason="identity_missing"`},
	"rotations":       {"caddy_zapier_key_rotations_total"},
}

func snapshot(t *testing.T) counterSnapshot {
	t.Helper()
	text := metricsText(t)
	s := counterSnapshot{}
	for key, sel := range tokenPathCounters {
		s[key] = sampleSum(text, sel[0], sel[1:]...)
	}
	return s
}

// expectDeltas checks after - before for the given counters (and that the
// other counters did not move).
func expectDeltas(t *testing.T, before, after counterSnapshot, want map[string]float64) {
	t.Helper()
	for key := range tokenPathCounters {
		if got := after[key] - before[key]; got != want[key] {
			t.Errorf("%s moved by %v, want %v", key, got, want[key])
		}
	}
}

// tokenGate holds requests to the fake's token endpoint until released, and
// records the headers of every request that reaches the fake.
type tokenGate struct {
	mu       sync.Mutex
	held     int
	release  chan struct{}
	released bool
	headers  map[string][]http.Header // by path
}

func newTokenGate() *tokenGate {
	return &tokenGate{release: make(chan struct{}), headers: map[string][]http.Header{}}
}

func (g *tokenGate) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.headers[r.URL.Path] = append(g.headers[r.URL.Path], r.Header.Clone())
		hold := r.URL.Path == "/oauth/token" && !g.released
		if hold {
			g.held++
		}
		g.mu.Unlock()
		if hold {
			<-g.release
		}
		next.ServeHTTP(w, r)
	})
}

func (g *tokenGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.released {
		g.released = true
		close(g.release)
	}
}

func (g *tokenGate) heldCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

func (g *tokenGate) seen(path string) []http.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.headers[path])
}

// --- metrics ---

// TestMetricsCountCoalescedColdRequests holds the one exchange until all 200
// requests for a cold identity are inside zapier_auth (Caddy's own in-flight
// gauge, from the metrics global option, says so), so the counts are exact: one exchange, one miss and 199
// coalesced lookups.
func TestMetricsCountCoalescedColdRequests(t *testing.T) {
	gate := newTokenGate()
	g := startGateway(t, gatewayOptions{globalExtra: "metrics", fakeFront: gate.front})
	t.Cleanup(gate.open) // registered after the fake's Close, so it runs before it
	before := snapshot(t)

	const clients = 200
	var wg sync.WaitGroup
	statuses := make([]int, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, _, err := send(request{path: "/zapier/api/v2/echo", tenant: "metrics-tenant", user: "metrics-user"})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
			statuses[i] = status
		}()
	}
	// Caddy instruments the site's top-level routes: the handle_path route
	// holding zapier_auth is the "subroute" one.
	eventually(t, 30*time.Second, "all requests inside zapier_auth with one exchange held", func() bool {
		inFlight := sampleSum(metricsText(t), "caddy_http_requests_in_flight", `handler="subroute"`)
		return inFlight == clients && gate.heldCount() == 1
	})
	gate.open()
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
	after := snapshot(t)
	expectDeltas(t, before, after, map[string]float64{
		"miss": 1, "coalesced": clients - 1, "exchange_ok": 1, "latency_count": 1,
	})
	if n := g.fake.ExchangesFor("metrics-tenant", "metrics-user"); n != 1 {
		t.Errorf("the fake saw %d exchanges, want 1", n)
	}
	text := metricsText(t)
	if entries := sampleSum(text, "caddy_zapier_cache_entries"); entries < 1 {
		t.Errorf("cache_entries = %v after a successful exchange", entries)
	}
	if bytes := sampleSum(text, "caddy_zapier_cache_bytes"); bytes < 1<<10 {
		t.Errorf("cache_bytes = %v with a token cached", bytes)
	}

	// A refusal and a failed exchange are counted too.
	g.do(request{path: "/zapier/api/v2/echo"})
	g.fake.FailNextTokenRequests(3, http.StatusInternalServerError, "")
	if status, _, _ := g.do(request{path: "/zapier/api/v2/echo", tenant: "metrics-tenant", user: "failing"}); status != http.StatusBadGateway {
		t.Errorf("failed exchange answered %d", status)
	}
	expectDeltas(t, after, snapshot(t), map[string]float64{"miss": 1, "exchange_failed": 1, "latency_count": 1, "refused_missing": 1})
}

// TestMetricsSurviveAReload reloads the config the way `caddy reload` does:
// the load succeeds (no duplicate registration), the counters carry on
// from where they were, the live gauges follow the new config, and the
// token cache is kept (the next request is a hit).
func TestMetricsSurviveAReload(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	g.echoAs("reload-tenant", "reload-user")
	g.echoAs("reload-tenant", "reload-user")
	before := snapshot(t)
	keysBefore := sampleSum(metricsText(t), "caddy_zapier_keys", `state="active"`)

	for i := range 2 {
		if err := g.reload(fmt.Sprintf("respond /reloaded-%d 204", i)); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		waitForSingleListener(t, gatewayPort)
		if status, _, _ := g.do(request{path: fmt.Sprintf("/reloaded-%d", i)}); status != http.StatusNoContent {
			t.Fatalf("reload %d did not take effect: %d", i, status)
		}
	}
	afterReload := snapshot(t)
	expectDeltas(t, before, afterReload, nil)
	if before["exchange_ok"] < 1 || before["hit"] < 1 {
		t.Fatalf("counters before the reload look reset already: %v", before)
	}
	if got := sampleSum(metricsText(t), "caddy_zapier_keys", `state="active"`); got != 1 || keysBefore != 1 {
		t.Errorf("active keys before/after the reloads: %v/%v, want 1/1", keysBefore, got)
	}

	g.echoAs("reload-tenant", "reload-user")
	expectDeltas(t, afterReload, snapshot(t), map[string]float64{"hit": 1})
	if n := g.fake.ExchangesFor("reload-tenant", "reload-user"); n != 1 {
		t.Errorf("exchanges after the reloads = %d, want 1 (the cache survives)", n)
	}
}

// TestDashboardQueriesOnlyExistingMetrics checks that every metric the
// Grafana dashboard queries is on /metrics, and that every caddy_zapier
// metric is on the dashboard.
func TestDashboardQueriesOnlyExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("../dashboards/caddy-zapier.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title         string            `json:"title"`
		UID           string            `json:"uid"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion == 0 || len(dash.Panels) == 0 {
		t.Fatalf("not a Grafana dashboard: title %q uid %q schemaVersion %d, %d panels", dash.Title, dash.UID, dash.SchemaVersion, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		var panel struct {
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		}
		if err := json.Unmarshal(p, &panel); err != nil {
			t.Fatal(err)
		}
		if panel.Type != "row" && len(panel.Targets) == 0 {
			t.Errorf("panel %s has no query", p)
		}
		for _, target := range panel.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		b, _ := json.Marshal(v.Query)
		exprs = append(exprs, string(b))
	}

	g := startGateway(t, gatewayOptions{budget: testBudget}) // the budget's gauges exist only with it on
	g.echoAs("org", "alice")                                 // calls per endpoint appear with the first call
	exposed := map[string]bool{}
	for _, line := range strings.Split(metricsText(t), "\n") {
		if name, _, ok := strings.Cut(line, "{"); ok && !strings.HasPrefix(line, "#") {
			exposed[name] = true
		} else if name, _, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
			exposed[name] = true
		}
	}
	queried := map[string]bool{}
	for _, expr := range exprs {
		for _, name := range regexp.MustCompile(`\bcaddy_zapier_[a-z_]+`).FindAllString(expr, -1) {
			queried[name] = true
			if !exposed[name] {
				t.Errorf("the dashboard queries %s, which /metrics does not have", name)
			}
		}
	}
	family := regexp.MustCompile(`_(bucket|sum|count)$`)
	for name := range exposed {
		if !strings.HasPrefix(name, "caddy_zapier_") {
			continue
		}
		if !queried[name] && !queried[family.ReplaceAllString(name, "_bucket")] && !queried[family.ReplaceAllString(name, "_count")] {
			t.Errorf("%s is not on the dashboard", name)
		}
	}
	if len(queried) < 10 {
		t.Errorf("the dashboard queries only %d caddy_zapier metrics", len(queried))
	}
}

// --- traces ---

// Caddy's tracing handler takes its exporter from OTEL_TRACES_EXPORTER
// through autoexport, whose registry accepts more exporters: the test
// registers an in-memory one, so real spans from a real Caddy are checked.
var itestSpans = tracetest.NewInMemoryExporter()

func init() {
	autoexport.RegisterSpanExporter("itest_memory", func(context.Context) (sdktrace.SpanExporter, error) {
		return itestSpans, nil
	})
}

func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func spanAttr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func TestTracesNestUnderTheRequestSpan(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "itest_memory")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: export promptly
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	gate := newTokenGate()
	gate.open() // record only
	g := startGateway(t, gatewayOptions{fakeFront: gate.front})
	// Caddy shares one tracer provider between configs while any config
	// uses it, so tracing is switched on by a reload after a config without
	// it: the provider, and its exporter, are this test's.
	if err := g.reload("tracing {\n\t\tspan gateway-request\n\t}"); err != nil {
		t.Fatal(err)
	}
	waitForSingleListener(t, gatewayPort)
	itestSpans.Reset()

	const tenant, user = "trace-tenant-id", "trace-user-id"
	cold := g.echoAs(tenant, user)
	warm := g.echoAs(tenant, user)
	// The request spans of the two calls are the ones zapier_auth annotated;
	// the fake's JWKS fetch through the gateway is traced too.
	var spans tracetest.SpanStubs
	var requests []tracetest.SpanStub
	eventually(t, 15*time.Second, "both requests' spans exported", func() bool {
		spans = itestSpans.GetSpans()
		requests = slices.DeleteFunc(spansNamed(spans, "gateway-request"), func(s tracetest.SpanStub) bool {
			return spanAttr(s, "zapier.token_lookup") == ""
		})
		return len(requests) == 2 && len(spansNamed(spans, "zapier.exchange")) == 1
	})

	exchange := spansNamed(spans, "zapier.exchange")[0]
	sign := spansNamed(spans, "zapier.sign_jwt")
	client := spansNamed(spans, "HTTP POST")
	if len(sign) != 1 || len(client) != 1 {
		t.Fatalf("signing spans %d, client spans %d, want 1 each", len(sign), len(client))
	}
	var coldReq tracetest.SpanStub
	found := false
	for _, r := range requests {
		if r.SpanContext.SpanID() == exchange.Parent.SpanID() && r.SpanContext.TraceID() == exchange.SpanContext.TraceID() {
			coldReq, found = r, true
		}
	}
	if !found {
		t.Fatalf("the exchange span's parent %s is not a request span", exchange.Parent.SpanID())
	}
	if sign[0].Parent.SpanID() != exchange.SpanContext.SpanID() || client[0].Parent.SpanID() != exchange.SpanContext.SpanID() {
		t.Error("signing and the call to the token endpoint are not children of the exchange span")
	}
	for key, want := range map[string]string{"zapier.outcome": "success", "zapier.exchange.kind": "access_token"} {
		if got := spanAttr(exchange, key); got != want {
			t.Errorf("exchange span %s = %q, want %q", key, got, want)
		}
	}
	lookups := []string{spanAttr(requests[0], "zapier.token_lookup"), spanAttr(requests[1], "zapier.token_lookup")}
	slices.Sort(lookups)
	if !slices.Equal(lookups, []string{"hit", "miss"}) {
		t.Errorf("token lookups on the request spans: %v, want hit and miss", lookups)
	}

	// The token endpoint got the client span's context; the proxied call got
	// the request's trace from Caddy.
	tokenCalls := gate.seen("/oauth/token")
	want := fmt.Sprintf("00-%s-%s-01", client[0].SpanContext.TraceID(), client[0].SpanContext.SpanID())
	if len(tokenCalls) != 1 || tokenCalls[0].Get("Traceparent") != want {
		t.Errorf("traceparent at the token endpoint: %v, want %s", tokenCalls, want)
	}
	if tp := cold.header("Traceparent"); !strings.Contains(tp, coldReq.SpanContext.TraceID().String()) {
		t.Errorf("proxied call's traceparent %q is not in the request's trace", tp)
	}
	if warm.header("Traceparent") == "" {
		t.Error("the cached call carried no traceparent")
	}

	// No span holds an identity, a token, a JWT or the client secret.
	token := strings.TrimPrefix(cold.header("Authorization"), "Bearer ")
	for _, s := range spans {
		for _, kv := range s.Attributes {
			v := kv.Value.Emit()
			for _, secret := range []string{tenant, user, token, testSecret} {
				if strings.Contains(v, secret) {
					t.Errorf("span %s attribute %s holds %q", s.Name, kv.Key, secret)
				}
			}
			if strings.Contains(v, "eyJ") {
				t.Errorf("span %s attribute %s holds a JWT", s.Name, kv.Key)
			}
		}
	}
}

// --- events ---

// eventRecorder is an events.handlers module that keeps what it receives.
type eventRecorder struct{}

type seenEvent struct {
	name, origin string
	data         map[string]any
}

var (
	eventsMu   sync.Mutex
	seenEvents []seenEvent
)

func init() { caddy.RegisterModule(eventRecorder{}) }

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.itest_record", New: func() caddy.Module { return new(eventRecorder) }}
}

func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func (*eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	ev := seenEvent{name: e.Name(), data: e.Data}
	if o := e.Origin(); o != nil {
		ev.origin = string(o.CaddyModule().ID)
	}
	eventsMu.Lock()
	seenEvents = append(seenEvents, ev)
	eventsMu.Unlock()
	return nil
}

func takeEvents() []seenEvent {
	eventsMu.Lock()
	defer eventsMu.Unlock()
	ev := seenEvents
	seenEvents = nil
	return ev
}

const recordEvents = `events {
		on zapier_key_rotated itest_record
		on zapier_breaker_opened itest_record
	}`

func expectRotationEvent(t *testing.T, step, kid, state string) {
	t.Helper()
	var ev []seenEvent
	eventually(t, 15*time.Second, step+": a zapier_key_rotated event", func() bool {
		ev = append(ev, takeEvents()...)
		return len(ev) > 0
	})
	if len(ev) != 1 {
		t.Fatalf("%s: events %+v, want one", step, ev)
	}
	e := ev[0]
	if e.name != "zapier_key_rotated" || e.origin != "zapier" || e.data["state"] != state || e.data["kid"] == "" ||
		(kid != "" && e.data["kid"] != kid) || e.data["activates_at"] == "" {
		t.Errorf("%s: event %+v, want kid %q state %s from zapier", step, e, kid, state)
	}
}

func TestKeyRotationsEmitEvents(t *testing.T) {
	takeEvents()
	startGateway(t, gatewayOptions{globalExtra: recordEvents})
	admin(t, http.MethodGet, "/zapier/status") // keys loaded: the baseline, not an event
	if ev := takeEvents(); len(ev) != 0 {
		t.Fatalf("events before any rotation: %+v", ev)
	}
	rotationsBefore := sampleSum(metricsText(t), "caddy_zapier_key_rotations_total")

	rotate := func(query string) string {
		status, body := admin(t, http.MethodPost, "/zapier/keys/rotate"+query)
		if status != http.StatusOK {
			t.Fatalf("rotate%s: %d %s", query, status, body)
		}
		var res struct {
			Next struct{ KID string } `json:"next"`
		}
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		return res.Next.KID
	}
	next := rotate("")
	expectRotationEvent(t, "admin rotation", next, "next")
	if again := rotate(""); again != next {
		t.Fatalf("second rotate gave %s, want the pending %s", again, next)
	}
	rotate("?immediate=1")
	expectRotationEvent(t, "immediate promotion", next, "active")
	if ev := takeEvents(); len(ev) != 0 {
		t.Errorf("extra events: %+v", ev)
	}
	if got := sampleSum(metricsText(t), "caddy_zapier_key_rotations_total") - rotationsBefore; got != 2 {
		t.Errorf("key_rotations_total moved by %v, want 2", got)
	}
}

func TestScheduledRotationEmitsAnEvent(t *testing.T) {
	takeEvents()
	startGateway(t, gatewayOptions{globalExtra: recordEvents, zapierExtra: "jwt_ttl 1s\n\t\tkey_overlap 2s\n\t\tkey_rotation 3s"})
	admin(t, http.MethodGet, "/zapier/status")
	// The first key signs from start; a second after, maintenance publishes
	// the next one (it signs key_overlap later).
	expectRotationEvent(t, "scheduled rotation", "", "next")
}

// --- caddy zapier subcommands ---

func runZapierCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runCaddy(t, []string{"XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()},
		append([]string{"zapier"}, args...)...)
}

func TestZapierSubcommands(t *testing.T) {
	caddyBinary(t) // build first, outside the gateway's lifetime
	g := startGateway(t, gatewayOptions{})
	address := fmt.Sprintf("localhost:%d", adminPort)
	g.echoAs("cli-tenant", "cli-user")
	g.echoAs("cli-tenant", "cli-other")

	out, err := runZapierCommand(t, "status", "--address", address)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		Keys []struct{ KID, State string }
	}
	_, body := admin(t, http.MethodGet, "/zapier/status")
	if err := json.Unmarshal(body, &st); err != nil || len(st.Keys) != 1 {
		t.Fatalf("status JSON %s: %v", body, err)
	}
	for _, want := range []string{"Signing keys:", st.Keys[0].KID, "active", "Token cache: 2 of 100000 entries", "Breaker: token endpoint closed, API closed"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	out, err = runZapierCommand(t, "status", "--json", "--address", address)
	if err != nil || !json.Valid([]byte(out)) {
		t.Errorf("status --json: %v\n%s", err, out)
	}

	out, err = runZapierCommand(t, "rotate", "--address", address)
	if err != nil || !strings.Contains(out, "is published and signs from") {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	next := regexp.MustCompile(`Key (\S+) \(ES256\)`).FindStringSubmatch(out)
	if next == nil || next[1] == st.Keys[0].KID {
		t.Fatalf("rotate did not name a new key:\n%s", out)
	}
	out, err = runZapierCommand(t, "rotate", "--immediate", "--address", address)
	if err != nil || !strings.Contains(out, "Key "+next[1]+" (ES256) signs from now on") {
		t.Fatalf("rotate --immediate: %v\n%s", err, out)
	}

	out, err = runZapierCommand(t, "purge", "--tenant", "cli-tenant", "--user", "cli-user", "--address", address)
	if err != nil || !strings.Contains(out, "Purged the identity's access token.") || strings.Contains(out, "cli-user") {
		t.Fatalf("purge one: %v\n%s", err, out)
	}
	g.echoAs("cli-tenant", "cli-user")
	if n := g.fake.ExchangesFor("cli-tenant", "cli-user"); n != 2 {
		t.Errorf("exchanges after purging the identity = %d, want 2", n)
	}
	out, err = runZapierCommand(t, "purge", "--address", address)
	if err != nil || !strings.Contains(out, "Purged all access tokens (2).") {
		t.Fatalf("purge all: %v\n%s", err, out)
	}

	// Failures exit non-zero with a reason.
	out, err = runZapierCommand(t, "purge", "--tenant", "cli-tenant", "--address", address)
	if err == nil || !strings.Contains(out, "give both --tenant and --user") {
		t.Errorf("purge with only a tenant: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	out, err = runZapierCommand(t, "status", "--address", closed)
	if err == nil || !strings.Contains(out, "GET /zapier/status at "+closed) {
		t.Errorf("status against nothing: %v\n%s", err, out)
	}
	out, err = runZapierCommand(t, "rotate", "--immediate", "--address", address, "extra-arg")
	if err == nil {
		t.Errorf("rotate with a stray argument succeeded:\n%s", out)
	}
}

func TestBreakerOpeningEmitsAnEvent(t *testing.T) {
	takeEvents()
	g := startGateway(t, gatewayOptions{globalExtra: recordEvents})
	opensBefore := sampleSum(metricsText(t), "caddy_zapier_breaker_opens_total")
	g.fake.FailNextTokenRequests(1000, http.StatusBadGateway, "")
	t.Cleanup(func() { g.fake.FailNextTokenRequests(0, 0, "") })
	for i := range 5 { // each exhausts its retries: 5 consecutive transient failures open it
		if status, _, _ := g.do(request{path: "/zapier/api/v2/echo", tenant: "breaker", user: fmt.Sprint("user-", i)}); status != http.StatusBadGateway {
			t.Fatalf("failing exchange %d answered %d", i, status)
		}
	}
	var ev []seenEvent
	eventually(t, 15*time.Second, "a zapier_breaker_opened event", func() bool {
		ev = append(ev, takeEvents()...)
		return len(ev) > 0
	})
	if len(ev) != 1 || ev[0].name != "zapier_breaker_opened" || ev[0].origin != "zapier" ||
		ev[0].data["retry_after_seconds"] != 5.0 || ev[0].data["until"] == "" {
		t.Errorf("events %+v, want one zapier_breaker_opened from zapier with retry_after_seconds 5", ev)
	}
	if got := sampleSum(metricsText(t), "caddy_zapier_breaker_opens_total") - opensBefore; got != 1 {
		t.Errorf("breaker_opens_total moved by %v, want 1", got)
	}
}
