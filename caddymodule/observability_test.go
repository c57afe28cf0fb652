package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/jwks"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/tokenstore"
	"github.com/zapgate/caddy-zapier/tracing"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// --- metrics ---

func TestEveryLabelCombinationExistsBeforeItIsObserved(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if _, err := metrics.RegisterCore(reg); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	want := map[string]int{
		"caddy_zapier_token_lookups_total":       len(metrics.LookupCounters),
		"caddy_zapier_exchanges_total":           5 * len(metrics.ExchangeOutcomes), // access, connect and the three MCP kinds (mcp_metrics.go)
		"caddy_zapier_exchange_duration_seconds": 5,
		"caddy_zapier_cache_evictions_total":     1,
		"caddy_zapier_key_rotations_total":       1,
		"caddy_zapier_identity_refusals_total":   3,
		"caddy_zapier_connect_completions_total": len(metrics.ConnectFlows) * len(metrics.ConnectOutcomes),
		"caddy_zapier_action_runs_total":         len(metrics.ActionOutcomes),
		"caddy_zapier_breaker_opens_total":       1,
	}
	for name, n := range want {
		if series[name] != n {
			t.Errorf("%s has %d series, want %d", name, series[name], n)
		}
	}
	if len(series) != len(want) {
		t.Errorf("families %v, want exactly %v", series, want)
	}
}

func TestMetricsSurviveANewRegistry(t *testing.T) {
	first := prometheus.NewPedanticRegistry()
	m, err := metrics.RegisterCore(first)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveActionRun(actions.OutcomePending)
	before := counterValue(t, m.ActionRuns.WithLabelValues(string(actions.OutcomePending)))

	// A reload registers the same collectors in the next config's registry,
	// and registering twice in one registry is not an error either.
	second := prometheus.NewPedanticRegistry()
	for range 2 {
		if _, err := metrics.RegisterCore(second); err != nil {
			t.Fatalf("registering again: %v", err)
		}
	}
	families, err := second.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, f := range families {
		if f.GetName() == "caddy_zapier_action_runs_total" {
			got = len(f.GetMetric())
		}
	}
	if got != len(metrics.ActionOutcomes) {
		t.Fatalf("action run series in the new registry: %d", got)
	}
	if after := counterValue(t, m.ActionRuns.WithLabelValues(string(actions.OutcomePending))); after != before || before < 1 {
		t.Errorf("pending runs %v before the reload, %v after", before, after)
	}
}

