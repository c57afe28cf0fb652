package connect

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestScriptServing(t *testing.T) {
	rec := httptest.NewRecorder()
	ServeScript(rec, httptest.NewRequest(http.MethodGet, "/connect.js", nil))
	res := rec.Result()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		res.Header.Get("X-Content-Type-Options") != "nosniff" || rec.Body.Len() != len(script) {
		t.Fatalf("GET connect.js: %d %v", res.StatusCode, res.Header)
	}
	// The checks the browser helper must make are in the script it serves.
	for _, must := range []string{
		"event.source !== popup", "event.origin !== connectOrigin", "popup.closed",
		"popup_blocked", "popup_closed", "timeout", "authentication_error", "server_error",
		`new URL(".", script`,
	} {
		if !strings.Contains(string(script), must) {
			t.Errorf("connect.js lacks %q", must)
		}
	}
	rec = httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/connect.js", nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	ServeScript(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("conditional GET: %d, %d bytes", rec.Code, rec.Body.Len())
	}
}
