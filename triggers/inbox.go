// Package triggers delivers a user's Zapier trigger events to the partner:
// it keeps one Trigger Inbox per (user, subscription name) at Zapier
// (zapier-api-2026.md §3), leases the inbox's messages, POSTs each one to
// the partner signed with Standard Webhooks (webhooksig), acknowledges it at
// Zapier only after the partner answered 2xx, retries with backoff, and
// dead-letters what never gets through.
//
// It is plain Go (no Caddy import): storage is any certmagic-like key/value
// store with locks, and calls to Zapier go through a CallFunc that supplies
// the user's access token.
package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// DefaultPrefix is the Trigger Inbox path on Zapier's API host (§3.1).
const DefaultPrefix = "/trigger-inbox/api/v1"

// Identity is the partner's end user.
type Identity struct{ Tenant, User string }

// CallFunc runs call with the user's access token (the gateway's callAPI:
// token cache, breaker, request budget, one retry on a stale token).
type CallFunc func(ctx context.Context, id Identity, call func(ctx context.Context, access string) error) error

// InboxAPI is the Trigger Inbox client.
type InboxAPI struct {
	Client  *zapierapi.Client
	BaseURL string // API URL + prefix, e.g. https://api.zapier.com/trigger-inbox/api/v1
	Call    CallFunc
	// ClientFunc, when set, is asked for the client at each call instead of
	// Client (the gateway's client changes with each config reload).
	ClientFunc func() *zapierapi.Client
}

// Subscription is what an inbox is subscribed to (§3.4).
type Subscription struct {
	AppKey       string          `json:"app_key"`
	ActionKey    string          `json:"action_key"`
	Inputs       json.RawMessage `json:"inputs"`
	ConnectionID *string         `json:"connection_id"`
}

// Inbox is Zapier's inbox object, the fields the gateway uses.
type Inbox struct {
	ID           string       `json:"id"`
	Key          *string      `json:"key"`
	Status       string       `json:"status"`
	PausedReason *string      `json:"paused_reason"`
	Subscription Subscription `json:"subscription"`
}

// InboxAttributes come with every lease answer.
type InboxAttributes struct {
	Status       string  `json:"status"`
	PausedReason *string `json:"paused_reason"`
}

// Reason is the paused reason, or "".
func (a InboxAttributes) Reason() string {
	if a.PausedReason == nil {
		return ""
	}
	return *a.PausedReason
}

// Message is a leased message (§3.4).
type Message struct {
	ID         string          `json:"id"`
	CreatedAt  string          `json:"created_at"`
	Status     string          `json:"status"`
	Payload    json.RawMessage `json:"payload"`
	Attributes struct {
		LeaseCount        int     `json:"lease_count"`
		ErrorMessage      *string `json:"error_message"`
		PossibleDuplicate bool    `json:"possible_duplicate_data"`
	} `json:"message_attributes"`
}

// Lease is the answer to a lease request.
type Lease struct {
	LeaseID         *string         `json:"lease_id"`
	LeasedUntil     *string         `json:"leased_until"`
	Results         []Message       `json:"results"`
	InboxAttributes InboxAttributes `json:"inbox_attributes"`
}

// ErrPausedDrained is a lease on a paused inbox with nothing left (409).
var ErrPausedDrained = errors.New("triggers: the inbox is paused and drained")

// ErrConflict is an ensure with a key Zapier already has with another
// configuration (409).
var ErrConflict = errors.New("triggers: the inbox key exists with a different configuration")

// IsLeaseExpired reports an ack or release refused because the lease ran
// out: the messages will be leased again (§3.6).
func IsLeaseExpired(err error) bool {
	zerr, ok := zapierapi.AsError(err)
	return ok && zerr.StatusCode == http.StatusBadRequest && zerr.OAuthError == "lease_expired"
}

// IsNotFound reports a 404 from Zapier.
func IsNotFound(err error) bool {
	zerr, ok := zapierapi.AsError(err)
	return ok && zerr.StatusCode == http.StatusNotFound
}

func is409(err error) bool {
	zerr, ok := zapierapi.AsError(err)
	return ok && zerr.StatusCode == http.StatusConflict
}

func (a *InboxAPI) url(parts ...string) string {
	u := strings.TrimRight(a.BaseURL, "/") + "/inboxes"
	for _, p := range parts {
		u += "/" + url.PathEscape(p)
	}
	return u
}

