package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// browserRequest carries the cookies a response set, as the browser's next
// request would.
func browserRequest(rec *httptest.ResponseRecorder) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/complete", nil)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge >= 0 {
			req.AddCookie(c)
		}
	}
	return req
}

func TestNonceCookieAttributesAndBound(t *testing.T) {
	st := func(i int) *connectState { return &connectState{ID: fmt.Sprintf("%032x", i)} }
	rec := httptest.NewRecorder()
	setNonceCookie(rec, httptest.NewRequest(http.MethodPost, "/token", nil), st(1), "n0nce", 10*time.Minute, true)
	want := "zapier_connect=" + st(1).ID + "~n0nce; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"
	if got := rec.Result().Header.Get("Set-Cookie"); got != want {
		t.Errorf("cookie = %q, want %q", got, want)
	}

	// Flows accumulate up to the bound, oldest out first.
	req := browserRequest(rec)
	for i := 2; i <= maxCookieFlows+2; i++ {
		rec = httptest.NewRecorder()
		setNonceCookie(rec, req, st(i), fmt.Sprint("nonce", i), time.Minute, false)
		req = browserRequest(rec)
	}
	if len(nonceEntries(req)) != maxCookieFlows {
		t.Fatalf("entries = %+v", nonceEntries(req))
	}
	for i := 1; i <= maxCookieFlows+2; i++ {
		nonce, ok := flowNonce(req, st(i).ID)
		if kept := i > 2; ok != kept || (ok && nonce != fmt.Sprint("nonce", i)) {
			t.Errorf("flow %d: %q %v, kept %v", i, nonce, ok, kept)
		}
	}

	// A finished flow leaves the others; the last one deletes the cookie.
	for i := 3; i <= maxCookieFlows+2; i++ {
		rec = httptest.NewRecorder()
		clearNonceCookie(rec, req, st(i), time.Minute, false)
		req = browserRequest(rec)
		if _, ok := flowNonce(req, st(i).ID); ok {
			t.Errorf("flow %d still in the cookie", i)
		}
	}
	if set := rec.Result().Header.Get("Set-Cookie"); !strings.Contains(set, "zapier_connect=;") || !strings.Contains(set, "Max-Age=0") {
		t.Errorf("last clear: %q", set)
	}

	// Malformed entries are ignored, not trusted.
	req = httptest.NewRequest(http.MethodPost, "/complete", nil)
	req.Header.Set("Cookie", "zapier_connect="+st(7).ID+"~ok.junk.ABC~x."+st(8).ID+"~bad!nonce."+strings.ToUpper(st(0xabc).ID)+"~x")
	if e := nonceEntries(req); len(e) != 1 || e[0].id != st(7).ID {
		t.Errorf("entries of a tampered cookie = %+v", e)
	}
}
