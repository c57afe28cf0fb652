package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/sweep"
	"github.com/zapgate/caddy-zapier/ratelimit"
	"github.com/zapgate/caddy-zapier/webhooksig"
)

const (
	maxWebhookBody = 1 << 20
	// SeenWebhooksPrefix remembers Zapier's webhook-ids already forwarded,
	// for seenWebhookRetention (zapier-api-2026.md §7 #24: at least 24h).
	SeenWebhooksPrefix   = "zapier/events/connection-webhooks"
	seenWebhookRetention = 48 * time.Hour
)

// HandlerConfig is what the zapier_triggers handler is built from: its
// checked Options, the running delivery loop, the core's route policy,
// the app and connection lookups, storage, and the host's observers.
type HandlerConfig struct {
	// Options are the handler's checked settings (Options.Check).
	Options Options
	// Manager is the running delivery loop (Options.NewDeliveryLoop).
	Manager *Manager
	// Policy serves the subscriptions routes (method, host, identity, limits).
	Policy *gateway.Policy
	// Lookup finds apps and the user's stored connections (zapier_actions').
	Lookup *actions.Lookup
	// Storage holds the connection webhooks' claims.
	Storage certmagic.Storage
	// NotifyLimit limits notifications per source address; nil allows all.
	NotifyLimit *ratelimit.Limiter
	// SourceAddr is a request's client address (the host's trusted-proxy
	// rules); nil is the peer's host.
	SourceAddr func(*http.Request) string
	Logger     *zap.Logger
	// ObserveNotification counts a notification by whether its inbox was
	// known (true, false) or its refusal (token_invalid, rate_limited).
	ObserveNotification func(known string)
	// ObserveConnectionWebhook counts a connection webhook by outcome.
	ObserveConnectionWebhook func(outcome string)
}

// Handler serves zapier_triggers' routes, relative to where it is mounted:
// subscriptions, subscriptions/{name}[/pause|/resume] (the user's), notify
// and connection-webhooks (Zapier's; no identity).
type Handler struct {
	cfg     HandlerConfig
	logger  *zap.Logger
	sender  *Sender
	seen    *WebhookClaims
	sweeper sweep.Sweeper
}

// NewHandler builds the handler; its error is a configuration mistake.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Options.signer == nil {
		return nil, errors.New("triggers: options not checked")
	}
	if cfg.Manager == nil || cfg.Policy == nil || cfg.Lookup == nil || cfg.Storage == nil {
		return nil, errors.New("triggers: the handler needs a manager, a policy, a lookup and storage")
	}
	h := &Handler{cfg: cfg, logger: cfg.Logger, sender: cfg.Options.sender()}
	if h.logger == nil {
		h.logger = zap.NewNop()
	}
	if h.cfg.SourceAddr == nil {
		h.cfg.SourceAddr = peerHost
	}
	if h.cfg.ObserveNotification == nil {
		h.cfg.ObserveNotification = func(string) {}
	}
	if h.cfg.ObserveConnectionWebhook == nil {
		h.cfg.ObserveConnectionWebhook = func(string) {}
	}
	h.seen = &WebhookClaims{Storage: cfg.Storage, Prefix: SeenWebhooksPrefix, Name: connect.StorageKeyPart,
		InFlightTTL: max(2*cfg.Options.DeliveryTimeout, 30*time.Second), Now: time.Now}
	return h, nil
}

// Manager is the delivery loop the handler serves.
func (h *Handler) Manager() *Manager { return h.cfg.Manager }

// ServeHTTP serves r as a plain http.Handler; what Serve leaves unanswered
// is answered as gateway.Unanswered does (Caddy calls Serve and logs it).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gateway.Unanswered(w, h.Serve(w, r))
}

