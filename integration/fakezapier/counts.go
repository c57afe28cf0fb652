package fakezapier

// Per-endpoint call counts and the API latency knob, for benchmarks and for
// tests that assert how many upstream calls the gateway made.

import (
	"context"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"
)

type callCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

// CallCounts returns how many requests reached the fake, keyed by method
// and route pattern: "GET /v2/actions", "POST /v2/actions/{id}/inputs",
// "POST /v2/action-runs", "GET /v2/action-runs/{id}", "POST /oauth/token",
// "GET /.well-known/jwks.json", "POST /actions/v1/stored-actions",
// "POST /actions/v1/stored-actions/{id}/run", … Every request counts, whatever its answer
// (401, 404, 429 included). A trailing slash does not change the key. Paths
// matching no known route count as "<METHOD> /v2/*" or "<METHOD> *".
func (s *Server) CallCounts() map[string]int {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return maps.Clone(s.calls.counts)
}

// ResetCounts zeroes CallCounts and ThrottledCount.
func (s *Server) ResetCounts() {
	s.calls.mu.Lock()
	s.calls.counts = nil
	s.calls.mu.Unlock()
	s.rate.mu.Lock()
	s.rate.throttled = 0
	s.rate.mu.Unlock()
}

func (s *Server) countCall(r *http.Request) {
	key := callKey(r)
	s.calls.mu.Lock()
	if s.calls.counts == nil {
		s.calls.counts = map[string]int{}
	}
	s.calls.counts[key]++
	s.calls.mu.Unlock()
}

// callKey is "<METHOD> <pattern>". Methods outside the standard set become
// OTHER so that the map stays small whatever clients send.
func callKey(r *http.Request) string {
	m := r.Method
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
	default:
		m = "OTHER"
	}
	return m + " " + routePattern(r.URL.Path)
}

// routePattern maps a path to the documented route it addresses (also routes
// the fake does not serve, so that a client calling them is visible).
func routePattern(p string) string {
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	switch {
	case p == "/oauth/token", p == "/healthz", p == "/.well-known/jwks.json":
		return p
	case len(seg) == 2 && seg[0] == "to":
		return "/to/{app}"
	case len(seg) >= 3 && seg[0] == "actions" && seg[1] == "v1" && seg[2] == "stored-actions":
		return storedPattern(seg[3:])
	case seg[0] != "v2":
		return "*"
	}
	seg = seg[1:]
	switch {
	case len(seg) == 1 && (seg[0] == "apps" || seg[0] == "authentications" || seg[0] == "actions" ||
		seg[0] == "action-runs" || seg[0] == "echo"):
		return "/v2/" + seg[0]
	case len(seg) == 2 && seg[0] == "whitelabel" && seg[1] == "apps":
		return "/v2/whitelabel/apps"
	case len(seg) == 2 && seg[0] == "authentications":
		return "/v2/authentications/{id}"
	case len(seg) == 2 && seg[0] == "action-runs":
		return "/v2/action-runs/{id}"
	case len(seg) == 3 && seg[0] == "actions" && (seg[2] == "inputs" || seg[2] == "outputs" || seg[2] == "test"):
		return "/v2/actions/{id}/" + seg[2]
	case len(seg) == 5 && seg[0] == "actions" && seg[2] == "inputs" && seg[4] == "choices":
		return "/v2/actions/{id}/inputs/{input}/choices"
	case len(seg) >= 2 && seg[0] == "echo":
		return "/v2/echo/{path...}"
	}
	return "/v2/*"
}

// SetAPILatency delays every later /v2 response by d (0 turns it off), as a
// stand-in for Zapier's own processing time in benchmarks. A client that goes
// away during the delay gets no answer.
func (s *Server) SetAPILatency(d time.Duration) { s.apiLatency.Store(int64(max(d, 0))) }

// waitAPILatency reports false when the client went away during the delay.
func (s *Server) waitAPILatency(ctx context.Context) bool {
	d := time.Duration(s.apiLatency.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// storedPattern is the route pattern of /actions/v1/stored-actions/<rest>.
func storedPattern(rest []string) string {
	const base = "/actions/v1/stored-actions"
	switch {
	case len(rest) == 0:
		return base
	case len(rest) == 1:
		return base + "/{id}"
	case len(rest) == 2 && rest[1] == "run":
		return base + "/{id}/run"
	case len(rest) == 3 && rest[1] == "runs":
		return base + "/{id}/runs/{run_id}"
	}
	return base + "/*"
}
