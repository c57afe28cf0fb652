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
	"strings"
	"sync"
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
	resp, err := s.partnerClient(10 * time.Second).Do(req)
	if err != nil {
		return 0, d.ID, err
	}
	resp.Body.Close()
	return resp.StatusCode, d.ID, nil
}

// The registration API (zapier-api-2026.md §4.3) under /connections/v1:
// webhooks per partner account, authenticated by one bearer token set with
// SetConnectionWebhooksToken (Zapier's exchange for the dedicated
// credentials is not documented). POST returns the whsec_ secret once; POST
// /webhooks/{id}/test sends a signed delivery marked webhook-test: true.

type connWebhook struct {
	ID          string `json:"id"`
	EventType   string `json:"event_type"`
	CallbackURL string `json:"callback_url"`
	IsActive    bool   `json:"is_active"`
	CreatedAt   string `json:"created_at"`
	UpdatedAt   string `json:"updated_at"`
	secret      string
}

type connWebhooksState struct {
	mu        sync.Mutex
	token     string
	allowHTTP bool
	hooks     map[string]*connWebhook
	order     []string
}

// SetConnectionWebhooksToken sets the bearer token the registration API
// accepts; allowHTTP also accepts http:// callback URLs (tests).
func (s *Server) SetConnectionWebhooksToken(token string, allowHTTP bool) {
	st := &s.inbox.connHooks
	st.mu.Lock()
	defer st.mu.Unlock()
	st.token, st.allowHTTP = token, allowHTTP
}

func (s *Server) serveConnWebhooks(w http.ResponseWriter, r *http.Request) {
	st := &s.inbox.connHooks
	st.mu.Lock()
	if st.hooks == nil {
		st.hooks = map[string]*connWebhook{}
	}
	tok, allowHTTP := st.token, st.allowHTTP
	st.mu.Unlock()
	if tok == "" || bearerToken(r) != tok {
		inboxError(w, http.StatusUnauthorized, "not_authenticated", "Authentication credentials were not provided or are invalid.")
		return
	}
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/connections/v1"), "/")
	parts := strings.Split(rest, "/")
	if parts[0] != "webhooks" {
		inboxError(w, http.StatusNotFound, "not_found", "Not found.")
		return
	}
	checkURL := func(u string) bool {
		return strings.HasPrefix(u, "https://") || allowHTTP && strings.HasPrefix(u, "http://")
	}
	now := s.now().UTC().Format(time.RFC3339)
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case len(parts) == 1 && r.Method == http.MethodGet:
		out := []*connWebhook{}
		for _, id := range st.order {
			out = append(out, st.hooks[id])
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "next": nil, "previous": nil, "results": out})
	case len(parts) == 1 && r.Method == http.MethodPost:
		var req struct {
			EventType   string `json:"event_type"`
			CallbackURL string `json:"callback_url"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.EventType != "connection.expiry_scheduled" || !checkURL(req.CallbackURL) {
			inboxError(w, http.StatusBadRequest, "invalid", "event_type must be connection.expiry_scheduled and callback_url an https URL.")
			return
		}
		h := &connWebhook{ID: newUUID(), EventType: req.EventType, CallbackURL: req.CallbackURL, IsActive: true,
			CreatedAt: now, UpdatedAt: now, secret: NewWebhookSecret()}
		st.hooks[h.ID] = h
		st.order = append(st.order, h.ID)
		writeJSON(w, http.StatusCreated, map[string]any{"id": h.ID, "event_type": h.EventType, "callback_url": h.CallbackURL,
			"is_active": true, "created_at": now, "updated_at": now, "secret": h.secret})
	case len(parts) >= 2 && st.hooks[parts[1]] == nil:
		inboxError(w, http.StatusNotFound, "not_found", "No such webhook.")
	case len(parts) == 2 && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, st.hooks[parts[1]])
	case len(parts) == 2 && r.Method == http.MethodDelete:
		delete(st.hooks, parts[1])
		for i, id := range st.order {
			if id == parts[1] {
				st.order = append(st.order[:i], st.order[i+1:]...)
				break
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case len(parts) == 3 && parts[2] == "test" && r.Method == http.MethodPost:
		h := *st.hooks[parts[1]]
		go func() {
			_, _, _ = s.SendConnectionWebhook(ConnectionWebhook{URL: h.CallbackURL, Secret: h.secret, Test: true,
				Body: ConnectionExpiryBody("test-connection", "test-app", s.now().Add(7*24*time.Hour))})
		}()
		writeJSON(w, http.StatusAccepted, map[string]any{"status": "sent"})
	default:
		inboxError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed.")
	}
}

// partnerClient is a copy of Config.CallbackHTTPClient (or a plain client)
// with timeout, for the POSTs the fake makes to the partner's routes.
func (s *Server) partnerClient(timeout time.Duration) *http.Client {
	var c http.Client
	if s.cfg.CallbackHTTPClient != nil {
		c = *s.cfg.CallbackHTTPClient
	}
	c.Timeout = timeout
	return &c
}
