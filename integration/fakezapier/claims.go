package fakezapier

// The billing and rate_limit claims of partner JWTs (Actions API; Zapier's
// White Label API reference, "Execute a StoredAction"): checked at the token
// exchange, recorded per access token, and the effective stored-actions
// limit they give.
//
// Documented: billing is a JSON string whose values override Zapier's
// defaults (is_billable, origin, usage_type, description,
// exemption_reason, exemption_details); rate_limit carries exempt and
// limit_override (1-1000 requests per 5 minutes; 200 by default).
// Assumed, and strict: the claims travel in the partner JWT exchanged for
// the access token; a malformed claim (a billing that is not a string
// holding a JSON object, an unknown field, a wrong type, a limit out of
// range) fails the exchange with invalid_grant; exempt is honoured only when
// the partner is granted the exemption (Config.RateLimitExemptGranted or
// SetRateLimitExemptGranted).

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// DefaultStoredActionsLimit is Zapier's documented stored-actions limit,
// requests per 5 minutes, without a limit_override.
const DefaultStoredActionsLimit = 200

// UsageClaims are the billing and rate_limit claims an access token was
// exchanged with.
type UsageClaims struct {
	// Billing is the billing claim's object (decoded from its JSON
	// string); nil when the JWT had none.
	Billing map[string]any
	// BillingRaw is the billing claim as received (a JSON string's value).
	BillingRaw string
	// RateLimit is the rate_limit claim; nil when the JWT had none.
	RateLimit map[string]any
}

// None reports whether the JWT carried neither claim.
func (c UsageClaims) None() bool { return c.Billing == nil && c.RateLimit == nil }

// Billable is billing.is_billable (Zapier's default false).
func (c UsageClaims) Billable() bool { b, _ := c.Billing["is_billable"].(bool); return b }

// ExemptRequested is rate_limit.exempt as asked for.
func (c UsageClaims) ExemptRequested() bool { b, _ := c.RateLimit["exempt"].(bool); return b }

var (
	billingFields   = map[string]string{"is_billable": "bool", "origin": "string", "usage_type": "string", "description": "string", "exemption_reason": "string|null", "exemption_details": "string|null"}
	rateLimitFields = map[string]string{"exempt": "bool", "limit_override": "int"}
)

// parseUsageClaims checks the two claims of a verified JWT's payload.
func parseUsageClaims(claims map[string]any) (UsageClaims, error) {
	var uc UsageClaims
	if raw, ok := claims["billing"]; ok {
		s, isString := raw.(string)
		if !isString {
			return uc, fmt.Errorf(`claim "billing" is %s; Zapier documents it as a JSON string`, jsonKind(raw))
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(s), &obj); err != nil || obj == nil {
			return uc, errors.New(`claim "billing" is a string but not a JSON object`)
		}
		if err := checkFields("billing", obj, billingFields); err != nil {
			return uc, err
		}
		uc.Billing, uc.BillingRaw = obj, s
	}
	if raw, ok := claims["rate_limit"]; ok {
		obj, isObject := raw.(map[string]any)
		if !isObject {
			return uc, fmt.Errorf(`claim "rate_limit" is %s, want an object`, jsonKind(raw))
		}
		if err := checkFields("rate_limit", obj, rateLimitFields); err != nil {
			return uc, err
		}
		if n, ok := obj["limit_override"].(float64); ok && (n < 1 || n > 1000) {
			return uc, fmt.Errorf(`claim "rate_limit": limit_override %v is outside 1-1000`, n)
		}
		uc.RateLimit = obj
	}
	return uc, nil
}

func checkFields(claim string, obj map[string]any, fields map[string]string) error {
	for name, v := range obj {
		want, known := fields[name]
		if !known {
			return fmt.Errorf(`claim %q: unknown field %q`, claim, name)
		}
		ok := false
		for _, kind := range strings.Split(want, "|") {
			switch kind {
			case "bool":
				_, ok = v.(bool)
			case "string":
				_, ok = v.(string)
			case "null":
				ok = v == nil
			case "int":
				f, isNum := v.(float64)
				ok = isNum && f == math.Trunc(f)
			}
			if ok {
				break
			}
		}
		if !ok {
			return fmt.Errorf(`claim %q: %s is %s, want %s`, claim, name, jsonKind(v), want)
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// setTokenClaims attaches uc to an access token just issued.
func (s *Server) setTokenClaims(tok string, uc UsageClaims) {
	if uc.None() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.access[tok]; ok {
		t.claims = &uc
	}
}

// ClaimsOf returns the claims an access token was exchanged with (None
// when it had none); ok is false for a token this fake does not know.
func (s *Server) ClaimsOf(token string) (uc UsageClaims, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, found := s.access[token]
	if !found {
		return UsageClaims{}, false
	}
	if t.claims != nil {
		uc = *t.claims
	}
	return uc, true
}

// ClaimedRequest is a recorded API request with the claims of its bearer
// token.
type ClaimedRequest struct {
	Method, Path string
	Tenant, User string
	Claims       UsageClaims
}

// RequestClaims returns the recorded API requests (Requests) made with a
// token this fake issued, each with its token's claims.
func (s *Server) RequestClaims() []ClaimedRequest {
	var out []ClaimedRequest
	for _, r := range s.Requests() {
		tok := strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		uc, ok := s.ClaimsOf(tok)
		if !ok {
			continue
		}
		out = append(out, ClaimedRequest{Method: r.Method, Path: r.Path, Tenant: r.Tenant, User: r.User, Claims: uc})
	}
	return out
}

// noteConnectSubject records the claims of a live access token offered for
// a connect token (the Connect flow's exchange).
func (s *Server) noteConnectSubject(tok string) {
	uc, _ := s.ClaimsOf(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.connectSubjects = append(s.usage.connectSubjects, uc)
	if len(s.usage.connectSubjects) > maxJWTLog {
		s.usage.connectSubjects = s.usage.connectSubjects[1:]
	}
}

// ConnectExchangeClaims returns the claims of each live access token
// offered for a connect token, oldest first (the last 1000).
func (s *Server) ConnectExchangeClaims() []UsageClaims {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]UsageClaims(nil), s.usage.connectSubjects...)
}

// usageState is the claims bookkeeping beyond the tokens; guarded by
// Server.mu.
type usageState struct {
	granted         bool // the partner is granted rate-limit exemption
	connectSubjects []UsageClaims
}

// SetRateLimitExemptGranted says whether this fake's partner is granted
// the rate-limit exemption (Config.RateLimitExemptGranted).
func (s *Server) SetRateLimitExemptGranted(granted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.granted = granted
}

// StoredActionsLimit is the stored-actions limit (requests per 5 minutes)
// Zapier applies to calls with token: exempt (no limit) only when the
// token asked for it and the partner is granted the exemption; else the
// limit_override, else the default. An unknown token gets the default.
func (s *Server) StoredActionsLimit(token string) (limit int, exempt bool) {
	uc, _ := s.ClaimsOf(token)
	s.mu.Lock()
	granted := s.usage.granted
	s.mu.Unlock()
	if uc.ExemptRequested() && granted {
		return 0, true
	}
	if n, ok := uc.RateLimit["limit_override"].(float64); ok {
		return int(n), false
	}
	return DefaultStoredActionsLimit, false
}
