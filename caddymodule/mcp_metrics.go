package caddymodule

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/tracing"
)

// observe is the proxy's hook: metrics for every request; for a tool call
// also a span and an audit line (keyed identity hash, app, tool, duration,
// outcome; arguments only with audit_payloads). Never a token.
func (h *MCP) observe(ctx context.Context, id mcpgateway.Identity, c mcpgateway.Call) {
	outcome := mcpgateway.Outcome(c)
	m := metrics.MCP
	m.Requests.WithLabelValues(mcpgateway.MethodClass(c.RPCMethod), outcome).Inc()
	if c.Refreshed {
		m.Refreshes.Inc()
	}
	if c.RPCMethod != "tools/call" {
		return
	}
	app := c.App
	if outcome == mcpgateway.OutcomeAuthRequired || outcome == mcpgateway.OutcomeDenied || outcome == mcpgateway.OutcomeLimited || outcome == mcpgateway.OutcomeUnchecked ||
		(c.Status == 0 && c.Err != nil) {
		app = "none" // never reached a server: the name is the caller's, unbounded
	}
	m.ToolCalls.WithLabelValues(app, outcome).Inc()
	m.ToolDuration.WithLabelValues(outcome).Observe(c.Duration.Seconds())

	end := time.Now()
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracing.TracerName)
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
