package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// Error is an error the gateway answers itself, in the one JSON envelope
// every route uses: {"error":{"code","message"}}. Messages are written for
// the partner's developers and never contain a secret, token or JWT.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// WriteError answers e: the one error writer of every route.
func WriteError(w http.ResponseWriter, e *Error) {
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

// ExchangeError maps a token lookup failure to the gateway's error table.
func ExchangeError(err error) *Error {
	zerr, ok := zapierapi.AsError(err)
	if e := UnavailableError(zerr, "token exchanges"); e != nil {
		return e
	}
	switch {
	case ok && zerr.Kind == zapierapi.KindRejected:
		return &Error{Status: http.StatusBadGateway, Code: "token_exchange_rejected",
			Message: "Zapier rejected the token exchange" + StatusSuffix(zerr.StatusCode, zerr.OAuthError)}
	case ok && zerr.Kind == zapierapi.KindTimeout, errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Code: "token_exchange_timeout",
			Message: "the token exchange with Zapier timed out"}
	}
	return &Error{Status: http.StatusBadGateway, Code: "token_exchange_failed",
		Message: "the token exchange with Zapier failed"}
}

// CallError maps a failed call to Zapier's API (not a token exchange).
func CallError(err error) *Error {
	zerr, ok := zapierapi.AsError(err)
	if e := UnavailableError(zerr, "API calls"); e != nil {
		return e
	}
	op := "API call"
	if ok && zerr.Op != "" {
		op = zerr.Op
	}
	if (ok && zerr.Kind == zapierapi.KindTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: http.StatusGatewayTimeout, Code: "zapier_api_timeout",
			Message: "Zapier's API timed out (" + op + ")"}
	}
	msg := "Zapier's API failed (" + op + ")"
	if ok {
		msg += StatusSuffix(zerr.StatusCode, zerr.OAuthError)
	}
	return &Error{Status: http.StatusBadGateway, Code: "zapier_api_failed", Message: msg}
}

// UnavailableError answers the failures that mean "not now" for every
// call to Zapier: a 429 (with Zapier's Retry-After, or its documented 60s),
// and calls the breaker held back (open, half-open, or a 429 cooldown), with
// the time until it lets calls through again.
func UnavailableError(zerr *zapierapi.Error, what string) *Error {
	switch {
	case zerr == nil:
		return nil
	case zerr.Kind == zapierapi.KindRateLimited:
		return &Error{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
			Message:    "Zapier is rate limiting " + what + "; retry later",
			RetryAfter: min(cmp.Or(zerr.RetryAfter, zapierapi.DefaultRateLimitCooldown), MaxRetryAfter)}
	case zerr.Kind == zapierapi.KindUnavailable && errors.As(zerr.Err, new(*budget.ExhaustedError)):
		return BudgetExhaustedError(zerr.RetryAfter)
	case zerr.Kind == zapierapi.KindUnavailable:
		return &Error{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
			Message:    "Zapier is unavailable (" + zerr.Description + "); retry later",
			RetryAfter: min(cmp.Or(zerr.RetryAfter, time.Second), MaxRetryAfter)}
	}
	return nil
}

// BudgetExhaustedError answers a request the gateway's own request budget
// could not serve within max_wait.
func BudgetExhaustedError(retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "zapier_budget_exhausted",
		Message:    "the gateway's budget of requests to Zapier is spent for now; retry later",
		RetryAfter: min(max(retryAfter, time.Second), MaxRetryAfter)}
}

// MaxRetryAfter caps the Retry-After the gateway passes on to its clients
// (the cooldown after a 429 is capped alike, in zapierapi).
const MaxRetryAfter = zapierapi.MaxRetryAfter

// StatusSuffix says which HTTP status (and OAuth error) Zapier answered.
func StatusSuffix(status int, oauthError string) string {
	switch {
	case status == 0:
		return ""
	case oauthError == "":
		return " (HTTP " + strconv.Itoa(status) + ")"
	default:
		return " (HTTP " + strconv.Itoa(status) + ", " + oauthError + ")"
	}
}

// BadRequest is a 400 bad_request with message.
func BadRequest(message string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: message}
}

// AllowMethod reports whether r's method is one of methods, answering 405
// method_not_allowed with Allow when it is not.
func AllowMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	WriteError(w, &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
		Message: "this route takes " + strings.Join(methods, " or ")})
	return false
}
