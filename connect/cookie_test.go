package connect

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

func TestFlowCookieAttributesAndBound(t *testing.T) {
	id := func(i int) string { return fmt.Sprintf("%032x", i) }
	rec := httptest.NewRecorder()
	SetFlowCookie(rec, httptest.NewRequest(http.MethodPost, "/token", nil), id(1), "n0nce", 10*time.Minute, true)
	want := "zapier_connect=" + id(1) + "~n0nce; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"
	if got := rec.Result().Header.Get("Set-Cookie"); got != want {
		t.Errorf("cookie = %q, want %q", got, want)
	}

	// Flows accumulate up to the bound, oldest out first.
	req := browserRequest(rec)
	for i := 2; i <= MaxCookieFlows+2; i++ {
		rec = httptest.NewRecorder()
		SetFlowCookie(rec, req, id(i), fmt.Sprint("nonce", i), time.Minute, false)
		req = browserRequest(rec)
	}
	if len(FlowCookieEntries(req)) != MaxCookieFlows {
		t.Fatalf("entries = %+v", FlowCookieEntries(req))
	}
	for i := 1; i <= MaxCookieFlows+2; i++ {
		nonce, ok := FlowNonce(req, id(i))
		if kept := i > 2; ok != kept || (ok && nonce != fmt.Sprint("nonce", i)) {
			t.Errorf("flow %d: %q %v, kept %v", i, nonce, ok, kept)
		}
	}

	// A finished flow leaves the others; the last one deletes the cookie.
	for i := 3; i <= MaxCookieFlows+2; i++ {
		rec = httptest.NewRecorder()
		ClearFlowCookie(rec, req, id(i), time.Minute, false)
		req = browserRequest(rec)
		if _, ok := FlowNonce(req, id(i)); ok {
			t.Errorf("flow %d still in the cookie", i)
		}
	}
	if set := rec.Result().Header.Get("Set-Cookie"); !strings.Contains(set, "zapier_connect=;") || !strings.Contains(set, "Max-Age=0") {
		t.Errorf("last clear: %q", set)
	}

	// Malformed entries are ignored, not trusted.
	req = httptest.NewRequest(http.MethodPost, "/complete", nil)
	req.Header.Set("Cookie", "zapier_connect="+id(7)+"~ok.junk.ABC~x."+id(8)+"~bad!nonce."+strings.ToUpper(id(0xabc))+"~x")
	if e := FlowCookieEntries(req); len(e) != 1 || e[0].ID != id(7) {
		t.Errorf("entries of a tampered cookie = %+v", e)
	}
}

// FuzzFlowCookieEntries: the cookie parser never panics and keeps only
// well-formed entries.
func FuzzFlowCookieEntries(f *testing.F) {
	f.Add("zapier_connect=abcdefghijklmnopqrstuv~bm9uY2U.x~y")
	f.Add("zapier_connect=; other=1; zapier_connect=~~..~")
	f.Add("zapier_connect=" + strings.Repeat("a~b.", 1000))
	f.Fuzz(func(t *testing.T, cookie string) {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		r.Header.Set("Cookie", cookie)
		for _, e := range FlowCookieEntries(r) {
			if !IsStateID(e.ID) || !IsBase64URL(e.Nonce) {
				t.Fatalf("malformed entry kept: %+v", e)
			}
		}
	})
}
