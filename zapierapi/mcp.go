package zapierapi

// White Label MCP (zapier-api-2026.md §1): the partner JWT traded directly
// for a connect token bound to the app's MCP resource, the authorization
// code traded for an MCP access token (and refresh token), the refresh
// grant, and the public app list with each app's MCP links.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultMCPConnectScopes are requested with an MCP connect token
// (zapier-api-2026.md §7 question 2).
var DefaultMCPConnectScopes = []string{"connection:write", "mcp:run"}

// MCPToken is an MCP access token with the refresh token Zapier may return.
type MCPToken struct {
	Token
	RefreshToken string
}

// String never prints a token.
func (t MCPToken) String() string {
	return fmt.Sprintf("MCPToken{%s RefreshToken:%s}", t.Token.String(), redactedOrNone(t.RefreshToken))
}

// GoString redacts like String (for %#v).
func (t MCPToken) GoString() string { return t.String() }

func redactedOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return "[redacted]"
}

// ExchangeJWTForMCPConnect trades a partner JWT directly for a single-use
// connect token bound to resource (zapier-api-2026.md §1.4), with scopes
// (default DefaultMCPConnectScopes).
func (c *Client) ExchangeJWTForMCPConnect(ctx context.Context, jwt, resource string, scopes []string) (Token, error) {
	if jwt == "" {
		return Token{}, fmt.Errorf("%w: empty JWT", ErrInvalidInput)
	}
	if err := CheckURL(resource); err != nil {
		return Token{}, fmt.Errorf("%w: resource %v", ErrInvalidInput, err)
	}
	if len(scopes) == 0 {
		scopes = DefaultMCPConnectScopes
	}
	form := url.Values{
		"grant_type":           {c.cfg.GrantType},
		"subject_token":        {jwt},
		"subject_token_type":   {c.cfg.SubjectTokenType},
		"requested_token_type": {c.cfg.ConnectTokenType},
		"scope":                {strings.Join(scopes, " ")},
		"resource":             {resource},
	}
	return c.exchange(ctx, "MCP connect token exchange", form, jwt)
}

// ExchangeMCPCode trades the authorization code of the MCP authorize flow
// for an MCP access token (zapier-api-2026.md §1.7). verifier and resource
// are sent when not empty. A code is single use, so the call is never
// retried.
func (c *Client) ExchangeMCPCode(ctx context.Context, code, redirectURI, verifier, resource string) (MCPToken, error) {
	if code == "" || redirectURI == "" {
		return MCPToken{}, fmt.Errorf("%w: code and redirect_uri are required", ErrInvalidInput)
	}
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {redirectURI},
	}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	if resource != "" {
		form.Set("resource", resource)
	}
	return c.mcpGrant(ctx, "MCP code exchange", form, []string{code, verifier})
}

// RefreshMCPToken uses a refresh token (zapier-api-2026.md §1.7, §7 question
// 5). Zapier may rotate it: the answer's RefreshToken replaces the old one
// when present. Never retried: a rotated refresh token is spent.
func (c *Client) RefreshMCPToken(ctx context.Context, refresh, resource string) (MCPToken, error) {
	if refresh == "" {
		return MCPToken{}, fmt.Errorf("%w: empty refresh token", ErrInvalidInput)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}}
	if resource != "" {
		form.Set("resource", resource)
	}
	return c.mcpGrant(ctx, "MCP token refresh", form, []string{refresh})
}

func (c *Client) mcpGrant(ctx context.Context, op string, form url.Values, secrets []string) (MCPToken, error) {
	h := c.authenticate(form)
	var out MCPToken
	cl := &call{
		op:      op,
		method:  http.MethodPost,
		url:     c.cfg.TokenURL,
		header:  h,
		body:    []byte(form.Encode()),
		secrets: append(secrets, c.cfg.ClientSecret),
		handle: func(_ int, body []byte, start time.Time) error {
			tok, err := ParseTokenResponse(body, start, time.Hour)
			if err != nil {
				return err
			}
			var extra struct {
				RefreshToken json.RawMessage `json:"refresh_token"`
			}
			_ = json.Unmarshal(body, &extra)
			refresh, _ := jsonString(extra.RefreshToken)
			if refresh != "" && !visibleASCII(refresh) {
				return &Error{Kind: KindFailed, Err: errors.New("malformed token response: refresh_token")}
			}
			out = MCPToken{Token: tok, RefreshToken: refresh}
			return nil
		},
	}
	if err := c.run(ctx, cl); err != nil {
		return MCPToken{}, err
	}
	return out, nil
}

// WhitelabelApp is one entry of GET /v2/whitelabel/apps (zapier-api-2026.md
// §1.3).
type WhitelabelApp struct {
	ID    string `json:"id"`
	Key   string `json:"key,omitempty"`
	Title string `json:"title,omitempty"`
	Links struct {
		MCPAuthorizeURL string `json:"mcp_authorize_url"`
		MCPServerURL    string `json:"mcp_server_url"`
	} `json:"links"`
}

// ListWhitelabelApps reads GET <apiURL>/v2/whitelabel/apps?search=… (no
// Authorization: the list is public), following offset pages up to
// maxPages.
func (c *Client) ListWhitelabelApps(ctx context.Context, apiURL, search string) ([]WhitelabelApp, error) {
	const pageSize, maxPages = 100, 20
	var all []WhitelabelApp
	for page := 0; page < maxPages; page++ {
		q := url.Values{"limit": {fmt.Sprint(pageSize)}, "offset": {fmt.Sprint(page * pageSize)}}
		if search != "" {
			q.Set("search", search)
		}
		var out struct {
			Data []WhitelabelApp `json:"data"`
		}
		cl := &call{
			op:     "list White Label apps",
			method: http.MethodGet,
			url:    strings.TrimRight(apiURL, "/") + "/v2/whitelabel/apps?" + q.Encode(),
			header: http.Header{},
			retry:  true,
			handle: func(_ int, body []byte, _ time.Time) error {
				if err := json.Unmarshal(body, &out); err != nil {
					return errors.New("malformed JSON response")
				}
				return nil
			},
		}
		if err := c.run(ctx, cl); err != nil {
			return nil, err
		}
		all = append(all, out.Data...)
		if len(out.Data) < pageSize {
			break
		}
	}
	return all, nil
}
