package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/ratelimit"
	"github.com/zapgate/caddy-zapier/triggers"
)

func init() {
	caddy.RegisterModule(Triggers{})
	httpcaddyfile.RegisterHandlerDirective("zapier_triggers", parseHandler[Triggers])
	httpcaddyfile.RegisterDirectiveOrder("zapier_triggers", httpcaddyfile.Before, "respond")
}

// Triggers is the zapier_triggers responder: it subscribes a user to Zapier
// triggers (one Trigger Inbox per user and subscription name) and delivers
// their events, and Zapier's connection webhooks, to the partner's
// deliver_to endpoint, signed with Standard Webhooks, at least once. Routes
// are relative to where it is mounted (use handle_path):
//
//	PUT    subscriptions/{name}  {"app","trigger","inputs"?,"connection_id"?}  → 201 new, 200 same, 409 other config
//	GET    subscriptions, subscriptions/{name}
//	POST   subscriptions/{name}/pause, subscriptions/{name}/resume
//	DELETE subscriptions/{name}
//	POST   notify               Zapier's inbox notification: a wake-up hint, no identity
//	POST   connection-webhooks  Zapier's connection webhooks: verified, no identity
//
// The subscriptions routes need the identity headers, as zapier_auth does.
// The delivery loop and its state survive config reloads (caddy.UsagePool)
// while deliver_to, the secret and the delivery settings are unchanged.
type Triggers struct {
	// The partner's receiver of events. Required.
	DeliverTo string `json:"deliver_to,omitempty"`
	// whsec_… secret events are signed with. Required; {env.*} resolved.
	SigningSecret string `json:"signing_secret,omitempty"`
	// The public URL of this handler's notify route, registered on every
	// inbox so Zapier wakes the gateway up. Optional.
	NotificationURL string `json:"notification_url,omitempty"`
	// whsec_… secret of Zapier's connection webhooks. Without it the
	// connection-webhooks route answers 404.
	ConnectionWebhookSecret string `json:"connection_webhook_secret,omitempty"`
	// Apps maps Connect implementation ids to app UUIDs, as in zapier_connect.
	Apps map[string]string `json:"apps,omitempty"`
	// The Trigger Inbox path on api_url. Default /trigger-inbox/api/v1.
	InboxPrefix string `json:"inbox_prefix,omitempty"`
	// Per POST to deliver_to. Default 10s.
	DeliveryTimeout caddy.Duration `json:"delivery_timeout,omitempty"`
	// POSTs of one message per lease. Default 3.
	Attempts int `json:"attempts,omitempty"`
	// Leases of one message before it goes to the dead letters. Default 3.
	MaxLeases int `json:"max_leases,omitempty"`
	// Messages per lease. Default 10.
	LeaseLimit int `json:"lease_limit,omitempty"`
	// Subscriptions delivered at once. Default 8.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// Safety drain of every subscription. Default 5m.
	DrainInterval caddy.Duration `json:"drain_interval,omitempty"`
	// First pause between two attempts (doubling up to retry_max). Default 500ms.
	RetryBase caddy.Duration `json:"retry_base,omitempty"`
	RetryMax  caddy.Duration `json:"retry_max,omitempty"`
	// Subscriptions one user may have; a new one past it is refused with
	// 409 subscription_limit. Default 50.
	MaxSubscriptionsPerUser int `json:"max_subscriptions_per_user,omitempty"`
	// Notifications one source address may POST to the notify route per
	// window; past it 429 rate_limited with Retry-After. Default 600 per 1m.
	NotifyRateLimit *RateLimit `json:"notify_rate_limit,omitempty"`
	// Watch each inbox's events stream (one connection per subscription)
	// as a wake-up. Default: on when notification_url is not set.
	EventsStream *bool `json:"events_stream,omitempty"`

	handler *triggers.Handler
	pooled  *pooledTriggers
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (Triggers) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_triggers",
		New: func() caddy.Module { return new(Triggers) },
	}
}

// triggersPool keeps delivery loops alive across config reloads.
var triggersPool = caddy.NewUsagePool()

// pooledTriggers is one delivery loop; app points at the newest config's
// zapier app, whose token cache, breaker and budget its calls use.
type pooledTriggers struct {
	mgr *triggers.Manager
	app atomic.Pointer[App]
}

