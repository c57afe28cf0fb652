package caddymodule

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zapgate/caddy-zapier/jwks"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// metrics holds the collectors. Counters are created once per process and
// registered into every config's registry, so a reload neither resets them
// nor fails with a duplicate registration. Labels are bounded enums only.
type metrics struct {
	lookups          *prometheus.CounterVec
	exchanges        *prometheus.CounterVec
	exchangeDuration *prometheus.HistogramVec
	cacheEvictions   prometheus.Counter
	rotations        prometheus.Counter
	refusals         *prometheus.CounterVec
}

var sharedMetrics = &metrics{
	lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "token_lookups_total",
		Help: "Access token lookups by result (hit, miss, coalesced, refresh_ahead, negative).",
	}, []string{"result"}),
	exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "exchanges_total",
		Help: "Token exchanges with Zapier by kind and outcome.",
	}, []string{"kind", "outcome"}),
	exchangeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "exchange_duration_seconds",
		Help:    "Latency of token exchanges with Zapier, retries included.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"kind"}),
	cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "cache_evictions_total",
		Help: "Access tokens dropped from the cache to make room.",
	}),
	rotations: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "key_rotations_total",
		Help: "Signing key rotations started by this instance.",
	}),
	refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "identity_refusals_total",
		Help: "Requests refused for their identity, by reason.",
	}, []string{"reason"}),
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := sharedMetrics
	for _, c := range []prometheus.Collector{m.lookups, m.exchanges, m.exchangeDuration, m.cacheEvictions, m.rotations, m.refusals} {
		if err := registerOrExisting(reg, c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func registerOrExisting(reg *prometheus.Registry, c prometheus.Collector) error {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return nil
		}
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// observeCache registers the gauges that read the live cache and key set;
// they belong to this config's registry only.
func (m *metrics) observeCache(reg *prometheus.Registry, cache *tokencache.Cache, keys *jwks.Manager) error {
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "cache_entries",
		Help: "Access tokens currently cached.",
	}, func() float64 { return float64(cache.Len()) })
	published := &keysCollector{keys: keys, desc: prometheus.NewDesc(
		"caddy_zapier_keys", "Published signing keys by state.", []string{"state"}, nil)}
	for _, c := range []prometheus.Collector{entries, published} {
		if err := registerOrExisting(reg, c); err != nil {
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

// lookupCounters are resolved once: a label lookup per request would cost
// more than the cache hit it counts.
var lookupCounters = func() (c [tokencache.Negative + 1]prometheus.Counter) {
	for r := range c {
		c[r] = sharedMetrics.lookups.WithLabelValues(tokencache.Result(r).String())
	}
	return c
}()

func (m *metrics) observeLookup(r tokencache.Result) {
	if int(r) < len(lookupCounters) {
		lookupCounters[r].Inc()
	}
}

func (m *metrics) observeExchange(kind string, err error, took time.Duration) {
	m.exchanges.WithLabelValues(kind, exchangeOutcome(err)).Inc()
	m.exchangeDuration.WithLabelValues(kind).Observe(took.Seconds())
}

func exchangeOutcome(err error) string {
	if err == nil {
		return "success"
	}
	if zerr, ok := zapierapi.AsError(err); ok {
		return zerr.Kind.String()
	}
	return "failed"
}
