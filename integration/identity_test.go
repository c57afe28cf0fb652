package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func expectError(t *testing.T, status int, hdr http.Header, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status = %d, want %d (%s)", status, wantStatus, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error.Code != wantCode || e.Error.Message == "" {
		t.Errorf("error = %+v, want code %s with a message", e.Error, wantCode)
	}
}

func TestIdentityRules(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: "identity {\n\t\t\ttrusted_sources 127.0.0.1/32\n\t\t}"})

	t.Run("untrusted peer", func(t *testing.T) {
		status, hdr, body, err := send(request{path: "/zapier/api/v2/echo", tenant: "t", user: "u", client: clientFrom("127.0.0.2")})
		if err != nil {
			t.Fatal(err)
		}
		expectError(t, status, hdr, body, http.StatusForbidden, "identity_untrusted")
	})
	t.Run("untrusted peer with X-Forwarded-For from a trusted address", func(t *testing.T) {
		status, hdr, body, err := send(request{
			path: "/zapier/api/v2/echo", tenant: "t", user: "u", client: clientFrom("127.0.0.2"),
			header: http.Header{"X-Forwarded-For": {"127.0.0.1"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		expectError(t, status, hdr, body, http.StatusForbidden, "identity_untrusted")
	})
	t.Run("missing", func(t *testing.T) {
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo"})
		expectError(t, status, hdr, body, http.StatusUnauthorized, "identity_missing")
	})
	t.Run("only one header", func(t *testing.T) {
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", user: "u"})
		expectError(t, status, hdr, body, http.StatusUnauthorized, "identity_missing")
	})
	t.Run("too long", func(t *testing.T) {
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", tenant: "t", user: strings.Repeat("u", 257)})
		expectError(t, status, hdr, body, http.StatusBadRequest, "identity_invalid")
	})
	t.Run("two values", func(t *testing.T) {
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo", tenant: "t",
			header: http.Header{"X-Zapier-User": {"alice", "bob"}}})
		expectError(t, status, hdr, body, http.StatusBadRequest, "identity_invalid")
	})
	t.Run("identity in query or cookie is ignored", func(t *testing.T) {
		status, hdr, body := g.do(request{path: "/zapier/api/v2/echo?X-Zapier-User=u&X-Zapier-Tenant=t",
			header: http.Header{"Cookie": {"X-Zapier-User=u; X-Zapier-Tenant=t"}}})
		expectError(t, status, hdr, body, http.StatusUnauthorized, "identity_missing")
	})
	if st := g.fake.Stats(); st.Exchanges != 0 || st.APIRequests != 0 {
		t.Errorf("refused requests reached Zapier: %+v", st)
	}
	// The trusted peer still works.
	g.echoAs("t", "u")
}
