package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

func TestExchangeErrorsFollowTheTable(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{&zapierapi.Error{Kind: zapierapi.KindRejected, StatusCode: 400, OAuthError: "invalid_grant"}, 502, "token_exchange_rejected", ""},
		{&zapierapi.Error{Kind: zapierapi.KindFailed, StatusCode: 503}, 502, "token_exchange_failed", ""},
		{&zapierapi.Error{Kind: zapierapi.KindTimeout}, 504, "token_exchange_timeout", ""},
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited, StatusCode: 429, RetryAfter: 7 * time.Second}, 503, "zapier_unavailable", "7"},
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited, StatusCode: 429}, 503, "zapier_unavailable", "60"},
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited, RetryAfter: 1500 * time.Millisecond}, 503, "zapier_unavailable", "2"},
		{context.DeadlineExceeded, 504, "token_exchange_timeout", ""},
		{errors.New("minting JWT: no key"), 502, "token_exchange_failed", ""},
	} {
		rec := httptest.NewRecorder()
		gateway.WriteError(rec, gateway.ExchangeError(tc.err))
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%v: body %q: %v", tc.err, rec.Body, err)
		}
		if rec.Code != tc.status || body.Error.Code != tc.code || body.Error.Message == "" {
			t.Errorf("%v: got %d %+v, want %d %s", tc.err, rec.Code, body.Error, tc.status, tc.code)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After = %q, want %q", tc.err, got, tc.retryAfter)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
}

func TestETagMatching(t *testing.T) {
	const etag = `"abc"`
	for header, want := range map[string]bool{
		"":             false,
		`"abc"`:        true,
		`W/"abc"`:      true,
		`"x", "abc"`:   true,
		"*":            true,
		`"abcd"`:       false,
		`"x",W/"abc" `: true,
		`abc`:          false,
		`"x" , "y"`:    false,
	} {
		if got := etagMatches(header, etag); got != want {
			t.Errorf("etagMatches(%q) = %v, want %v", header, got, want)
		}
	}
}
