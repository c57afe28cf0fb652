package fakezapier

// Test access to callback signatures: what the fake sent for a run, a
// validly signed token for a chosen subject, and a one-off POST of any body
// with any token, so that tests can replay or rebind Zapier's callbacks the
// way an attacker holding one would.

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// SentCallback returns the body and Zapier-Callback-Signature of the
// callback the fake sent for runID, byte for byte. It fails when none was
// sent (the run has not finished, or its callback was dropped).
func (s *Server) SentCallback(runID string) (body []byte, token string, err error) {
	c := &s.cb
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.deliveries[runID]
	if rec == nil || rec.body == nil {
		return nil, "", fmt.Errorf("fakezapier: no callback was sent for run %q", runID)
	}
	return slices.Clone(rec.body), rec.sig, nil
}

// SignCallback returns a callback signature made with the published key,
// valid from now for the usual lifetime, with the fake's issuer and sub set
// to sub; sub "" leaves the claim out (a token that names no run). Like the
// fake's own signatures it has no jti, and RS256 is deterministic: two
// calls for one sub within the same second return the same token.
func (s *Server) SignCallback(sub string) string {
	key, kid := s.cb.keys.signing()
	iat := s.now().Unix()
	claims := map[string]any{"iss": CallbackIssuer, "iat": iat, "exp": iat + int64(callbackJWTLifetime/time.Second)}
	if sub != "" {
		claims["sub"] = sub
	}
	return signClaims(key, kid, claims)
}

// CallbackBody is the JSON body of a callback for runID with the given
// status ("success" or "error"), empty errors and results (a single result
// when results is not nil).
func CallbackBody(runID, status string, results map[string]any) []byte {
	data := map[string]any{"type": "run", "id": runID, "status": status, "results": []any{}, "errors": []any{}}
	if results != nil {
		data["results"] = []any{results}
	}
	if status == "error" {
		data["errors"] = []RunError{{Code: "system", Title: "Error", Detail: "The action failed."}}
	}
	body, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		panic(err)
	}
	return body
}

// PostCallback POSTs body to url once, synchronously, with token as the
// Zapier-Callback-Signature ("" sends none), through the fake's callback
// client; url is not validated. It returns a *CallbackStatusError for a
// non-2xx answer.
func (s *Server) PostCallback(url string, body []byte, token string) error {
	if s.closed() {
		return ErrClosed
	}
	return s.sendOnce(url, body, token)
}
