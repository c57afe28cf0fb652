package fakezapier

// Connection webhooks (zapier-api-2026.md §4): the deliveries Zapier POSTs
// to a partner's callback_url, signed with Standard Webhooks. Only the
// sending side is here, as a test hook; the registration routes
// (/connections/v1/webhooks) are not served.
//
// Signing uses the reference Standard Webhooks library, not the gateway's
// webhooksig package, so the two cannot share a bug.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// NewWebhookSecret returns a fresh whsec_ secret, as POST /webhooks does.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// ConnectionExpiryBody is a connection.expiry_scheduled delivery body
// (§4.4), with the fake's data fields (§7 #23).
func ConnectionExpiryBody(connectionID, app string, expiresAt time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"type":       "connection.expiry_scheduled",
		"expires_at": expiresAt.UTC().Format(time.RFC3339),
		"data":       map[string]any{"connection_id": connectionID, "app": app},
	})
	return b
}

// ConnectionWebhook is one delivery to send. Zero ID and Timestamp take a
// fresh id and now; Secret signs it (a wrong one forges it).
type ConnectionWebhook struct {
	URL       string
	Secret    string
	ID        string
	Timestamp time.Time
	Body      []byte
	Test      bool // adds webhook-test: true, as POST /webhooks/{id}/test does
}

// SendConnectionWebhook POSTs one signed delivery and returns the
// receiver's status and the webhook-id used.
func (s *Server) SendConnectionWebhook(d ConnectionWebhook) (int, string, error) {
	wh, err := standardwebhooks.NewWebhook(d.Secret)
	if err != nil {
		return 0, "", fmt.Errorf("fakezapier: webhook secret: %w", err)
	}
	if d.ID == "" {
		d.ID = "msg_" + newUUID()
	}
	if d.Timestamp.IsZero() {
		d.Timestamp = s.now()
	}
	sig, err := wh.Sign(d.ID, d.Timestamp, d.Body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(standardwebhooks.HeaderWebhookID, d.ID)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(d.Timestamp.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	if d.Test {
		req.Header.Set("webhook-test", "true")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, d.ID, err
	}
	resp.Body.Close()
	return resp.StatusCode, d.ID, nil
}
