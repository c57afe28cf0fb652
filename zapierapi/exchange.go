package zapierapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ExchangeJWT exchanges a partner-signed JWT for a user access token
// (zapier-api.md §1.3 A).
func (c *Client) ExchangeJWT(ctx context.Context, jwt string) (Token, error) {
	if jwt == "" {
		return Token{}, fmt.Errorf("%w: empty JWT", ErrInvalidInput)
	}
	form := url.Values{
		"grant_type":           {c.cfg.GrantType},
		"subject_token":        {jwt},
		"subject_token_type":   {c.cfg.SubjectTokenType},
		"requested_token_type": {c.cfg.AccessTokenType},
		"scope":                {c.scope},
	}
	return c.exchange(ctx, "token exchange", form, jwt)
}

// ExchangeConnectToken exchanges a user access token for a single-use connect
// token bound to resource, e.g. "https://connect.zapier.com/to/SlackCLIAPI"
// (zapier-api.md §1.3 B).
func (c *Client) ExchangeConnectToken(ctx context.Context, accessToken, resource string) (Token, error) {
	if accessToken == "" {
		return Token{}, fmt.Errorf("%w: empty access token", ErrInvalidInput)
	}
	if err := CheckURL(resource); err != nil {
		return Token{}, fmt.Errorf("%w: resource %v", ErrInvalidInput, err)
	}
	form := url.Values{
		"grant_type":           {c.cfg.GrantType},
		"subject_token":        {accessToken},
		"subject_token_type":   {c.cfg.AccessTokenType},
		"requested_token_type": {c.cfg.ConnectTokenType},
		"scope":                {c.connScope},
		"resource":             {resource},
	}
	return c.exchange(ctx, "connect token exchange", form, accessToken)
}

// authenticate adds the client's credentials to a token-endpoint request:
// HTTP Basic, or form fields. It returns the request's header.
func (c *Client) authenticate(form url.Values) http.Header {
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	if c.basicAuth != "" {
		h.Set("Authorization", c.basicAuth)
	} else {
		form.Set("client_id", c.cfg.ClientID)
		form.Set("client_secret", c.cfg.ClientSecret)
	}
	return h
}

// exchange POSTs form (plus client authentication) to the token endpoint.
func (c *Client) exchange(ctx context.Context, op string, form url.Values, subject string) (Token, error) {
	h := c.authenticate(form)
	var tok Token
	cl := &call{
		op:      op,
		method:  http.MethodPost,
		url:     c.cfg.TokenURL,
		header:  h,
		body:    []byte(form.Encode()),
		retry:   true, // a repeated exchange just issues another token
		secrets: []string{subject, c.cfg.ClientSecret},
		handle: func(_ int, body []byte, start time.Time) (err error) {
			tok, err = ParseTokenResponse(body, start, c.cfg.DefaultTTL)
			return err
		},
	}
	if err := c.run(ctx, cl); err != nil {
		return Token{}, err
	}
	return tok, nil
}
