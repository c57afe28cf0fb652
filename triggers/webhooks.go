package triggers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"
)

// MaxNotifyBody bounds the body of a notification.
const MaxNotifyBody = 64 << 10

// ErrBadNotify is a notification body that is not {"inbox_id": "…"}.
var ErrBadNotify = errors.New(`triggers: expected {"inbox_id": …}`)

// ParseNotify reads Zapier's availability notification (§3.8): a JSON
// object with the inbox id (at most 128 bytes); anything else in it is
// ignored (the message count is never trusted).
func ParseNotify(r io.Reader) (string, error) {
	var body struct {
		InboxID *string `json:"inbox_id"`
	}
	dec := json.NewDecoder(io.LimitReader(r, MaxNotifyBody))
	if err := dec.Decode(&body); err != nil || body.InboxID == nil || *body.InboxID == "" || len(*body.InboxID) > 128 {
		return "", ErrBadNotify
	}
	return *body.InboxID, nil
}

// ConnectionWebhook is a connection webhook from Zapier (zapier-api-2026.md
// §4.4), as far as the gateway reads it. Everything here comes from the
// signed body; unsigned headers and the query are never read.
type ConnectionWebhook struct {
	Type      string
	ExpiresAt string
	Data      json.RawMessage
	// ConnectionID is data.connection_id, data.authentication_id or
	// data.id (a string or a number); "" when none.
	ConnectionID string
	// Test is a test delivery, marked in the signed body ("test": true at
	// the top or in data). The webhook-test header Zapier adds is not
	// signed, so it is not trusted: anyone relaying a genuine delivery
	// could add it to make the partner ignore a real event.
	Test bool
}

// ErrBadConnectionWebhook is a body that is not {"type", "data": {…}}.
var ErrBadConnectionWebhook = errors.New(`triggers: expected {"type","data":{…}}`)

// ParseConnectionWebhook reads a verified connection webhook body.
func ParseConnectionWebhook(body []byte) (ConnectionWebhook, error) {
	var in struct {
		Type      string          `json:"type"`
		ExpiresAt string          `json:"expires_at"`
		Data      json.RawMessage `json:"data"`
		Test      json.RawMessage `json:"test"`
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(body, &in) != nil || in.Type == "" || len(in.Type) > 200 || json.Unmarshal(in.Data, &data) != nil || data == nil {
		return ConnectionWebhook{}, ErrBadConnectionWebhook
	}
	w := ConnectionWebhook{Type: in.Type, ExpiresAt: in.ExpiresAt, Data: in.Data,
		Test: isTrue(in.Test) || isTrue(data["test"])}
	for _, field := range []string{"connection_id", "authentication_id", "id"} {
		if v, found := idStringField(data[field]); found {
			w.ConnectionID = v
			break
		}
	}
	return w, nil
}

func isTrue(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("true")) }

// idStringField reads an id that may be a JSON string or number.
func idStringField(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil && n != "" {
		return n.String(), true
	}
	return "", false
}

// Claim outcomes.
const (
	// Claimed: this caller forwards the delivery, then calls Done or
	// Abandon.
	Claimed = iota
	// AlreadyForwarded: a gateway forwarded it before.
	AlreadyForwarded
	// InFlight: another gateway (or request) is forwarding it right now;
	// if that fails, the delivery is claimable again.
	InFlight
)

// WebhookClaims makes sure each webhook-id is forwarded once by all the
// gateways sharing a storage: a delivery is claimed atomically (under the
// storage lock) before it is forwarded, marked done after, and released
// when forwarding failed, so a retry forwards it.
type WebhookClaims struct {
	Storage Storage
	Prefix  string // where claims are kept
	// Name names the claim of a webhook-id under Prefix: one safe storage
	// key part. Default: "w" and the id's SHA-256.
	Name func(id string) string
	// InFlightTTL: a claim not marked done within it is taken to be of a
	// gateway that died, and may be claimed again.
	InFlightTTL time.Duration
	Now         func() time.Time
	// LockWait bounds the wait for the storage lock; a delivery whose claim
	// cannot be taken in time is InFlight (its sender retries). Default 3s.
	LockWait time.Duration

	// local holds the ids this process is forwarding, so copies arriving
	// here together do not queue on the storage lock.
	local sync.Map
}

type webhookClaim struct {
	State string    `json:"state"` // forwarding or done
	At    time.Time `json:"at"`
}

// Key is where the claim of webhook-id id is kept.
func (c *WebhookClaims) Key(id string) string {
	if c.Name != nil {
		return path.Join(c.Prefix, c.Name(id))
	}
	sum := sha256.Sum256([]byte(id))
	return path.Join(c.Prefix, "w"+hex.EncodeToString(sum[:]))
}

// Claim claims the delivery with webhook-id id.
func (c *WebhookClaims) Claim(ctx context.Context, id string) (int, error) {
	if _, busy := c.local.LoadOrStore(id, struct{}{}); busy {
		return InFlight, nil
	}
	got, err := c.claim(ctx, id)
	if got != Claimed || err != nil {
		c.local.Delete(id)
	}
	return got, err
}

func (c *WebhookClaims) claim(ctx context.Context, id string) (int, error) {
	key := c.Key(id)
	wait := c.LockWait
	if wait <= 0 {
		wait = 3 * time.Second
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := c.Storage.Lock(lctx, key+".lock"); err != nil {
		if ctx.Err() == nil && lctx.Err() != nil {
			return InFlight, nil // another gateway holds it: being claimed
		}
		return 0, fmt.Errorf("locking a webhook claim: %w", err)
	}
	defer func() { _ = c.Storage.Unlock(context.WithoutCancel(ctx), key+".lock") }()
	now := c.Now()
	data, err := c.Storage.Load(ctx, key)
	switch {
	case err == nil:
		var cur webhookClaim
		if json.Unmarshal(data, &cur) != nil || cur.State == "done" {
			return AlreadyForwarded, nil // an older version's mark is a timestamp: done
		}
		if now.Sub(cur.At) < c.InFlightTTL {
			return InFlight, nil
		}
	case !isNotExist(err):
		return 0, fmt.Errorf("loading a webhook claim: %w", err)
	}
	if err := storeJSON(ctx, c.Storage, key, webhookClaim{State: "forwarding", At: now}); err != nil {
		return 0, fmt.Errorf("storing a webhook claim: %w", err)
	}
	return Claimed, nil
}

// Done marks a claimed delivery forwarded.
func (c *WebhookClaims) Done(ctx context.Context, id string) error {
	defer c.local.Delete(id)
	return storeJSON(ctx, c.Storage, c.Key(id), webhookClaim{State: "done", At: c.Now()})
}

// Abandon releases a claim whose forwarding failed.
func (c *WebhookClaims) Abandon(ctx context.Context, id string) error {
	defer c.local.Delete(id)
	return c.Storage.Delete(ctx, c.Key(id))
}
