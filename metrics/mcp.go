package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zapgate/caddy-zapier/mcpgateway"
)

// MCPSet is the collectors of the MCP routes.
type MCPSet struct {
	Authorizations *prometheus.CounterVec
	Requests       *prometheus.CounterVec
	ToolCalls      *prometheus.CounterVec
	ToolDuration   *prometheus.HistogramVec
	Refreshes      prometheus.Counter
}

// MCP is the one MCPSet of the process.
var MCP = func() *MCPSet {
	m := &MCPSet{
		Authorizations: NewCounterVec("mcp_authorizations_total",
			"MCP authorize callbacks, by outcome.", "outcome"),
		Requests: NewCounterVec("mcp_requests_total",
			"Requests proxied to apps' MCP servers, by JSON-RPC method class and outcome.", "method", "outcome"),
		ToolCalls: NewCounterVec("mcp_tool_calls_total",
			"MCP tools/call Requests, by app and outcome.", "app", "outcome"),
		ToolDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "zapier", Name: "mcp_tool_call_duration_seconds",
			Help:    "Duration of MCP tools/call Requests, until the response stream ended.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"outcome"}),
		Refreshes: NewCounter("mcp_token_refreshes_total",
			"MCP Requests that met a refused token and were replayed after a refresh."),
	}
	for _, o := range mcpgateway.AuthOutcomes {
		m.Authorizations.WithLabelValues(string(o))
	}
	for _, o := range mcpgateway.Outcomes {
		m.ToolDuration.WithLabelValues(o)
		for _, c := range mcpgateway.MethodClasses {
			m.Requests.WithLabelValues(c, o)
		}
	}
	for _, kind := range mcpgateway.ExchangeKinds {
		Core.ExchangeDuration.WithLabelValues(kind)
		for _, outcome := range ExchangeOutcomes {
			Core.Exchanges.WithLabelValues(kind, outcome)
		}
	}
	return m
}()

// RegisterMCP registers the MCP collectors into reg.
func RegisterMCP(reg *prometheus.Registry) {
	if reg == nil {
		return
	}
	m := MCP
	for _, c := range []prometheus.Collector{m.Authorizations, m.Requests, m.ToolCalls, m.ToolDuration, m.Refreshes} {
		_ = Register(reg, c)
	}
}