func TestExchangeOutcomesAreBounded(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "success"},
		{&zapierapi.Error{Kind: zapierapi.KindRejected}, "rejected"},
		{&zapierapi.Error{Kind: zapierapi.KindFailed}, "failed"},
		{&zapierapi.Error{Kind: zapierapi.KindTimeout}, "timeout"},
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited}, "rate_limited"},
		{&zapierapi.Error{Kind: zapierapi.KindUnavailable}, "unavailable"},
		{&zapierapi.Error{}, "failed"},
		{fmt.Errorf("wrapped: %w", &zapierapi.Error{Kind: 99}), "failed"},
		{context.Canceled, "failed"},
	} {
		got := metrics.ExchangeOutcome(tc.err)
		if got != tc.want {
			t.Errorf("metrics.ExchangeOutcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
		found := false
		for _, o := range metrics.ExchangeOutcomes {
			found = found || o == got
		}
		if !found {
			t.Errorf("outcome %q is not one of the pre-created label values", got)
		}
	}
}

// counterValue reads a counter without the testutil package (whose
// dependencies this module does not carry).
func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// --- tracing ---

// tokenEndpoint is a Zapier token endpoint that records the trace headers
// it receives and answers with status (200: a token).
func tokenEndpoint(t *testing.T, status int) (*httptest.Server, func() []http.Header) {
	t.Helper()
	var mu sync.Mutex
	var seen []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusOK {
			fmt.Fprint(w, `{"access_token":"zap_at_secret_value","token_type":"Bearer","expires_in":3600}`)
		} else {
			fmt.Fprint(w, `{"error":"invalid_grant","error_description":"no such user"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// exchangeApp is an App with just what App.exchange needs, talking to
// tokenURL through the traced transport.
func exchangeApp(t *testing.T, tokenURL string) *App {
	t.Helper()
	keys, err := jwks.NewManager(jwks.NewMemoryStorage(), jwks.Config{Issuer: "https://issuer.example"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := zapierapi.New(zapierapi.Config{
		TokenURL: tokenURL, ClientID: "client", ClientSecret: "client-secret-value",
		MaxAttempts: 1, HTTPClient: tracedHTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &App{
		SigningAlg: "ES256",
		keys:       keys,
		keysLoad:   new(keysLoad),
		client:     client,
		metrics:    metrics.Core,
		logger:     zap.NewNop(),
		inflight:   make(chan struct{}, 1),
		tokens:     &tokenstore.Store{Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{}), APIBreaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{})},
	}
}

// requestSpan stands in for Caddy's tracing handler: a recording span in
// the request context, from a provider exporting to memory.
func requestSpan(t *testing.T) (context.Context, trace.Span, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("caddy").Start(context.Background(), "request")
	return ctx, span, exp
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %v", name, names)
	return tracetest.SpanStub{}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// noSecretsIn fails if any attribute of any span holds one of the values.
func noSecretsIn(t *testing.T, spans tracetest.SpanStubs, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		for _, kv := range s.Attributes {
			v := kv.Value.Emit()
			for _, secret := range secrets {
				if strings.Contains(v, secret) {
					t.Errorf("span %s attribute %s = %q holds %q", s.Name, kv.Key, v, secret)
				}
			}
			if strings.HasPrefix(v, "eyJ") {
				t.Errorf("span %s attribute %s looks like a JWT", s.Name, kv.Key)
			}
		}
		if strings.Contains(s.Status.Description, "no such user") {
			t.Errorf("span %s status quotes Zapier's description", s.Name)
		}
	}
}

func TestExchangeSpansNestUnderTheRequestAndPropagate(t *testing.T) {
	srv, headers := tokenEndpoint(t, http.StatusOK)
	a := exchangeApp(t, srv.URL)
	ctx, req, exp := requestSpan(t)
	key := tokencache.Key{Tenant: "tenant-secret-id", User: "user-secret-id"}

	if _, err := a.exchange(ctx, key); err != nil {
		t.Fatal(err)
	}
	req.End()
	spans := exp.GetSpans()
	exchange := spanNamed(t, spans, tracing.SpanExchange)
	sign := spanNamed(t, spans, tracing.SpanSignJWT)
	client := spanNamed(t, spans, "HTTP POST")
	if exchange.Parent.SpanID() != req.SpanContext().SpanID() {
		t.Errorf("exchange span's parent is %s, want the request span", exchange.Parent.SpanID())
	}
	if sign.Parent.SpanID() != exchange.SpanContext.SpanID() || client.Parent.SpanID() != exchange.SpanContext.SpanID() {
		t.Error("signing and the HTTP call are not children of the exchange span")
	}
	for k, want := range map[string]string{
		"zapier.outcome": "success", "zapier.exchange.kind": "access_token",
		"zapier.identity": gateway.LogHash(key.Tenant, key.User),
	} {
		if got := attr(exchange, k); got != want {
			t.Errorf("exchange %s = %q, want %q", k, got, want)
		}
	}
	if got := attr(sign, "zapier.outcome"); got != "success" {
		t.Errorf("signing outcome %q", got)
	}
	noSecretsIn(t, spans, key.Tenant, key.User, "zap_at_secret_value", "client-secret-value")

	// Zapier got the client span's context.
	seen := headers()
	if len(seen) != 1 {
		t.Fatalf("%d token requests", len(seen))
	}
	want := fmt.Sprintf("00-%s-%s-01", client.SpanContext.TraceID(), client.SpanContext.SpanID())
	if got := seen[0].Get("Traceparent"); got != want {
		t.Errorf("traceparent at Zapier = %q, want %q", got, want)
	}
}

func TestFailedExchangeSpanCarriesTheOutcomeOnly(t *testing.T) {
	srv, _ := tokenEndpoint(t, http.StatusBadRequest)
	a := exchangeApp(t, srv.URL)
	ctx, req, exp := requestSpan(t)
	key := tokencache.Key{Tenant: "t-secret", User: "u-secret"}
	if _, err := a.exchange(ctx, key); err == nil {
		t.Fatal("exchange succeeded against a 400")
	}
	req.End()
	spans := exp.GetSpans()
	exchange := spanNamed(t, spans, tracing.SpanExchange)
	if got := attr(exchange, "zapier.outcome"); got != "rejected" {
		t.Errorf("outcome %q, want rejected", got)
	}
	if got := attr(exchange, "http.response.status_code"); got != "400" {
		t.Errorf("status code attribute %q, want 400", got)
	}
	if exchange.Status.Code.String() != "Error" || exchange.Status.Description != "rejected" {
		t.Errorf("span status %+v, want Error/rejected", exchange.Status)
	}
	noSecretsIn(t, spans, key.Tenant, key.User, "client-secret-value")
}

func TestNoTraceHeadersWithoutTracing(t *testing.T) {
	srv, headers := tokenEndpoint(t, http.StatusOK)
	a := exchangeApp(t, srv.URL)
	if _, err := a.exchange(context.Background(), tokencache.Key{Tenant: "t", User: "u"}); err != nil {
		t.Fatal(err)
	}
	if got := headers()[0].Get("Traceparent"); got != "" {
		t.Errorf("traceparent %q sent without a trace", got)
	}
}

func TestLookupIsAnnotatedOnTheRequestSpan(t *testing.T) {
	ctx, req, exp := requestSpan(t)
	tracing.AnnotateLookup(ctx, tokencache.Coalesced)
	req.End()
	if got := attr(spanNamed(t, exp.GetSpans(), "request"), "zapier.token_lookup"); got != "coalesced" {
		t.Errorf("token_lookup = %q", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { tracing.AnnotateLookup(context.Background(), tokencache.Hit) }); allocs != 0 {
		t.Errorf("tracing.AnnotateLookup allocates %v times without tracing", allocs)
	}
}

// --- events ---

type recordedEvent struct {
	name string
	data map[string]any
}

type fakeEmitter struct {
	mu     sync.Mutex
	events []recordedEvent
	sent   chan struct{}
}

func (f *fakeEmitter) ShouldEmit(string) bool { return true }

func (f *fakeEmitter) Emit(_ caddy.Context, name string, data map[string]any) caddy.Event {
	f.mu.Lock()
	f.events = append(f.events, recordedEvent{name, data})
	f.mu.Unlock()
	if f.sent != nil {
		f.sent <- struct{}{}
	}
	return caddy.Event{}
}

func (f *fakeEmitter) take() []recordedEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := f.events
	f.events = nil
	return ev
}

func TestKeyRotationsAreAnnouncedOnce(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	keys, err := jwks.NewManager(jwks.NewMemoryStorage(), jwks.Config{
		Issuer: "https://issuer.example", Rotation: 30 * 24 * time.Hour, Overlap: 24 * time.Hour, Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	em := new(fakeEmitter)
	a := &App{keys: keys, metrics: metrics.Core, logger: zap.NewNop(), events: &appEvents{emitter: em}}
	keys.OnChange(a.keysChanged)
	ctx := context.Background()
	rotations := func() float64 { return counterValue(t, metrics.Core.Rotations) }
	start := rotations()

	expect := func(step string, wantState jwks.KeyState, wantKID string) string {
		t.Helper()
		ev := em.take()
		if len(ev) != 1 || ev[0].name != eventKeyRotated {
			t.Fatalf("%s: events %+v, want one %s", step, ev, eventKeyRotated)
		}
		d := ev[0].data
		if d["state"] != string(wantState) || d["kid"] == "" || (wantKID != "" && d["kid"] != wantKID) {
			t.Fatalf("%s: data %v, want state %s kid %q", step, d, wantState, wantKID)
		}
		return d["kid"].(string)
	}
	expectNone := func(step string) {
		t.Helper()
		if ev := em.take(); len(ev) != 0 {
			t.Fatalf("%s: unexpected events %+v", step, ev)
		}
	}

	if err := keys.Load(ctx); err != nil {
		t.Fatal(err)
	}
	expectNone("first load")
	next, err := a.rotateKeys(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	expect("admin rotation", jwks.StateNext, next.KID)
	if _, err := a.rotateKeys(ctx, false); err != nil {
		t.Fatal(err)
	}
	expectNone("rotation while a next key is pending")
	if _, err := a.rotateKeys(ctx, true); err != nil {
		t.Fatal(err)
	}
	expect("promotion of the pending key", jwks.StateActive, next.KID)
	fresh, err := a.rotateKeys(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	expect("immediate rotation with no pending key", jwks.StateActive, fresh.KID)

	// The schedule: 30 days later maintenance publishes the next key.
	clockMu.Lock()
	now = now.Add(30 * 24 * time.Hour)
	clockMu.Unlock()
	if _, err := keys.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	expect("scheduled rotation", jwks.StateNext, "")
	if _, err := keys.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	expectNone("maintenance with nothing due")
	if got := rotations() - start; got != 4 {
		t.Errorf("rotations counted %v, want 4", got)
	}
}

func TestBreakerOpeningIsCountedAndEmitted(t *testing.T) {
	em := &fakeEmitter{sent: make(chan struct{}, 1)}
	a := &App{metrics: metrics.Core, logger: zap.NewNop(), events: &appEvents{emitter: em}}
	before := counterValue(t, metrics.Core.BreakerOpens)
	a.emitBreakerOpened(5 * time.Second)
	select {
	case <-em.sent:
	case <-time.After(10 * time.Second):
		t.Fatal("no event emitted")
	}
	ev := em.take()
	if len(ev) != 1 || ev[0].name != eventBreakerOpened || ev[0].data["retry_after_seconds"] != 5.0 || ev[0].data["until"] == "" {
		t.Errorf("events %+v", ev)
	}
	if got := counterValue(t, metrics.Core.BreakerOpens) - before; got != 1 {
		t.Errorf("breaker opens counted %v, want 1", got)
	}
}

// --- command ---

func TestStatusIsPrintedForPeople(t *testing.T) {
	act := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var out bytes.Buffer
	printStatus(&out, Status{
		Keys: []jwks.KeyInfo{
			{KID: "kid-active", Alg: "ES256", State: jwks.StateActive, ActivatesAt: act, RetiresAt: act.Add(time.Hour), DeletesAt: act.Add(2 * time.Hour)},
			{KID: "kid-next", Alg: "ES256", State: jwks.StateNext, ActivatesAt: act.Add(time.Hour)},
		},
		Cache:      CacheStatus{Entries: 3, Size: 100, HitRatio: 0.75},
		Breaker:    "closed",
		APIBreaker: "cooling_down",
		Budget: &BudgetStatus{Snapshot: budget.Snapshot{PerIP: budget.LimitState{Limit: "60/1m0s", Remaining: 12},
			Partner: budget.LimitState{Limit: "150/1m0s", Remaining: 90}, PartnerMode: "shared", Peers: 2, Queued: 3}, MaxWait: "10s"},
	})
	got := out.String()
	for _, want := range []string{"kid-active", "active", "kid-next", "next", act.Local().Format(time.RFC3339),
		"Token cache: 3 of 100 entries, hit ratio 75.0%", "Breaker: token endpoint closed, API cooling_down",
		"API budget: per IP 60/1m0s (12 left), partner 150/1m0s (90 left, shared, 2 sidecars), 3 queued, max wait 10s"} {
		if !strings.Contains(got, want) {
			t.Errorf("status output lacks %q:\n%s", want, got)
		}
	}
	// A key with no successor has no retirement time yet.
	if f := strings.Fields(strings.Split(got, "\n")[3]); len(f) != 6 || f[0] != "kid-next" || f[4] != "-" || f[5] != "-" {
		t.Errorf("next key line %q should show - for retires and deleted", f)
	}
}

// tracedHTTPClient is a client over tracing.ZapierTransport without the request
// budget (the App's client adds it: budget.go).
func tracedHTTPClient() *http.Client {
	return &http.Client{Transport: tracing.ZapierTransport()}
}
