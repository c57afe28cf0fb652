package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/jwks"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Label values. Every label of every collector takes its values from one of
// these closed sets, so the number of series is fixed; all combinations are
// created up front, so a dashboard or alert finds every series at 0 before
// the first event instead of "no data".

// Exchange kinds: what was asked of Zapier's token endpoint.
const (
	ExchangeKindAccess  = gateway.KindAccess // partner JWT → user access token
	ExchangeKindConnect = "connect_token"    // access token → single-use connect token
)

// ExchangeOutcomes are "success" and the zapierapi.Kind names.
var ExchangeOutcomes = []string{"success", "rejected", "failed", "timeout", "rate_limited", "unavailable"}

// The connect completions' flows and outcomes (connect.Outcome).
var (
	ConnectFlows    = connect.Flows
	ConnectOutcomes = connect.Outcomes
)

// actionOutcome is how a POST run of zapier_actions ended.

var ActionOutcomes = actions.Outcomes

// refusalReasons are the identity error codes.
var refusalReasons = []string{gateway.ErrIdentityMissing.Code, gateway.ErrIdentityUntrusted.Code, gateway.ErrIdentityInvalid.Code}

// metrics holds the collectors. Counters are created once per process and
// registered into every config's registry, so a reload neither resets them
// nor fails with a duplicate registration. Labels are bounded enums only.
type Set struct {
	Lookups            *prometheus.CounterVec
	Exchanges          *prometheus.CounterVec
	ExchangeDuration   *prometheus.HistogramVec
	CacheEvictions     prometheus.Counter
	Rotations          prometheus.Counter
	Refusals           *prometheus.CounterVec
	ConnectCompletions *prometheus.CounterVec
	ActionRuns         *prometheus.CounterVec
	BreakerOpens       prometheus.Counter
}

func NewCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "caddy", Subsystem: "zapier", Name: name, Help: help}, labels)
}

func NewCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "caddy", Subsystem: "zapier", Name: name, Help: help})
}

var Core = func() *Set {
	m := &Set{
		Lookups: NewCounterVec("token_lookups_total",
			"Access token lookups by result (hit, miss, coalesced, refresh_ahead, negative).", "result"),
		Exchanges: NewCounterVec("exchanges_total",
			"Token exchanges with Zapier by kind (access_token, connect_token) and outcome.", "kind", "outcome"),
		ExchangeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "zapier", Name: "exchange_duration_seconds",
			Help:    "Latency of token exchanges with Zapier, retries included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		CacheEvictions: NewCounter("cache_evictions_total",
			"Access tokens dropped from the cache to make room."),
		Rotations: NewCounter("key_rotations_total",
			"Signing key rotations seen by this instance: a new key published, or a key made to sign at once."),
		Refusals: NewCounterVec("identity_refusals_total",
			"Requests refused for their identity, by reason.", "reason"),
		ConnectCompletions: NewCounterVec("connect_completions_total",
			"Connect flows completed, by flow (popup, redirect) and outcome.", "flow", "outcome"),
		ActionRuns: NewCounterVec("action_runs_total",
			"Action runs requested through zapier_actions, by outcome.", "outcome"),
		BreakerOpens: NewCounter("breaker_opens_total",
			"Times the circuit breaker in front of Zapier's token endpoint opened."),
	}
	for _, kind := range []string{ExchangeKindAccess, ExchangeKindConnect} {
		m.ExchangeDuration.WithLabelValues(kind)
		for _, outcome := range ExchangeOutcomes {
			m.Exchanges.WithLabelValues(kind, outcome)
		}
	}
	for _, reason := range refusalReasons {
		m.Refusals.WithLabelValues(reason)
	}
	for _, flow := range ConnectFlows {
		for _, outcome := range ConnectOutcomes {
			m.ConnectCompletions.WithLabelValues(string(flow), string(outcome))
		}
	}
	for _, outcome := range ActionOutcomes {
		m.ActionRuns.WithLabelValues(string(outcome))
	}
	return m
}()

