package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestOpenAPIServesYAMLAndJSON(t *testing.T) {
	h := &OpenAPI{}
	d := caddyfile.NewTestDispenser("zapier_openapi {\n server_url https://app.example.com\n}")
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, contentType, want string }{
		{"/zapier/openapi.yaml", "application/yaml", "openapi: 3.1.0"},
		{"/zapier/openapi.json", "application/json", `"openapi": "3.1.0"`},
	} {
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil), nil); err != nil {
			t.Fatal(err)
		}
		body := rec.Body.String()
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != tc.contentType ||
			!strings.Contains(body, tc.want) || !strings.Contains(body, "https://app.example.com") {
			t.Errorf("%s: %d %q %.80q", tc.path, rec.Code, rec.Header().Get("Content-Type"), body)
		}
		again := httptest.NewRequest(http.MethodGet, tc.path, nil)
		again.Header.Set("If-None-Match", rec.Header().Get("ETag"))
		rec = httptest.NewRecorder()
		_ = h.ServeHTTP(rec, again, nil)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("%s with its ETag: %d", tc.path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/zapier/openapi.yaml", nil), nil)
	if rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), `"method_not_allowed"`) {
		t.Errorf("POST: %d %s", rec.Code, rec.Body)
	}
}

func TestOpenAPICaddyfileRefusesUnknownOptions(t *testing.T) {
	for _, input := range []string{"zapier_openapi extra", "zapier_openapi {\n bogus\n}", "zapier_openapi {\n server_url\n}"} {
		if err := new(OpenAPI).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
			t.Errorf("%q parsed", input)
		}
	}
}