func (p *pooledTriggers) Destruct() error {
	p.mgr.Stop()
	return nil
}

// Provision resolves the secrets, checks the values and joins (or starts)
// the delivery loop.
func (h *Triggers) Provision(ctx caddy.Context) error {
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	if err := metrics.RegisterTriggers(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	return h.provision(app, ctx.Storage(), ctx.Logger())
}

func (h *Triggers) provision(app *App, storage certmagic.Storage, logger *zap.Logger) error {
	repl := caddy.NewReplacer()
	opts := triggers.Options{
		DeliverTo: repl.ReplaceKnown(h.DeliverTo, ""), SigningSecret: repl.ReplaceKnown(h.SigningSecret, ""),
		NotificationURL: repl.ReplaceKnown(h.NotificationURL, ""), ConnectionWebhookSecret: repl.ReplaceKnown(h.ConnectionWebhookSecret, ""),
		InboxPrefix: h.InboxPrefix, APIURL: app.APIURL, EventsStream: h.EventsStream,
		DeliveryTimeout: time.Duration(h.DeliveryTimeout), DrainInterval: time.Duration(h.DrainInterval),
		RetryBase: time.Duration(h.RetryBase), RetryMax: time.Duration(h.RetryMax),
		MaxSubscriptionsPerUser: h.MaxSubscriptionsPerUser, Attempts: h.Attempts, MaxLeases: h.MaxLeases,
		LeaseLimit: h.LeaseLimit, MaxConcurrent: h.MaxConcurrent,
	}
	if err := opts.Check(); err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	h.InboxPrefix = opts.InboxPrefix
	if h.NotifyRateLimit == nil {
		h.NotifyRateLimit = &RateLimit{Events: 600, Window: caddy.Duration(time.Minute)}
	}
	var notifyLim *ratelimit.Limiter
	if !h.NotifyRateLimit.Off {
		var err error
		if notifyLim, err = ratelimit.New(ratelimit.Config{Events: h.NotifyRateLimit.Events, Window: time.Duration(h.NotifyRateLimit.Window)}); err != nil || notifyLim == nil {
			return errors.New("zapier_triggers: notify_rate_limit: want a positive number of requests per positive window, or off")
		}
	}
	apps, err := gateway.NewAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	h.poolKey = opts.LoopKey()
	val, loaded, err := triggersPool.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newPooledTriggers(&opts, app, storage, logger)
	})
	if err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	h.pooled = val.(*pooledTriggers)
	h.pooled.app.Store(app) // calls go through the newest config's app
	conns := &Actions{app: app, apps: apps, store: newConnectionStore(storage), logger: logger}
	h.handler, err = triggers.NewHandler(triggers.HandlerConfig{
		Options: opts, Manager: h.pooled.mgr, Policy: app.policy, Lookup: conns.lookup(), Storage: storage,
		NotifyLimit: notifyLim, SourceAddr: sourceAddr, Logger: logger,
		ObserveNotification:      func(known string) { metrics.TriggerNotifications.WithLabelValues(known).Inc() },
		ObserveConnectionWebhook: func(outcome string) { metrics.ConnectionWebhooks.WithLabelValues(outcome).Inc() },
	})
	if err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	// Offboarding reaches the subscriptions (and their inboxes at Zapier)
	// and the dead letters.
	if app.userStores != nil {
		app.registerUserStore(gateway.PhaseUpstream, h.pooled.mgr.SubscriptionStore())
		app.registerUserStore(gateway.PhaseLocal, h.pooled.mgr.DeadLetterStore())
	}
	if loaded {
		logger.Info("zapier_triggers: kept the running delivery loop")
	} else {
		logger.Info("zapier_triggers: started a delivery loop")
	}
	return nil
}

func newPooledTriggers(opts *triggers.Options, app *App, storage certmagic.Storage, logger *zap.Logger) (*pooledTriggers, error) {
	p := new(pooledTriggers)
	p.app.Store(app)
	// Users are named at rest with the names key connection records use
	// (connect.StateKeeper, in the same storage), so every store names a
	// user alike and offboarding finds them.
	keys := connect.NewStateKeeper(storage, 0)
	mgr, err := opts.NewDeliveryLoop(triggers.LoopConfig{
		Caller:  func() *gateway.Caller { return p.app.Load().caller() },
		Storage: storage,
		Names: gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
			k, err := keys.Keys(ctx)
			if err != nil {
				return nil, err
			}
			return k.NamesKey(), nil
		}),
		Observer: usageTriggerObserver{app: &p.app}, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	p.mgr = mgr
	// The loop outlives this config (a reload hands it on), so it runs on
	// its own context; Destruct stops it when the last config lets go.
	mgr.Start(context.Background())
	return p, nil
}