// Serve serves r. The error, when not nil, is an *gateway.HandlerError: a
// request the handler did not answer (the caller went away, or an internal
// failure, never shown to the caller).
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request) error {
	p := r.URL.Path
	mgr := h.cfg.Manager
	switch {
	case p == "/notify":
		return h.serveNotify(w, r) // Zapier: an untrusted hint, no identity
	case p == "/connection-webhooks":
		return h.serveConnectionWebhook(w, r) // Zapier: verified signature, no identity
	case p == "/subscriptions":
		return h.cfg.Policy.Serve(w, r, gateway.Route{Methods: []string{http.MethodGet}}, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
			views, err := mgr.List(r.Context(), Identity{Tenant: id.Tenant, User: id.User})
			if err != nil {
				return h.fail(w, r, err)
			}
			gateway.WriteJSON(w, http.StatusOK, struct {
				Data []View `json:"data"`
			}{views})
			return nil
		})
	case strings.HasPrefix(p, "/subscriptions/"):
		rest := strings.TrimPrefix(p, "/subscriptions/")
		name, action, _ := strings.Cut(rest, "/")
		switch action {
		case "":
			return h.cfg.Policy.Serve(w, r, gateway.Route{Methods: []string{http.MethodPut, http.MethodGet, http.MethodDelete}}, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
				return h.serveSubscription(w, r, id, name)
			})
		case "pause", "resume":
			return h.cfg.Policy.Serve(w, r, gateway.Route{Methods: []string{http.MethodPost}}, func(w http.ResponseWriter, r *http.Request, id gateway.Identity) error {
				op := mgr.Pause
				if action == "resume" {
					op = mgr.Resume
				}
				v, err := op(r.Context(), Identity{Tenant: id.Tenant, User: id.User}, name)
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

// subscriptionRequest is the body of PUT subscriptions/{name}.
type subscriptionRequest struct {
	App          string          `json:"app"`
	Trigger      string          `json:"trigger"`
	Inputs       json.RawMessage `json:"inputs,omitempty"`
	ConnectionID string          `json:"connection_id,omitempty"`
}

func writeSubscription(w http.ResponseWriter, status int, v View) {
	gateway.WriteJSON(w, status, struct {
		Subscription View `json:"subscription"`
	}{v})
}

func (h *Handler) serveSubscription(w http.ResponseWriter, r *http.Request, gid gateway.Identity, name string) error {
	ctx := r.Context()
	id := Identity{Tenant: gid.Tenant, User: gid.User}
	mgr := h.cfg.Manager
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
	if aerr := gateway.DecodeJSON(w, r, &req); aerr != nil {
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
	app, rec, err := h.cfg.Lookup.Connection(ctx, gid, req.App, "")
	if err != nil {
		return h.fail(w, r, err)
	}
	if req.ConnectionID != "" && req.ConnectionID != rec.ConnectionID {
		if rec, err = h.cfg.Lookup.Store.Get(ctx, gid.Tenant, gid.User, app.UUID, req.ConnectionID); err != nil {
			return h.fail(w, r, err)
		}
	}
	if rec == nil {
		return h.fail(w, r, &gateway.Error{Status: http.StatusBadRequest, Code: "connection_invalid",
			Message: "connection_id is not this user's stored connection for app " + app.Key})
	}
	v, created, err := mgr.Ensure(ctx, id, name, Spec{App: app.Key, Trigger: req.Trigger, Inputs: req.Inputs, ConnectionID: rec.ConnectionID})
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

// fail maps the package's errors, then answers as zapier_actions does.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) error {
	switch {
	case errors.Is(err, ErrInvalidName):
		err = gateway.BadRequest("a subscription name is 1-64 of A-Z a-z 0-9 . _ -")
	case errors.Is(err, ErrSubscriptionConflict), errors.Is(err, ErrConflict):
		err = &gateway.Error{Status: http.StatusConflict, Code: "subscription_conflict",
			Message: "a subscription with this name exists with another app, trigger, inputs or connection: delete it first"}
	case errors.Is(err, ErrSubscriptionLimit):
		err = &gateway.Error{Status: http.StatusConflict, Code: "subscription_limit",
			Message: "this user has as many subscriptions as allowed (max_subscriptions_per_user): delete one first"}
	case errors.Is(err, ErrNotFound):
		err = &gateway.Error{Status: http.StatusNotFound, Code: "subscription_not_found", Message: "this user has no subscription with this name"}
	}
	return gateway.Fail(w, r, err)
}

// serveNotify takes Zapier's availability notification (§3.8) as a hint
// only: limited per source address, the inbox_token checked for its form
// and MAC before any lookup (a forged one is 400), the inbox id looked up
// among known subscriptions (Manager.Notify), the count never trusted, and
// the answer 200 whatever the id.
func (h *Handler) serveNotify(w http.ResponseWriter, r *http.Request) error {
	if !gateway.AllowMethod(w, r, http.MethodPost) {
		return nil
	}
	if ok, retry := h.cfg.NotifyLimit.Allow(h.cfg.SourceAddr(r)); !ok {
		h.cfg.ObserveNotification("rate_limited")
		gateway.WriteError(w, &gateway.Error{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: retry,
			Message: "too many notifications from this address; retry later"})
		return nil
	}
	mgr := h.cfg.Manager
	token := r.URL.Query().Get("inbox_token")
	if mgr.NotifyTokenForm(token) == TokenMalformed {
		h.cfg.ObserveNotification("token_invalid")
		gateway.WriteError(w, gateway.BadRequest("inbox_token is missing or is not one this gateway registered"))
		return nil
	}
	inboxID, err := ParseNotify(r.Body)
	if err != nil {
		gateway.WriteError(w, gateway.BadRequest("expected {\"inbox_id\": …}"))
		return nil
	}
	known := mgr.Notify(r.Context(), inboxID, token)
	h.cfg.ObserveNotification(fmt.Sprint(known))
	gateway.WriteJSON(w, http.StatusOK, struct {
		OK bool `json:"ok"`
	}{true})
	return nil
}

// peerHost is the peer's host.
func peerHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// connectionEvent is what the partner receives for a connection webhook.
type connectionEvent struct {
	Type         string          `json:"type"`
	Tenant       string          `json:"tenant"`
	User         string          `json:"user"`
	App          string          `json:"app"`
	ConnectionID string          `json:"connection_id"`
	ExpiresAt    string          `json:"expires_at,omitempty"`
	Test         bool            `json:"test,omitempty"`
	ZapierType   string          `json:"zapier_type"`
	Data         json.RawMessage `json:"data,omitempty"`
}

// serveConnectionWebhook verifies a connection webhook from Zapier (raw
// body, timestamp tolerance, webhook-id de-duplication), maps the
// connection to its user, and forwards it to deliver_to under the same
// webhook-id, re-signed with signing_secret. An unknown connection is
// acknowledged and logged, never forwarded. When the partner fails, Zapier
// gets a 502 and retries.
func (h *Handler) serveConnectionWebhook(w http.ResponseWriter, r *http.Request) error {
	verifier := h.cfg.Options.verifier
	if verifier == nil {
		gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found", Message: "connection webhooks are not configured (connection_webhook_secret)"})
		return nil
	}
	if !gateway.AllowMethod(w, r, http.MethodPost) {
		return nil
	}
	observe := h.cfg.ObserveConnectionWebhook
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		observe("malformed")
		gateway.WriteError(w, gateway.BadRequest("the body is too large or unreadable"))
		return nil
	}
	id, err := verifier.Verify(body, r.Header)
	if err != nil {
		outcome := "signature_invalid"
		if errors.Is(err, webhooksig.ErrTooOld) || errors.Is(err, webhooksig.ErrTooNew) {
			outcome = "stale"
		}
		observe(outcome)
		h.logger.Info("refused a connection webhook", zap.String("reason", outcome), zap.String("remote", r.RemoteAddr))
		gateway.WriteError(w, &gateway.Error{Status: http.StatusUnauthorized, Code: "signature_invalid",
			Message: "the Standard Webhooks signature is missing, wrong or outside the timestamp tolerance"})
		return nil
	}
	ctx := r.Context()
	ok := func(status string) {
		gateway.WriteJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{status})
	}
	in, err := ParseConnectionWebhook(body)
	if err != nil {
		observe("malformed")
		gateway.WriteError(w, gateway.BadRequest("expected {\"type\",\"data\":{…}}"))
		return nil
	}
	// Claimed before anything is forwarded, atomically across the gateways
	// sharing the storage: copies of one delivery are forwarded once.
	claim, err := h.seen.Claim(ctx, id)
	if err != nil {
		return &gateway.HandlerError{Status: http.StatusInternalServerError, Err: err}
	}
	switch claim {
	case AlreadyForwarded:
		observe("duplicate")
		ok("duplicate")
		return nil
	case InFlight:
		observe("duplicate")
		gateway.WriteError(w, &gateway.Error{Status: http.StatusConflict, Code: "webhook_in_progress", RetryAfter: time.Second,
			Message: "this delivery is being forwarded right now; retry later if it fails"})
		return nil
	}
	defer h.sweepClaims(ctx)
	owner, err := h.cfg.Lookup.Store.Owner(ctx, in.ConnectionID) // connect/store_owner.go
	if err != nil {
		_ = h.seen.Abandon(context.WithoutCancel(ctx), id)
		return &gateway.HandlerError{Status: http.StatusInternalServerError, Err: err}
	}
	if in.ConnectionID == "" || owner == nil {
		observe("unknown_connection")
		h.logger.Info("a connection webhook for a connection no user stored; acknowledged, not forwarded",
			zap.String("type", in.Type), zap.String("webhook_id", id))
		_ = h.seen.Done(ctx, id)
		ok("unknown_connection")
		return nil
	}
	typ := in.Type
	if typ == "connection.expiry_scheduled" {
		typ = "connection.expiring"
	}
	out, _ := json.Marshal(connectionEvent{Type: typ, Tenant: owner.Tenant, User: owner.User, App: owner.Record.App,
		ConnectionID: in.ConnectionID, ExpiresAt: in.ExpiresAt, Test: in.Test, ZapierType: in.Type, Data: in.Data})
	if err := h.sender.Send(ctx, id, out); err != nil {
		_ = h.seen.Abandon(context.WithoutCancel(ctx), id)
		observe("partner_failed")
		h.logger.Warn("forwarding a connection webhook to deliver_to failed; Zapier will retry",
			zap.String("identity", gateway.LogHash(owner.Tenant, owner.User)), zap.Error(err))
		gateway.WriteError(w, &gateway.Error{Status: http.StatusBadGateway, Code: "delivery_failed", Message: "the partner did not accept the event; retry later"})
		return nil
	}
	if err := h.seen.Done(context.WithoutCancel(ctx), id); err != nil {
		h.logger.Warn("marking a connection webhook forwarded", zap.Error(err))
	}
	observe("forwarded")
	ok("forwarded")
	return nil
}

// sweepClaims deletes claims older than seenWebhookRetention, at most hourly.
func (h *Handler) sweepClaims(ctx context.Context) {
	storage := h.cfg.Storage
	h.sweeper.Maybe(context.WithoutCancel(ctx), h.seen.Now(), time.Hour, func(ctx context.Context) {
		keys, err := storage.List(ctx, SeenWebhooksPrefix, false)
		if err != nil {
			return
		}
		cutoff := h.seen.Now().Add(-seenWebhookRetention)
		for _, k := range keys {
			if info, err := storage.Stat(ctx, k); err == nil && info.Modified.Before(cutoff) {
				_ = storage.Delete(ctx, k)
			}
		}
	})
}
