package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/ratelimit"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/triggers"
	"github.com/zapgate/caddy-zapier/webhooksig"
	"github.com/zapgate/caddy-zapier/zapierapi"
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

	app       *App
	rules     gateway.IdentityRules
	conns     *Actions // its app and connection lookups, reused
	pooled    *pooledTriggers
	poolKey   string
	sender    *triggers.Sender
	verifier  *webhooksig.Verifier
	seen      *webhookSeen
	notifyKey []byte
	notifyLim *ratelimit.Limiter
	logger    *zap.Logger
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
	if err := registerTriggerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	return h.provision(app, ctx.Storage(), ctx.Logger())
}

func (h *Triggers) provision(app *App, storage certmagic.Storage, logger *zap.Logger) error {
	repl := caddy.NewReplacer()
	deliverTo := repl.ReplaceKnown(h.DeliverTo, "")
	secret := repl.ReplaceKnown(h.SigningSecret, "")
	notifyURL := repl.ReplaceKnown(h.NotificationURL, "")
	connSecret := repl.ReplaceKnown(h.ConnectionWebhookSecret, "")
	if err := zapierapi.CheckURL(deliverTo); err != nil {
		return fmt.Errorf("zapier_triggers: deliver_to: %w", err)
	}
	if notifyURL != "" {
		if err := zapierapi.CheckURL(notifyURL); err != nil {
			return fmt.Errorf("zapier_triggers: notification_url: %w", err)
		}
	}
	signer, err := webhooksig.NewSigner(secret)
	if err != nil {
		return fmt.Errorf("zapier_triggers: signing_secret: %w", err)
	}
	if connSecret != "" {
		if h.verifier, err = webhooksig.NewVerifier(connSecret, 0, nil); err != nil {
			return fmt.Errorf("zapier_triggers: connection_webhook_secret: %w", err)
		}
	}
	if h.InboxPrefix == "" {
		h.InboxPrefix = triggers.DefaultPrefix
	}
	if !strings.HasPrefix(h.InboxPrefix, "/") {
		return errors.New("zapier_triggers: inbox_prefix must start with /")
	}
	for name, v := range map[string]int{"max_subscriptions_per_user": h.MaxSubscriptionsPerUser, "attempts": h.Attempts, "max_leases": h.MaxLeases, "lease_limit": h.LeaseLimit, "max_concurrent": h.MaxConcurrent} {
		if v < 0 || name == "lease_limit" && v > 100 {
			return fmt.Errorf("zapier_triggers: %s out of range", name)
		}
	}
	if h.NotifyRateLimit == nil {
		h.NotifyRateLimit = &RateLimit{Events: 600, Window: caddy.Duration(time.Minute)}
	}
	if !h.NotifyRateLimit.Off {
		if h.notifyLim, err = ratelimit.New(ratelimit.Config{Events: h.NotifyRateLimit.Events, Window: time.Duration(h.NotifyRateLimit.Window)}); err != nil || h.notifyLim == nil {
			return errors.New("zapier_triggers: notify_rate_limit: want a positive number of requests per positive window, or off")
		}
	}
	apps, err := gateway.NewAppMap(h.Apps)
	if err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	h.app, h.rules, h.logger = app, app.identityRules(), logger
	h.conns = &Actions{app: app, apps: apps, store: newConnectionStore(storage), logger: logger}
	h.sender = &triggers.Sender{URL: deliverTo, Signer: signer, Timeout: time.Duration(h.DeliveryTimeout)}
	// The per-inbox token in notification URLs is keyed by the signing
	// secret (hashed apart from it), so it is stable across restarts and
	// the same on every sidecar.
	nk := sha256.Sum256([]byte("caddy-zapier inbox notifications\x00" + secret))
	h.notifyKey = nk[:]
	h.seen = newWebhookSeen(storage, max(2*time.Duration(h.DeliveryTimeout), 30*time.Second))

	sum := sha256.New()
	for _, part := range []string{deliverTo, secret, notifyURL, app.APIURL, h.InboxPrefix,
		fmt.Sprint(h.DeliveryTimeout, h.MaxSubscriptionsPerUser, h.Attempts, h.MaxLeases, h.LeaseLimit, h.MaxConcurrent, h.DrainInterval, h.RetryBase, h.RetryMax, h.stream(notifyURL))} {
		sum.Write([]byte(part))
		sum.Write([]byte{0})
	}
	h.poolKey = hex.EncodeToString(sum.Sum(nil))
	val, loaded, err := triggersPool.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return h.newPooled(storage, notifyURL, logger)
	})
	if err != nil {
		return fmt.Errorf("zapier_triggers: %w", err)
	}
	h.pooled = val.(*pooledTriggers)
	h.pooled.app.Store(app) // calls go through the newest config's app
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

