package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/budget"
)

// The request budget's collectors, one set per process like the others.
var (
	budgetGranted = NewCounter("budget_granted_total",
		"Requests to Zapier's API the request budget let through.")
	budgetShed = NewCounterVec("budget_shed_total",
		"Requests to Zapier's API the request budget refused, by reason (queue_full, deadline, cooldown, canceled, closed).", "reason")
	budgetWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "budget_wait_seconds",
		Help:    "Time requests waited for the request budget before going to Zapier.",
		Buckets: []float64{0, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	budgetSharedChanges = NewCounterVec("budget_shared_changes_total",
		"Times the shared (Redis) partner budget became unavailable (fallback to this sidecar's share) or available again.", "available")
	apiCalls = NewCounterVec("api_calls_total",
		"Calls to Zapier's API, proxied by zapier_auth or made by the gateway, by endpoint pattern and status class (2xx, 3xx, 4xx, 429, 5xx, error).",
		"endpoint", "status")
)

// RegisterAPI registers the collectors of the calls to Zapier's API:
// the budget's, the calls per endpoint and the run callbacks.
func RegisterAPI(reg *prometheus.Registry) error {
	for _, reason := range []string{budget.ShedQueueFull, budget.ShedDeadline, budget.ShedCooldown, budget.ShedCanceled, budget.ShedClosed} {
		budgetShed.WithLabelValues(reason)
	}
	for _, available := range []string{"true", "false"} {
		budgetSharedChanges.WithLabelValues(available)
	}
	for _, c := range []prometheus.Collector{budgetGranted, budgetShed, budgetWait, budgetSharedChanges, apiCalls, RunCallbacks} {
		if err := Register(reg, c); err != nil {
			return err
		}
	}
	return nil
}

// ObserveBudget registers the gauges that read the live budget; they belong
// to this config's registry only.
func ObserveBudget(reg *prometheus.Registry, b *budget.Budget) error {
	gauge := func(name, help string, f func(budget.Snapshot) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "caddy", Subsystem: "zapier", Name: name, Help: help},
			func() float64 { return f(b.Snapshot()) })
	}
	for _, c := range []prometheus.Collector{
		gauge("budget_queue_length", "Requests waiting for the request budget.", func(s budget.Snapshot) float64 { return float64(s.Queued) }),
		gauge("budget_per_ip_spent", "Requests this sidecar sent to Zapier's API in the current per-IP window.", func(s budget.Snapshot) float64 { return float64(s.PerIP.Used) }),
		gauge("budget_per_ip_remaining", "Requests left in the current per-IP window.", func(s budget.Snapshot) float64 { return float64(s.PerIP.Remaining) }),
		gauge("budget_partner_spent", "Requests this sidecar sent in the current partner window (with Redis: its own part).", func(s budget.Snapshot) float64 { return float64(s.Partner.Used) }),
		gauge("budget_partner_remaining", "Requests left in the partner window as this sidecar counts it (with Redis: of its fallback share).", func(s budget.Snapshot) float64 { return float64(s.Partner.Remaining) }),
	} {
		if err := Register(reg, c); err != nil {
			return err
		}
	}
	return nil
}

// BudgetObserver feeds the budget's outcomes to the collectors.
type BudgetObserver struct{}

func (BudgetObserver) Granted(waited time.Duration) {
	budgetGranted.Inc()
	budgetWait.Observe(waited.Seconds())
}

func (BudgetObserver) Shed(reason string) { budgetShed.WithLabelValues(reason).Inc() }

func (BudgetObserver) SharedAvailable(ok bool, _ error) {
	budgetSharedChanges.WithLabelValues(strconv.FormatBool(ok)).Inc()
}

// APICall counts one call to Zapier's API by endpoint pattern; code
// is the response status, 0 when there was none.
func APICall(method, path string, code int) {
	status := "error"
	switch {
	case code == http.StatusTooManyRequests:
		status = "429"
	case code >= 100 && code <= 599:
		status = strconv.Itoa(code/100) + "xx"
	}
	apiCalls.WithLabelValues(method+" "+APIEndpoint(path), status).Inc()
}

// APIEndpoint reduces an API path to a pattern with a bounded set of
// values: known resources and sub-resources are kept, ids become {id}. It
// runs for every proxied request, so it walks the path without splitting it.
func APIEndpoint(path string) string {
	rest := strings.Trim(path, "/")
	version, rest, _ := strings.Cut(rest, "/")
	if version == "actions" { // the Actions API v1: /actions/v1/stored-actions/…
		if version, rest, _ = strings.Cut(rest, "/"); version != "v1" {
			return "other"
		}
		version = "actions/v1"
	}
	resource, rest, _ := strings.Cut(rest, "/")
	if (version != "v2" && version != "actions/v1") || !apiResources[resource] {
		return "other"
	}
	if rest == "" {
		return "/" + version + "/" + resource
	}
	var b strings.Builder
	b.WriteString("/" + version + "/")
	b.WriteString(resource)
	for n := 0; rest != "" && n < 4; n++ {
		var seg string
		seg, rest, _ = strings.Cut(rest, "/")
		b.WriteByte('/')
		if apiSubResources[seg] {
			b.WriteString(seg)
		} else {
			b.WriteString("{id}")
		}
	}
	return b.String()
}

var (
	apiResources    = map[string]bool{"actions": true, "action-runs": true, "authentications": true, "apps": true, "zaps": true, "zap-runs": true, "guess": true, "echo": true, "whitelabel": true, "stored-actions": true}
	apiSubResources = map[string]bool{"inputs": true, "outputs": true, "choices": true, "test": true, "apps": true, "run": true, "runs": true}
)

// RunCallbacks counts deliveries to the callback route, by outcome.
var RunCallbacks = func() *prometheus.CounterVec {
	c := NewCounterVec("run_callbacks_total",
		"Action-run callbacks received, by outcome (accepted, bad_signature, keys_unavailable, malformed, unknown_run, replayed, failed).", "outcome")
	for _, o := range actions.CallbackOutcomes {
		c.WithLabelValues(o)
	}
	return c
}()
