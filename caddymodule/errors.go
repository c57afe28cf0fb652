package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

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
	if zerr, ok := zapierapi.AsError(err); ok {
		switch zerr.Kind {
		case zapierapi.KindRejected:
			return &apiError{Status: http.StatusBadGateway, Code: "token_exchange_rejected",
				Message: "Zapier rejected the token exchange" + statusSuffix(zerr.StatusCode, zerr.OAuthError)}
		case zapierapi.KindRateLimited:
			retry := zerr.RetryAfter
			if retry <= 0 {
				retry = zapierapi.DefaultRateLimitCooldown
			}
			return &apiError{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
				Message: "Zapier is rate limiting token exchanges; retry later", RetryAfter: retry}
		case zapierapi.KindUnavailable:
			return &apiError{Status: http.StatusServiceUnavailable, Code: "zapier_unavailable",
				Message: "Zapier is unavailable (" + zerr.Description + "); retry later", RetryAfter: zerr.RetryAfter}
		case zapierapi.KindTimeout:
			return &apiError{Status: http.StatusGatewayTimeout, Code: "token_exchange_timeout",
				Message: "the token exchange with Zapier timed out"}
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &apiError{Status: http.StatusGatewayTimeout, Code: "token_exchange_timeout",
			Message: "the token exchange with Zapier timed out"}
	}
	return &apiError{Status: http.StatusBadGateway, Code: "token_exchange_failed",
		Message: "the token exchange with Zapier failed"}
}

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
