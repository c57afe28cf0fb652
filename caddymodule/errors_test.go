package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

func TestBufferBody(t *testing.T) {
	small := httptest.NewRequest(http.MethodPost, "/", stringsReader("hello"))
	b, err := bufferBody(small)
	if err != nil || !b.replayable {
		t.Fatalf("small body: %v %v", b, err)
	}
	for range 2 {
		got := readAll(t, small)
		if got != "hello" {
			t.Fatalf("body = %q", got)
		}
		b.rewind(small)
	}
	b.release()

	none := httptest.NewRequest(http.MethodGet, "/", nil)
	if b, _ := bufferBody(none); !b.replayable {
		t.Error("a request without a body is not replayable")
	}

	big := make([]byte, maxReplayBody+10)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	chunked := httptest.NewRequest(http.MethodPost, "/", stringsReader(string(big)))
	chunked.ContentLength = -1
	b, err = bufferBody(chunked)
	if err != nil || b.replayable {
		t.Fatalf("oversized body: replayable=%v err=%v", b.replayable, err)
	}
	if got := readAll(t, chunked); got != string(big) {
		t.Errorf("oversized body was altered: %d bytes, want %d", len(got), len(big))
	}
	b.release()
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func readAll(t *testing.T, r *http.Request) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