func RegisterCore(reg *prometheus.Registry) (*Set, error) {
	m := Core
	for _, c := range []prometheus.Collector{
		m.Lookups, m.Exchanges, m.ExchangeDuration, m.CacheEvictions, m.Rotations, m.Refusals,
		m.ConnectCompletions, m.ActionRuns, m.BreakerOpens,
	} {
		if err := Register(reg, c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func Register(reg *prometheus.Registry, c prometheus.Collector) error {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return nil
		}
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// ObserveCache registers the gauges that read the live cache and key set;
// they belong to this config's registry only.
func (m *Set) ObserveCache(reg *prometheus.Registry, cache *tokencache.Cache, keys *jwks.Manager) error {
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "cache_entries",
		Help: "Access tokens currently cached.",
	}, func() float64 { return float64(cache.Len()) })
	cacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "cache_bytes",
		Help: "Memory holding the cached access tokens: the table and the token bytes.",
	}, func() float64 { return float64(cache.Bytes()) })
	published := &keysCollector{keys: keys, desc: prometheus.NewDesc(
		"caddy_zapier_keys", "Published signing keys by state.", []string{"state"}, nil)}
	for _, c := range []prometheus.Collector{entries, cacheBytes, published} {
		if err := Register(reg, c); err != nil {
			return err
		}
	}
	return nil
}

// keysCollector reports the key states as of the scrape.
type keysCollector struct {
	keys *jwks.Manager
	desc *prometheus.Desc
}

func (c *keysCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keysCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[jwks.KeyState]int{jwks.StateNext: 0, jwks.StateActive: 0, jwks.StateRetired: 0}
	for _, k := range c.keys.Keys() {
		counts[k.State]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(state))
	}
}

// LookupCounters are resolved once: a label lookup per request would cost
// more than the cache hit it counts.
var LookupCounters = func() (c [tokencache.Negative + 1]prometheus.Counter) {
	for r := range c {
		c[r] = Core.Lookups.WithLabelValues(tokencache.Result(r).String())
	}
	return c
}()

func (m *Set) ObserveLookup(r tokencache.Result) {
	if int(r) < len(LookupCounters) {
		LookupCounters[r].Inc()
	}
}

// ObserveExchange counts one exchange with Zapier's token endpoint; kind is
// ExchangeKindAccess or ExchangeKindConnect, took includes the retries.
func (m *Set) ObserveExchange(kind string, err error, took time.Duration) {
	outcome := ExchangeOutcome(err)
	m.Exchanges.WithLabelValues(kind, outcome).Inc()
	if outcome != zapierapi.KindUnavailable.String() {
		// Calls the breaker held back never reached Zapier: their ~0s would
		// drag the latency percentiles down during an outage.
		m.ExchangeDuration.WithLabelValues(kind).Observe(took.Seconds())
	}
}

// ObserveConnectCompletion counts one finished connect flow (the popup's
// POST complete or the redirect's GET callback), whatever its outcome.
func (m *Set) ObserveConnectCompletion(flow connect.Flow, outcome connect.Outcome) {
	m.ConnectCompletions.WithLabelValues(string(flow), string(outcome)).Inc()
}

// ObserveActionRun counts one POST run answered by zapier_actions.
func (m *Set) ObserveActionRun(outcome actions.Outcome) {
	m.ActionRuns.WithLabelValues(string(outcome)).Inc()
}

// ExchangeOutcome is the outcome label (and span attribute) of an exchange.
func ExchangeOutcome(err error) string {
	if err == nil {
		return "success"
	}
	if zerr, ok := zapierapi.AsError(err); ok && zerr.Kind >= zapierapi.KindRejected && zerr.Kind <= zapierapi.KindUnavailable {
		return zerr.Kind.String()
	}
	return "failed"
}
