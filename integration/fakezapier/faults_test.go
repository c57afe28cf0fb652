package fakezapier

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFaultDelayHonoursContext(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	e.fz.SetTokenDelay(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req := mustTokenRequest(t, e, withClient(jwtForm(e.mint(k, "t", "u"), "")))
	start := time.Now()
	_, err := http.DefaultClient.Do(req.WithContext(ctx))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	// The handler notices the cancellation promptly.
	for e.fz.Stats().TokenRequestsAborted != 1 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("handler did not give up: %+v", e.fz.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.fz.Stats(); st.Exchanges != 0 {
		t.Errorf("token issued for an abandoned request: %+v", st)
	}

	e.fz.SetTokenDelay(150 * time.Millisecond)
	start = time.Now()
	e.exchange(k, "t", "u")
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("answered after %s, want >= 150ms", d)
	}
	e.fz.SetTokenDelay(0)
}

func TestFaultFailNext(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	e.fz.FailNextTokenRequests(2, http.StatusServiceUnavailable, "7")
	for i := 0; i < 2; i++ {
		res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
		if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != "7" ||
			res.str("error") != "temporarily_unavailable" {
			t.Fatalf("attempt %d: HTTP %d Retry-After %q %s", i, res.status, res.header.Get("Retry-After"), res.raw)
		}
	}
	e.exchange(k, "t", "u")

	e.fz.FailNextTokenRequests(1, http.StatusTooManyRequests, "")
	res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
	if res.status != http.StatusTooManyRequests || res.header.Get("Retry-After") != "" {
		t.Fatalf("429: HTTP %d Retry-After %q", res.status, res.header.Get("Retry-After"))
	}
	for status, code := range map[int]string{400: "invalid_request", 401: "invalid_client", 500: "server_error", 502: "server_error"} {
		e.fz.FailNextTokenRequests(1, status, "")
		res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
		if res.status != status || res.str("error") != code {
			t.Errorf("status %d: HTTP %d %s", status, res.status, res.raw)
		}
	}
	e.fz.FailNextTokenRequests(3, 500, "")
	e.fz.FailNextTokenRequests(0, 0, "") // cancels
	e.exchange(k, "t", "u")

	st := e.fz.Stats()
	if st.Exchanges != 2 || st.FaultsInjected != 7 || st.ExchangeErrors != 7 || st.JWTFailures != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestFaultResponseModes(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")

	e.fz.SetTokenResponseMode(ModeEmpty)
	res := e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
	if res.status != http.StatusOK || res.raw != "" {
		t.Errorf("empty: HTTP %d %q", res.status, res.raw)
	}

	e.fz.SetTokenResponseMode(ModeGarbage)
	res = e.postToken(jwtForm(e.mint(k, "t", "u"), ""), false)
	if res.status != http.StatusOK || res.raw == "" || res.body != nil {
		t.Errorf("garbage: HTTP %d %q parsed as %v", res.status, res.raw, res.body)
	}

	e.fz.SetTokenResponseMode(ModeReset)
	for i := 0; i < 2; i++ {
		req := mustTokenRequest(t, e, withClient(jwtForm(e.mint(k, "t", "u"), "")))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("reset: got HTTP %d, want a transport error", resp.StatusCode)
		}
	}

	e.fz.SetTokenResponseMode(ModeNormal)
	e.exchange(k, "t", "u")
	st := e.fz.Stats()
	if st.Exchanges != 1 || st.FaultsInjected != 4 || st.TokenRequests != 5 {
		t.Errorf("stats %+v", st)
	}

	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "unknown token response mode") {
			t.Errorf("recover() = %v", r)
		}
	}()
	e.fz.SetTokenResponseMode("bogus")
}

func withClient(f map[string][]string) map[string][]string {
	f["client_id"] = []string{testClientID}
	f["client_secret"] = []string{testClientSecret}
	return f
}
