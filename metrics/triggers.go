package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The events collectors (zapier_triggers), one set per process like the others.
var (
	triggerDeliveries = NewCounterVec("trigger_deliveries_total",
		"Trigger events POSTed to deliver_to, by outcome (delivered, failed: one refused attempt; dead_lettered: a message given up on).", "outcome")
	triggerDeliverySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "zapier", Name: "trigger_delivery_seconds",
		Help:    "Time of one POST of a trigger event to deliver_to.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	triggerAcks = NewCounterVec("trigger_acks_total",
		"Settlements of leased trigger messages at Zapier (acked, lease_expired: delivered but will come again, failed, released).", "outcome")
	triggerLeases = NewCounterVec("trigger_leases_total",
		"Lease calls on Trigger Inboxes, by outcome (messages, empty, paused, gone, failed).", "outcome")
	TriggerNotifications = NewCounterVec("trigger_notifications_total",
		"Inbox notifications received on the notify route, by whether the inbox id was known (true, false), or refused before any lookup (token_invalid, rate_limited).", "known")
	ConnectionWebhooks = NewCounterVec("connection_webhooks_total",
		"Connection webhooks received from Zapier, by outcome (forwarded, unknown_connection, duplicate (also while another copy is in flight), signature_invalid, stale, malformed, partner_failed).", "outcome")
)

// RegisterTriggers registers the events collectors into a config's
// registry; the admin module does it on every config load, so every series
// is on /metrics (at 0) even without a zapier_triggers handler.
func RegisterTriggers(reg *prometheus.Registry) error {
	for _, o := range []string{"delivered", "failed", "dead_lettered"} {
		triggerDeliveries.WithLabelValues(o)
	}
	for _, o := range []string{"acked", "lease_expired", "failed", "released"} {
		triggerAcks.WithLabelValues(o)
	}
	for _, o := range []string{"messages", "empty", "paused", "gone", "failed"} {
		triggerLeases.WithLabelValues(o)
	}
	for _, o := range []string{"true", "false", "token_invalid", "rate_limited"} {
		TriggerNotifications.WithLabelValues(o)
	}
	for _, o := range []string{"forwarded", "unknown_connection", "duplicate", "signature_invalid", "stale", "malformed", "partner_failed"} {
		ConnectionWebhooks.WithLabelValues(o)
	}
	for _, c := range []prometheus.Collector{triggerDeliveries, triggerDeliverySeconds, triggerAcks, triggerLeases, TriggerNotifications, ConnectionWebhooks} {
		if err := Register(reg, c); err != nil {
			return err
		}
	}
	return nil
}

// TriggerObserver feeds the delivery loop's outcomes to the collectors.
type TriggerObserver struct{}

func (TriggerObserver) Delivery(outcome string, took time.Duration) {
	triggerDeliveries.WithLabelValues(outcome).Inc()
	if outcome != "dead_lettered" && took > 0 {
		triggerDeliverySeconds.Observe(took.Seconds())
	}
}

func (TriggerObserver) Ack(outcome string)   { triggerAcks.WithLabelValues(outcome).Inc() }
func (TriggerObserver) Lease(outcome string) { triggerLeases.WithLabelValues(outcome).Inc() }