func (h *Triggers) newPooled(storage certmagic.Storage, notifyURL string, logger *zap.Logger) (*pooledTriggers, error) {
	p := new(pooledTriggers)
	api := &triggers.InboxAPI{
		BaseURL:    strings.TrimRight(h.app.APIURL, "/") + h.InboxPrefix,
		ClientFunc: func() *zapierapi.Client { return p.app.Load().client },
		Call: func(ctx context.Context, id triggers.Identity, call func(context.Context, string) error) error {
			return p.app.Load().callAPI(ctx, tokencache.Key{Tenant: id.Tenant, User: id.User}, call)
		},
	}
	// Users are named at rest with the names key connection records use
	// (connect.StateKeeper, in the same storage), so every store names a
	// user alike and offboarding finds them.
	keys := connect.NewStateKeeper(storage, 0)
	names := gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
		k, err := keys.Keys(ctx)
		if err != nil {
			return nil, err
		}
		return k.NamesKey(), nil
	})
	mgr, err := triggers.NewManager(triggers.Config{
		API: api, Sender: h.sender, Storage: storage, Names: names, MaxSubscriptionsPerUser: h.MaxSubscriptionsPerUser, NotificationURL: notifyURL, NotifyKey: h.notifyKey, Stream: h.stream(notifyURL),
		LeaseLimit: h.LeaseLimit, Attempts: h.Attempts, MaxLeases: h.MaxLeases, MaxConcurrent: h.MaxConcurrent,
		DrainInterval: time.Duration(h.DrainInterval), RetryBase: time.Duration(h.RetryBase), RetryMax: time.Duration(h.RetryMax),
		Observer: triggerObserver{}, Logger: logger,
		IdentityHash: func(id triggers.Identity) string { return gateway.LogHash(id.Tenant, id.User) },
	})
	if err != nil {
		return nil, err
	}
	p.mgr = mgr
	p.app.Store(h.app)
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

// stream reports whether to watch events streams: as configured, else
// when Zapier has no notification URL to push to.
func (h *Triggers) stream(notifyURL string) bool {
	if h.EventsStream != nil {
		return *h.EventsStream
	}
	return notifyURL == ""
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
	p := r.URL.Path
	switch {
	case p == "/notify":
		return h.serveNotify(w, r) // Zapier: an untrusted hint, no identity
	case p == "/connection-webhooks":
		return h.serveConnectionWebhook(w, r) // Zapier: verified signature, no identity
	case p == "/subscriptions":
		return h.withIdentity(w, r, []string{http.MethodGet}, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
			views, err := h.pooled.mgr.List(r.Context(), triggers.Identity{Tenant: key.Tenant, User: key.User})
			if err != nil {
				return h.fail(w, r, err)
			}
			writeConnectJSON(w, http.StatusOK, struct {
				Data []triggers.View `json:"data"`
			}{views})
			return nil
		})
	case strings.HasPrefix(p, "/subscriptions/"):
		rest := strings.TrimPrefix(p, "/subscriptions/")
		name, action, _ := strings.Cut(rest, "/")
		switch action {
		case "":
			return h.withIdentity(w, r, []string{http.MethodPut, http.MethodGet, http.MethodDelete}, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
				return h.serveSubscription(w, r, key, name)
			})
		case "pause", "resume":
			return h.withIdentity(w, r, []string{http.MethodPost}, func(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
				id := triggers.Identity{Tenant: key.Tenant, User: key.User}
				op := h.pooled.mgr.Pause
				if action == "resume" {
					op = h.pooled.mgr.Resume
				}
				v, err := op(r.Context(), id, name)
				if err != nil {
					return h.fail(w, r, err)
				}
				writeSubscription(w, http.StatusOK, v)
				return nil
			})
		}
	}
	gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found",
		Message: "no such zapier_triggers route (subscriptions, subscriptions/{name}[/pause|/resume], notify, connection-webhooks)"})
	return nil
}

func (h *Triggers) withIdentity(w http.ResponseWriter, r *http.Request, methods []string, next identityHandler) error {
	return h.app.serveRoute(w, r, gateway.Route{Methods: methods}, next)
}

// subscriptionRequest is the body of PUT subscriptions/{name}.
type subscriptionRequest struct {
	App          string          `json:"app"`
	Trigger      string          `json:"trigger"`
	Inputs       json.RawMessage `json:"inputs,omitempty"`
	ConnectionID string          `json:"connection_id,omitempty"`
}

func writeSubscription(w http.ResponseWriter, status int, v triggers.View) {
	writeConnectJSON(w, status, struct {
		Subscription triggers.View `json:"subscription"`
	}{v})
}

