package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/sweep"
	"github.com/zapgate/caddy-zapier/triggers"
	"github.com/zapgate/caddy-zapier/webhooksig"
)

const (
	maxWebhookBody = 1 << 20
	// seenWebhooksPrefix remembers Zapier's webhook-ids already forwarded,
	// for seenWebhookRetention (zapier-api-2026.md §7 #24: at least 24h).
	seenWebhooksPrefix   = "zapier/events/connection-webhooks"
	seenWebhookRetention = 48 * time.Hour
)

// webhookSeen claims Zapier's connection webhooks by webhook-id in Caddy
// storage (triggers.WebhookClaims), so the gateways sharing it forward a
// delivery once, and sweeps the old claims.
type webhookSeen struct {
	*triggers.WebhookClaims
	storage certmagic.Storage
	sweeper sweep.Sweeper
}

func newWebhookSeen(storage certmagic.Storage, inFlight time.Duration) *webhookSeen {
	return &webhookSeen{storage: storage, WebhookClaims: &triggers.WebhookClaims{Storage: storage, Prefix: seenWebhooksPrefix,
		Name: connect.StorageKeyPart, InFlightTTL: inFlight, Now: time.Now}}
}

// sweep deletes claims older than seenWebhookRetention, at most hourly.
func (s *webhookSeen) sweep(ctx context.Context) {
	s.sweeper.Maybe(context.WithoutCancel(ctx), s.Now(), time.Hour, func(ctx context.Context) {
		keys, err := s.storage.List(ctx, seenWebhooksPrefix, false)
		if err != nil {
			return
		}
		cutoff := s.Now().Add(-seenWebhookRetention)
		for _, k := range keys {
			if info, err := s.storage.Stat(ctx, k); err == nil && info.Modified.Before(cutoff) {
				_ = s.storage.Delete(ctx, k)
			}
		}
	})
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
func (h *Triggers) serveConnectionWebhook(w http.ResponseWriter, r *http.Request) error {
	if h.verifier == nil {
		gateway.WriteError(w, &gateway.Error{Status: http.StatusNotFound, Code: "not_found", Message: "connection webhooks are not configured (connection_webhook_secret)"})
		return nil
	}
	if !gateway.AllowMethod(w, r, http.MethodPost) {
		return nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		connectionWebhooks.WithLabelValues("malformed").Inc()
		gateway.WriteError(w, gateway.BadRequest("the body is too large or unreadable"))
		return nil
	}
	id, err := h.verifier.Verify(body, r.Header)
	if err != nil {
		outcome := "signature_invalid"
		if errors.Is(err, webhooksig.ErrTooOld) || errors.Is(err, webhooksig.ErrTooNew) {
			outcome = "stale"
		}
		connectionWebhooks.WithLabelValues(outcome).Inc()
		h.logger.Info("refused a connection webhook", zap.String("reason", outcome), zap.String("remote", r.RemoteAddr))
		gateway.WriteError(w, &gateway.Error{Status: http.StatusUnauthorized, Code: "signature_invalid",
			Message: "the Standard Webhooks signature is missing, wrong or outside the timestamp tolerance"})
		return nil
	}
	ctx := r.Context()
	ok := func(status string) {
		writeConnectJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{status})
	}
	in, err := triggers.ParseConnectionWebhook(body)
	if err != nil {
		connectionWebhooks.WithLabelValues("malformed").Inc()
		gateway.WriteError(w, gateway.BadRequest("expected {\"type\",\"data\":{…}}"))
		return nil
	}
	// Claimed before anything is forwarded, atomically across the gateways
	// sharing the storage: copies of one delivery are forwarded once.
	claim, err := h.seen.Claim(ctx, id)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	switch claim {
	case triggers.AlreadyForwarded:
		connectionWebhooks.WithLabelValues("duplicate").Inc()
		ok("duplicate")
		return nil
	case triggers.InFlight:
		connectionWebhooks.WithLabelValues("duplicate").Inc()
		gateway.WriteError(w, &gateway.Error{Status: http.StatusConflict, Code: "webhook_in_progress", RetryAfter: time.Second,
			Message: "this delivery is being forwarded right now; retry later if it fails"})
		return nil
	}
	defer h.seen.sweep(ctx)
	owner, err := h.conns.store.Owner(ctx, in.ConnectionID) // connect/store_owner.go
	if err != nil {
		_ = h.seen.Abandon(context.WithoutCancel(ctx), id)
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if in.ConnectionID == "" || owner == nil {
		connectionWebhooks.WithLabelValues("unknown_connection").Inc()
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
		connectionWebhooks.WithLabelValues("partner_failed").Inc()
		h.logger.Warn("forwarding a connection webhook to deliver_to failed; Zapier will retry",
			zap.String("identity", gateway.LogHash(owner.Tenant, owner.User)), zap.Error(err))
		gateway.WriteError(w, &gateway.Error{Status: http.StatusBadGateway, Code: "delivery_failed", Message: "the partner did not accept the event; retry later"})
		return nil
	}
	if err := h.seen.Done(context.WithoutCancel(ctx), id); err != nil {
		h.logger.Warn("marking a connection webhook forwarded", zap.Error(err))
	}
	connectionWebhooks.WithLabelValues("forwarded").Inc()
	ok("forwarded")
	return nil
}
