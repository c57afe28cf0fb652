package fakezapier

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Token response modes for SetTokenResponseMode.
const (
	ModeNormal  = ""
	ModeEmpty   = "empty"   // 200 with an empty body
	ModeGarbage = "garbage" // 200 with a non-JSON body
	ModeReset   = "reset"   // hijack the connection and reset it, no response
)

// faults is guarded by Server.mu.
type faults struct {
	delay          time.Duration
	failN          int
	failStatus     int
	failRetryAfter string
	mode           string
	accessTTL      time.Duration
	omitExpiresIn  *bool // nil: Config.OmitExpiresIn
}

// SetTokenDelay makes /oauth/token sleep d before answering. A client that
// goes away during the sleep gets no answer and nothing is issued.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	s.faults.delay = d
	s.mu.Unlock()
}

// FailNextTokenRequests makes the next n token requests answer status with
// an OAuth error body, and a Retry-After header when retryAfter is not "".
// n <= 0 cancels a pending failure.
func (s *Server) FailNextTokenRequests(n int, status int, retryAfter string) {
	s.mu.Lock()
	s.faults.failN = max(n, 0)
	s.faults.failStatus = status
	s.faults.failRetryAfter = retryAfter
	s.mu.Unlock()
}

// SetTokenResponseMode sets how /oauth/token answers until it is set back to
// "": ModeEmpty, ModeGarbage or ModeReset. It panics on an unknown mode.
func (s *Server) SetTokenResponseMode(mode string) {
	switch mode {
	case ModeNormal, ModeEmpty, ModeGarbage, ModeReset:
	default:
		panic(fmt.Sprintf("fakezapier: unknown token response mode %q", mode))
	}
	s.mu.Lock()
	s.faults.mode = mode
	s.mu.Unlock()
}

// SetAccessTokenTTL changes the lifetime (and expires_in) of access tokens
// issued from now on.
func (s *Server) SetAccessTokenTTL(d time.Duration) {
	s.mu.Lock()
	s.faults.accessTTL = d
	s.mu.Unlock()
}

// SetOmitExpiresIn overrides Config.OmitExpiresIn for later responses.
func (s *Server) SetOmitExpiresIn(omit bool) {
	s.mu.Lock()
	s.faults.omitExpiresIn = &omit
	s.mu.Unlock()
}

func (s *Server) tokenSettings() (ttl time.Duration, omitExpiresIn bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	omit := s.cfg.OmitExpiresIn
	if s.faults.omitExpiresIn != nil {
		omit = *s.faults.omitExpiresIn
	}
	return s.faults.accessTTL, omit
}

// applyTokenFaults runs the configured faults for one token request, in the
// order delay, FailNext, response mode. It reports whether the request was
// fully handled.
func (s *Server) applyTokenFaults(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	delay := s.faults.delay
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.count(func(st *Stats) { st.TokenRequestsAborted++ })
			s.logf("fakezapier: token request abandoned by the client during the %s delay", delay)
			return true
		}
	}

	s.mu.Lock()
	fail := s.faults.failN > 0
	status, retryAfter := s.faults.failStatus, s.faults.failRetryAfter
	if fail {
		s.faults.failN--
		s.stats.FaultsInjected++
		s.stats.ExchangeErrors++
	}
	mode := s.faults.mode
	if !fail && mode != ModeNormal {
		s.stats.FaultsInjected++
	}
	s.mu.Unlock()

	if fail {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		code := "invalid_request"
		switch {
		case status == http.StatusUnauthorized:
			code = "invalid_client"
		case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
			code = "temporarily_unavailable"
		case status >= 500:
			code = "server_error"
		}
		s.logf("fakezapier: token request refused by injected fault: HTTP %d %s", status, code)
		writeOAuthError(w, status, code, "injected fault")
		return true
	}

	switch mode {
	case ModeEmpty:
		s.logf("fakezapier: token request answered by fault mode %q", mode)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return true
	case ModeGarbage:
		s.logf("fakezapier: token request answered by fault mode %q", mode)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("<html><body>502 upstream hiccup {\"access_token\": \n"))
		return true
	case ModeReset:
		s.logf("fakezapier: token request answered by fault mode %q", mode)
		resetConnection(w)
		return true
	}
	return false
}

// resetConnection drops the client connection without an HTTP response,
// with a TCP RST where possible.
func resetConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			raw := conn
			if tc, ok := raw.(*tls.Conn); ok {
				raw = tc.NetConn()
			}
			if tcp, ok := raw.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0)
			}
			_ = raw.Close()
			return
		}
	}
	// HTTP/2 or a wrapped writer: abort the response (stream reset).
	panic(http.ErrAbortHandler)
}
