package triggers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Connection webhooks registration (zapier-api-2026.md §4.3), at
// <api>/connections/v1/webhooks, with the partner's dedicated credentials.

// WebhookEventType is the one event type Zapier sends today.
const WebhookEventType = "connection.expiry_scheduled"

// WebhooksClient manages the partner's connection-webhook registrations.
type WebhooksClient struct {
	APIURL string // e.g. https://api.zapier.com
	Token  string // bearer token of the dedicated client; never in an error
	HTTP   *http.Client
}

// Webhook is a registration. Secret is only set by Register (Zapier
// returns it once).
type Webhook struct {
	ID          string `json:"id"`
	EventType   string `json:"event_type"`
	CallbackURL string `json:"callback_url"`
	IsActive    bool   `json:"is_active"`
	CreatedAt   string `json:"created_at,omitempty"`
	UpdatedAt   string `json:"updated_at,omitempty"`
	Secret      string `json:"secret,omitempty"`
}

func (c *WebhooksClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.APIURL, "/")+"/connections/v1/webhooks"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = noRedirects
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s connection webhooks: %w", method, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s connection webhooks: HTTP %d%s", method, resp.StatusCode, apiErrorText(raw, c.Token))
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s connection webhooks: malformed answer", method)
		}
	}
	return nil
}

// apiErrorText is ": code: detail" from Zapier's error envelope, bounded,
// without the token.
func apiErrorText(raw []byte, token string) string {
	var v struct {
		Errors []struct{ Code, Detail string } `json:"errors"`
	}
	if json.Unmarshal(raw, &v) != nil || len(v.Errors) == 0 {
		return ""
	}
	s := ": " + v.Errors[0].Code + ": " + v.Errors[0].Detail
	if token != "" {
		s = strings.ReplaceAll(s, token, "[redacted]")
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// Register creates a registration for callbackURL (https) and returns it
// with its whsec_ secret, which Zapier shows only this once.
func (c *WebhooksClient) Register(ctx context.Context, callbackURL string) (Webhook, error) {
	var w Webhook
	err := c.do(ctx, http.MethodPost, "", map[string]string{"event_type": WebhookEventType, "callback_url": callbackURL}, &w)
	return w, err
}

// List returns the registrations ({count,next,previous,results} or {data}).
func (c *WebhooksClient) List(ctx context.Context) ([]Webhook, error) {
	var v struct {
		Results []Webhook `json:"results"`
		Data    []Webhook `json:"data"`
	}
	if err := c.do(ctx, http.MethodGet, "", nil, &v); err != nil {
		return nil, err
	}
	return append(v.Results, v.Data...), nil
}

// Test asks Zapier to send a test delivery (webhook-test: true).
func (c *WebhooksClient) Test(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/"+url.PathEscape(id)+"/test", nil, nil)
}

// Delete removes a registration.
func (c *WebhooksClient) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/"+url.PathEscape(id), nil, nil)
}

// ClientCredentialsToken exchanges the dedicated connection-webhooks
// credentials for a token (client_credentials, client_secret_post, scopes
// connection:webhook:read connection:webhook:write; Zapier's page on this
// exchange was not retrievable, so this follows its other client-credential
// flows).
func ClientCredentialsToken(ctx context.Context, hc *http.Client, tokenURL, clientID, clientSecret string) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {clientSecret},
		"scope": {"connection:webhook:read connection:webhook:write"}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if hc == nil {
		hc = noRedirects
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token exchange: %w", err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v)
	if resp.StatusCode != http.StatusOK || v.AccessToken == "" {
		return "", fmt.Errorf("token exchange: HTTP %d %s", resp.StatusCode, v.Error)
	}
	return v.AccessToken, nil
}

// WebhooksCredentials are the partner's dedicated connection-webhooks
// credentials: a bearer Token, else ClientID and ClientSecret exchanged at
// TokenURL.
type WebhooksCredentials struct {
	APIURL, TokenURL, Token, ClientID, ClientSecret string
}

// Client is the registrations client of the credentials (one token
// exchange when only client credentials are given).
func (c WebhooksCredentials) Client(ctx context.Context) (*WebhooksClient, error) {
	token := c.Token
	if token == "" {
		if c.ClientID == "" || c.ClientSecret == "" {
			return nil, errors.New("give --token (or ZAPIER_WEBHOOKS_TOKEN), or ZAPIER_WEBHOOKS_CLIENT_ID and ZAPIER_WEBHOOKS_CLIENT_SECRET")
		}
		var err error
		if token, err = ClientCredentialsToken(ctx, nil, c.TokenURL, c.ClientID, c.ClientSecret); err != nil {
			return nil, err
		}
	}
	return &WebhooksClient{APIURL: c.APIURL, Token: token}, nil
}