// Cleanup lets go of the delivery loop.
func (h *Triggers) Cleanup() error {
	if h.poolKey == "" {
		return nil
	}
	_, err := triggersPool.Delete(h.poolKey)
	return err
}

// deliveryManagers are the running delivery loops (one per distinct
// zapier_triggers configuration).
func deliveryManagers() []*triggers.Manager {
	var out []*triggers.Manager
	triggersPool.Range(func(_, v any) bool {
		if p, ok := v.(*pooledTriggers); ok && p.mgr != nil {
			out = append(out, p.mgr)
		}
		return true
	})
	return out
}

// Connection lifecycle events (triggers.PublishConnectionChange), for
// zapier_connect's store.
const (
	eventConnectionCreated = triggers.EventConnectionCreated
	eventConnectionDeleted = triggers.EventConnectionDeleted
)

// connectionChanged tells the running delivery loops that a stored
// connection changed; it never blocks.
func connectionChanged(typ, tenant, user string, rec connect.Record) {
	triggers.PublishConnectionChange(deliveryManagers(), typ, tenant, user, rec)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_triggers {
//		deliver_to                <url>
//		signing_secret            <whsec_…>
//		notification_url          <public url of the notify route>
//		connection_webhook_secret <whsec_…>
//		app                       <implementation id> <app UUID>
//		inbox_prefix              <path>
//		events_stream             on|off
//		max_subscriptions_per_user <n>
//		notify_rate_limit         <requests> <window> | off
//		delivery_timeout|drain_interval|retry_base|retry_max <duration>
//		attempts|max_leases|lease_limit|max_concurrent       <n>
//	}
func (h *Triggers) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "deliver_to", "signing_secret", "notification_url", "connection_webhook_secret", "inbox_prefix":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			*map[string]*string{"deliver_to": &h.DeliverTo, "signing_secret": &h.SigningSecret, "notification_url": &h.NotificationURL,
				"connection_webhook_secret": &h.ConnectionWebhookSecret, "inbox_prefix": &h.InboxPrefix}[opt] = v
		case "events_stream":
			var v string
			if !d.AllArgs(&v) || (v != "on" && v != "off") {
				return d.Err("events_stream takes on or off")
			}
			on := v == "on"
			h.EventsStream = &on
		case "notify_rate_limit":
			l, err := parseRateLimit(d, opt)
			if err != nil {
				return err
			}
			h.NotifyRateLimit = l
		case "app":
			if err := parseAppMapping(d, &h.Apps); err != nil {
				return err
			}
		case "delivery_timeout", "drain_interval", "retry_base", "retry_max":
			if err := oneDuration(d, map[string]*caddy.Duration{"delivery_timeout": &h.DeliveryTimeout, "drain_interval": &h.DrainInterval,
				"retry_base": &h.RetryBase, "retry_max": &h.RetryMax}[opt]); err != nil {
				return err
			}
		case "attempts", "max_leases", "lease_limit", "max_concurrent", "max_subscriptions_per_user":
			if err := oneInt(d, map[string]*int{"max_subscriptions_per_user": &h.MaxSubscriptionsPerUser, "attempts": &h.Attempts, "max_leases": &h.MaxLeases,
				"lease_limit": &h.LeaseLimit, "max_concurrent": &h.MaxConcurrent}[opt]); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized zapier_triggers option %q", opt)
		}
	}
	return nil
}

func (h *Triggers) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return caddyError(h.handler.Serve(w, r))
}

// sourceAddr is the client address Caddy determined (trusted_proxies
// honoured), else the peer's host.
func sourceAddr(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Triggers)(nil)
	_ caddy.CleanerUpper          = (*Triggers)(nil)
	_ caddyhttp.MiddlewareHandler = (*Triggers)(nil)
	_ caddyfile.Unmarshaler       = (*Triggers)(nil)
)
