package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// apiError is an error the gateway answers itself, in the DESIGN.md shape
// {"error":{"code","message"}}. Messages are written for the partner's
// developers and never contain a secret, token or JWT.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.Status)
	body, _ := json.Marshal(struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{Error: struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{e.Code, e.Message}})
	_, _ = w.Write(body)
}

// exchangeAPIError maps a token lookup failure to the gateway's error table.
func exchangeAPIError(err error) *apiError {
	zerr, ok := zapierapi.AsError(err)
	if e := unavailableAPIError(zerr, "token exchanges"); e != nil {
		return e
	}
	switch {
	case ok && zerr.Kind == zapierapi.KindRejected:
		return &apiError{Status: http.StatusBadGateway, Code: "token_exchange_rejected",
			Message: "Zapier rejected the token exchange" + statusSuffix(zerr.StatusCode, zerr.OAuthError)}
	case ok && zerr.Kind == zapierapi.KindTimeout, errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Code: "token_exchange_timeout",
			Message: "the token exchange with Zapier timed out"}
	}
	return &apiError{Status: http.StatusBadGateway, Code: "token_exchange_failed",
		Message: "the token exchange with Zapier failed"}
}

// apiCallError maps a failed call to Zapier's API (not a token exchange).
func apiCallError(err error) *apiError {
	zerr, ok := zapierapi.AsError(err)
	if e := unavailableAPIError(zerr, "API calls"); e != nil {
		return e
	}
	op := "API call"
	if ok && zerr.Op != "" {
		op = zerr.Op
	}
	if (ok && zerr.Kind == zapierapi.KindTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return &apiError{Status: http.StatusGatewayTimeout, Code: "zapier_api_timeout",
			Message: "Zapier's API timed out (" + op + ")"}
	}
	msg := "Zapier's API failed (" + op + ")"
	if ok {
		msg += statusSuffix(zerr.StatusCode, zerr.OAuthError)
	}
	return &apiError{Status: http.StatusBadGateway, Code: "zapier_api_failed", Message: msg}
}

// unavailableAPIError answers the failures that mean "not now" for every
// call to Zapier: a 429 (with Zapier's Retry-After, or its documented 60s),
// and calls the breaker held back (open, half-open, or a 429 cooldown), with
// the time until it lets calls through again.
func unavailableAPIError(zerr *zapierapi.Error, what string) *apiError {
	switch {
	case zerr == nil:
		return nil
	case zerr.Kind == zapierapi.KindRateLimited:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
			Message:    "Zapier is rate limiting " + what + "; retry later",
			RetryAfter: min(cmp.Or(zerr.RetryAfter, zapierapi.DefaultRateLimitCooldown), maxRetryAfter)}
	case zerr.Kind == zapierapi.KindUnavailable && errors.As(zerr.Err, new(*budget.ExhaustedError)):
		return budgetExhaustedError(zerr.RetryAfter)
	case zerr.Kind == zapierapi.KindUnavailable:
		return &apiError{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
			Message:    "Zapier is unavailable (" + zerr.Description + "); retry later",
			RetryAfter: min(cmp.Or(zerr.RetryAfter, time.Second), maxRetryAfter)}
	}
	return nil
}

// budgetExhaustedError answers a request the gateway's own request budget
// could not serve within max_wait.
func budgetExhaustedError(retryAfter time.Duration) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: "zapier_budget_exhausted",
		Message:    "the gateway's budget of requests to Zapier is spent for now; retry later",
		RetryAfter: min(max(retryAfter, time.Second), maxRetryAfter)}
}

// maxRetryAfter caps the Retry-After the gateway passes on to its clients
// (the cooldown after a 429 is capped alike, in zapierapi).
const maxRetryAfter = zapierapi.MaxRetryAfter

func statusSuffix(status int, oauthError string) string {
	switch {
	case status == 0:
		return ""
	case oauthError == "":
		return " (HTTP " + strconv.Itoa(status) + ")"
	default:
		return " (HTTP " + strconv.Itoa(status) + ", " + oauthError + ")"
	}
}