func (a *InboxAPI) do(ctx context.Context, id Identity, op, method, u string, in, out any) error {
	return a.Call(ctx, id, func(ctx context.Context, access string) error {
		c := a.Client
		if a.ClientFunc != nil {
			c = a.ClientFunc()
		}
		return c.DoJSON(ctx, op, method, u, access, in, out)
	})
}

// Ensure is PUT /inboxes: the inbox with key for this user, created if
// missing (§3.5 #3). notificationURL "" registers none.
func (a *InboxAPI) Ensure(ctx context.Context, id Identity, key string, sub Subscription, notificationURL string) (Inbox, error) {
	body := struct {
		Key             string       `json:"key"`
		Subscription    Subscription `json:"subscription"`
		NotificationURL *string      `json:"notification_url,omitempty"`
	}{Key: key, Subscription: sub}
	if notificationURL != "" {
		body.NotificationURL = &notificationURL
	}
	var ib Inbox
	err := a.do(ctx, id, "trigger inbox ensure", http.MethodPut, a.url(), body, &ib)
	if is409(err) {
		return Inbox{}, ErrConflict
	}
	if err == nil && ib.ID == "" {
		err = &zapierapi.Error{Kind: zapierapi.KindFailed, Op: "trigger inbox ensure", Description: "no inbox id in the answer"}
	}
	return ib, err
}

// Get is GET /inboxes/{id}.
func (a *InboxAPI) Get(ctx context.Context, id Identity, inboxID string) (Inbox, error) {
	var ib Inbox
	err := a.do(ctx, id, "trigger inbox get", http.MethodGet, a.url(inboxID), nil, &ib)
	return ib, err
}

// Delete is DELETE /inboxes/{id}; an inbox already gone is not an error.
func (a *InboxAPI) Delete(ctx context.Context, id Identity, inboxID string) error {
	err := a.do(ctx, id, "trigger inbox delete", http.MethodDelete, a.url(inboxID), nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}

// Pause is POST /inboxes/{id}/pause.
func (a *InboxAPI) Pause(ctx context.Context, id Identity, inboxID string) (Inbox, error) {
	var ib Inbox
	err := a.do(ctx, id, "trigger inbox pause", http.MethodPost, a.url(inboxID, "pause"), nil, &ib)
	return ib, err
}

// Resume is POST /inboxes/{id}/resume.
func (a *InboxAPI) Resume(ctx context.Context, id Identity, inboxID string) (Inbox, error) {
	var ib Inbox
	err := a.do(ctx, id, "trigger inbox resume", http.MethodPost, a.url(inboxID, "resume"), nil, &ib)
	return ib, err
}

// Lease leases up to limit messages for seconds (§3.5 #10). A paused,
// drained inbox is ErrPausedDrained.
func (a *InboxAPI) Lease(ctx context.Context, id Identity, inboxID string, seconds, limit int) (Lease, error) {
	var l Lease
	body := map[string]int{"lease_seconds": seconds, "lease_limit": limit}
	err := a.do(ctx, id, "trigger inbox lease", http.MethodPost, a.url(inboxID, "messages", "lease"), body, &l)
	if is409(err) {
		return Lease{}, ErrPausedDrained
	}
	return l, err
}

// Events holds the inbox's events stream open (§3.9) and calls onData
// with each data frame, until the stream ends (nil), goes silent for idle
// (nil), ctx ends, or Zapier refuses it (an error).
func (a *InboxAPI) Events(ctx context.Context, id Identity, inboxID string, idle time.Duration, onData func([]byte)) error {
	u := a.url(inboxID, "events")
	return a.Call(ctx, id, func(ctx context.Context, access string) error {
		c := a.Client
		if a.ClientFunc != nil {
			c = a.ClientFunc()
		}
		return c.Stream(ctx, "trigger inbox events", u, access, idle, onData)
	})
}

// Ack acknowledges messages of a lease: they are gone for good.
func (a *InboxAPI) Ack(ctx context.Context, id Identity, inboxID, leaseID string, msgIDs ...string) error {
	body := map[string]any{"lease_id": leaseID, "message_ids": msgIDs}
	return a.do(ctx, id, "trigger inbox ack", http.MethodPost, a.url(inboxID, "messages", "ack"), body, nil)
}

// Release gives messages of a lease back to the queue at once.
func (a *InboxAPI) Release(ctx context.Context, id Identity, inboxID, leaseID string, msgIDs ...string) error {
	body := map[string]any{"lease_id": leaseID, "message_ids": msgIDs}
	return a.do(ctx, id, "trigger inbox release", http.MethodPost, a.url(inboxID, "messages", "release"), body, nil)
}
