package usage

import "github.com/prometheus/client_golang/prometheus"

// The usage collectors: totals over every tenant, never a tenant label
// (tenants are unbounded; the per-tenant numbers are in the export).
var metrics = func() struct {
	tasks, triggerEvents, apiCalls, refusals, errors prometheus.Counter
	runs, mcpCalls, thresholds                       *prometheus.CounterVec
} {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "caddy", Subsystem: "zapier", Name: name, Help: help})
	}
	vec := func(name, help, label string, values ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "caddy", Subsystem: "zapier", Name: name, Help: help}, []string{label})
		for _, x := range values {
			v.WithLabelValues(x)
		}
		return v
	}
	m := struct {
		tasks, triggerEvents, apiCalls, refusals, errors prometheus.Counter
		runs, mcpCalls, thresholds                       *prometheus.CounterVec
	}{
		tasks:         counter("usage_tasks_total", "Zapier tasks spent through the gateway (successful action runs and MCP tool calls, and runs still running when answered)."),
		triggerEvents: counter("usage_trigger_events_total", "Trigger events delivered to the partner."),
		apiCalls:      counter("usage_api_calls_total", "Calls to Zapier's API spent from the request budget on a tenant's behalf."),
		refusals:      counter("quota_refusals_total", "Calls refused with 429 quota_exceeded before reaching Zapier."),
		errors:        counter("usage_errors_total", "Usage backend failures (counts lost, quota not enforced for that call)."),
		runs:          vec("usage_action_runs_total", "Action runs counted for usage, by outcome.", "outcome", "success", "error"),
		mcpCalls:      vec("usage_mcp_calls_total", "MCP tool calls counted for usage, by outcome.", "outcome", "success", "error"),
		thresholds:    vec("usage_threshold_events_total", "usage.threshold events sent, by percent.", "percent", "80", "100"),
	}
	return m
}()

// Collectors are the usage collectors, for the host's registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{metrics.tasks, metrics.triggerEvents, metrics.apiCalls, metrics.refusals, metrics.errors,
		metrics.runs, metrics.mcpCalls, metrics.thresholds}
}