func (h *Triggers) serveSubscription(w http.ResponseWriter, r *http.Request, key tokencache.Key, name string) error {
	ctx := r.Context()
	id := triggers.Identity{Tenant: key.Tenant, User: key.User}
	mgr := h.pooled.mgr
	switch r.Method {
	case http.MethodGet:
		v, err := mgr.Get(ctx, id, name)
		if err != nil {
			return h.fail(w, r, err)
		}
		writeSubscription(w, http.StatusOK, v)
		return nil
	case http.MethodDelete:
		if err := mgr.Delete(ctx, id, name); err != nil {
			return h.fail(w, r, err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	var req subscriptionRequest
	if aerr := decodeConnectBody(w, r, &req); aerr != nil {
		return h.fail(w, r, aerr)
	}
	switch {
	case req.Trigger == "" || len(req.Trigger) > actions.MaxActionKeyLen:
		return h.fail(w, r, gateway.BadRequest(fmt.Sprintf("trigger must be the trigger's key (1-%d bytes)", actions.MaxActionKeyLen)))
	case !actions.IsJSONObjectOrNull(req.Inputs):
		return h.fail(w, r, gateway.BadRequest("inputs must be a JSON object"))
	}
	// The user's own stored connection: a connection_id given must be one
	// of the user's accounts of the app, so nobody subscribes with someone
	// else's connection.
	ids, rec, err := h.conns.connection(ctx, key, req.App, "")
	if err != nil {
		return h.fail(w, r, err)
	}
	if req.ConnectionID != "" && req.ConnectionID != rec.ConnectionID {
		if rec, err = h.conns.store.Get(ctx, key.Tenant, key.User, ids.UUID, req.ConnectionID); err != nil {
			return h.fail(w, r, err)
		}
	}
	if rec == nil {
		return h.fail(w, r, &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
			Message: "connection_id is not this user's stored connection for app " + ids.Key})
	}
	v, created, err := mgr.Ensure(ctx, id, name, triggers.Spec{App: ids.Key, Trigger: req.Trigger, Inputs: req.Inputs, ConnectionID: rec.ConnectionID})
	if err != nil {
		return h.fail(w, r, err)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeSubscription(w, status, v)
	return nil
}

// fail maps the triggers package's errors, then answers as zapier_actions.
func (h *Triggers) fail(w http.ResponseWriter, r *http.Request, err error) error {
	switch {
	case errors.Is(err, triggers.ErrInvalidName):
		err = gateway.BadRequest("a subscription name is 1-64 of A-Z a-z 0-9 . _ -")
	case errors.Is(err, triggers.ErrSubscriptionConflict), errors.Is(err, triggers.ErrConflict):
		err = &gateway.Error{Status: http.StatusConflict, Code: "subscription_conflict",
			Message: "a subscription with this name exists with another app, trigger, inputs or connection: delete it first"}
	case errors.Is(err, triggers.ErrSubscriptionLimit):
		err = &gateway.Error{Status: http.StatusConflict, Code: "subscription_limit",
			Message: "this user has as many subscriptions as allowed (max_subscriptions_per_user): delete one first"}
	case errors.Is(err, triggers.ErrNotFound):
		err = &gateway.Error{Status: http.StatusNotFound, Code: "subscription_not_found", Message: "this user has no subscription with this name"}
	}
	return h.conns.fail(w, r, err)
}

// serveNotify takes Zapier's availability notification (§3.8) as a hint
// only: limited per source address, the inbox_token checked for its form
// and MAC before any lookup (a forged one is 400), the inbox id looked up
// among known subscriptions (triggers.Manager.Notify), the count never
// trusted, and the answer 200 whatever the id.
func (h *Triggers) serveNotify(w http.ResponseWriter, r *http.Request) error {
	if !gateway.AllowMethod(w, r, http.MethodPost) {
		return nil
	}
	if ok, retry := h.notifyLim.Allow(sourceAddr(r)); !ok {
		triggerNotifications.WithLabelValues("rate_limited").Inc()
		gateway.WriteError(w, &gateway.Error{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: retry,
			Message: "too many notifications from this address; retry later"})
		return nil
	}
	mgr := h.pooled.mgr
	token := r.URL.Query().Get("inbox_token")
	if mgr.NotifyTokenForm(token) == triggers.TokenMalformed {
		triggerNotifications.WithLabelValues("token_invalid").Inc()
		gateway.WriteError(w, gateway.BadRequest("inbox_token is missing or is not one this gateway registered"))
		return nil
	}
	inboxID, err := triggers.ParseNotify(r.Body)
	if err != nil {
		gateway.WriteError(w, gateway.BadRequest("expected {\"inbox_id\": …}"))
		return nil
	}
	known := mgr.Notify(r.Context(), inboxID, token)
	triggerNotifications.WithLabelValues(fmt.Sprint(known)).Inc()
	writeConnectJSON(w, http.StatusOK, struct {
		OK bool `json:"ok"`
	}{true})
	return nil
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
