package caddymodule

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
)

type mcpMetrics struct {
	authorizations *prometheus.CounterVec
	requests       *prometheus.CounterVec
	toolCalls      *prometheus.CounterVec
	toolDuration   *prometheus.HistogramVec
	refreshes      prometheus.Counter
}

var sharedMCPMetrics = func() *mcpMetrics {
	m := &mcpMetrics{
		authorizations: newCounterVec("mcp_authorizations_total",
			"MCP authorize callbacks, by outcome.", "outcome"),
		requests: newCounterVec("mcp_requests_total",
			"Requests proxied to apps' MCP servers, by JSON-RPC method class and outcome.", "method", "outcome"),
		toolCalls: newCounterVec("mcp_tool_calls_total",
			"MCP tools/call requests, by app and outcome.", "app", "outcome"),
		toolDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "zapier", Name: "mcp_tool_call_duration_seconds",
			Help:    "Duration of MCP tools/call requests, until the response stream ended.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"outcome"}),
		refreshes: newCounter("mcp_token_refreshes_total",
			"MCP requests that met a refused token and were replayed after a refresh."),
	}
	for _, o := range mcpgateway.AuthOutcomes {
		m.authorizations.WithLabelValues(string(o))
	}
	for _, o := range mcpgateway.Outcomes {
		m.toolDuration.WithLabelValues(o)
		for _, c := range mcpgateway.MethodClasses {
			m.requests.WithLabelValues(c, o)
		}
	}
	for _, kind := range mcpgateway.ExchangeKinds {
		sharedMetrics.exchangeDuration.WithLabelValues(kind)
		for _, outcome := range exchangeOutcomes {
			sharedMetrics.exchanges.WithLabelValues(kind, outcome)
		}
	}
	return m
}()

func registerMCPMetrics(ctx caddy.Context) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	m := sharedMCPMetrics
	for _, c := range []prometheus.Collector{m.authorizations, m.requests, m.toolCalls, m.toolDuration, m.refreshes} {
		_ = registerOrExisting(reg, c)
	}
}

// observe is the proxy's hook: metrics for every request; for a tool call
// also a span and an audit line (keyed identity hash, app, tool, duration,
// outcome; arguments only with audit_payloads). Never a token.
func (h *MCP) observe(ctx context.Context, id mcpgateway.Identity, c mcpgateway.Call) {
	outcome := mcpgateway.Outcome(c)
	m := sharedMCPMetrics
	m.requests.WithLabelValues(mcpgateway.MethodClass(c.RPCMethod), outcome).Inc()
	if c.Refreshed {
		m.refreshes.Inc()
	}
	if c.RPCMethod != "tools/call" {
		return
	}
	app := c.App
	if outcome == mcpgateway.OutcomeAuthRequired || outcome == mcpgateway.OutcomeDenied || outcome == mcpgateway.OutcomeLimited || outcome == mcpgateway.OutcomeUnchecked ||
		(c.Status == 0 && c.Err != nil) {
		app = "none" // never reached a server: the name is the caller's, unbounded
	}
	m.toolCalls.WithLabelValues(app, outcome).Inc()
	m.toolDuration.WithLabelValues(outcome).Observe(c.Duration.Seconds())

	end := time.Now()
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName)
	_, span := tracer.Start(ctx, "zapier.mcp.tool_call", trace.WithTimestamp(end.Add(-c.Duration)),
		trace.WithAttributes(attribute.String("zapier.mcp.app", app), attribute.String("zapier.mcp.tool", c.Tool),
			attribute.String("zapier.outcome", outcome), attribute.Int("http.response.status_code", c.Status)))
	if outcome != mcpgateway.OutcomeSuccess {
		span.SetStatus(codes.Error, outcome)
	}
	span.End(trace.WithTimestamp(end))

	if ce := h.audit.Check(zapcore.InfoLevel, "mcp tool call"); ce != nil {
		fields := []zap.Field{
			zap.String("identity", gateway.LogHash(id.Tenant, id.User)),
			zap.String("app", c.App), zap.String("tool", c.Tool),
			zap.Duration("duration", c.Duration), zap.String("outcome", outcome),
			zap.Int("status", c.Status), zap.Bool("refreshed", c.Refreshed),
		}
		if h.AuditPayloads && len(c.Arguments) > 0 && len(c.Arguments) <= 64<<10 {
			fields = append(fields, zap.ByteString("arguments", c.Arguments))
		}
		ce.Write(fields...)
	}
}
