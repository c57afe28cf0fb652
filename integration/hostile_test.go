package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIdentitySpoofingMatrix sends each spoofing attempt through a real
// Caddy and checks both the answer and what reached Zapier.
func TestIdentitySpoofingMatrix(t *testing.T) {
	g := startGateway(t, gatewayOptions{zapierExtra: "identity {\n\t\t\ttrusted_sources 127.0.0.1/32\n\t\t}"})
	trusted, untrusted := plainClient, clientFrom("127.0.0.2")

	for _, tc := range []struct {
		name       string
		client     *http.Client
		path       string
		header     http.Header
		wantStatus int
		wantCode   string // for refusals
		wantUser   string // for 200s: the identity Zapier saw
	}{
		{"canonical", trusted, "", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, 200, "", "u"},
		{"lower case is the same header", trusted, "", http.Header{"x-zapier-user": {"u"}, "x-zapier-tenant": {"t"}}, 200, "", "u"},
		{"upper case is the same header", trusted, "", http.Header{"X-ZAPIER-USER": {"u"}, "X-ZAPIER-TENANT": {"t"}}, 200, "", "u"},
		{"two spellings of one header are two values", trusted, "",
			http.Header{"X-Zapier-User": {"u"}, "x-zapier-user": {"mallory"}, "X-Zapier-Tenant": {"t"}}, 400, "identity_invalid", ""},
		{"two values", trusted, "", http.Header{"X-Zapier-User": {"u", "mallory"}, "X-Zapier-Tenant": {"t"}}, 400, "identity_invalid", ""},
		{"two tenants", trusted, "", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t", "other"}}, 400, "identity_invalid", ""},
		{"underscore variants are removed, the real identity wins", trusted, "",
			http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}, "X_Zapier_User": {"mallory"}, "x_zapier_tenant": {"evil"}}, 200, "", "u"},
		{"underscore variants alone are no identity", trusted, "",
			http.Header{"X_Zapier_User": {"mallory"}, "X_Zapier_Tenant": {"evil"}}, 401, "identity_missing", ""},
		{"untrusted peer", untrusted, "", http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}}, 403, "identity_untrusted", ""},
		{"untrusted peer claiming a trusted X-Forwarded-For", untrusted, "",
			http.Header{"X-Zapier-User": {"u"}, "X-Zapier-Tenant": {"t"}, "X-Forwarded-For": {"127.0.0.1"}, "X-Real-Ip": {"127.0.0.1"}}, 403, "identity_untrusted", ""},
		// Caddy 2.11 drops underscore headers itself; zapier_auth removes them
		// too (unit-tested), for servers that allow them.
		{"untrusted peer with underscore variants", untrusted, "", http.Header{"X_Zapier_User": {"u"}}, 401, "identity_missing", ""},
		{"untrusted peer with only one header", untrusted, "", http.Header{"X-Zapier-Tenant": {"t"}}, 403, "identity_untrusted", ""},
		{"identity in the query string", trusted, "?X-Zapier-User=u&X-Zapier-Tenant=t&user=u&tenant=t", nil, 401, "identity_missing", ""},
		{"identity in cookies", trusted, "", http.Header{"Cookie": {"X-Zapier-User=u; X-Zapier-Tenant=t"}}, 401, "identity_missing", ""},
		{"empty value", trusted, "", http.Header{"X-Zapier-User": {""}, "X-Zapier-Tenant": {"t"}}, 400, "identity_invalid", ""},
		{"257 bytes", trusted, "", http.Header{"X-Zapier-User": {strings.Repeat("u", 257)}, "X-Zapier-Tenant": {"t"}}, 400, "identity_invalid", ""},
		{"non-UTF-8", trusted, "", http.Header{"X-Zapier-User": {"u\xff"}, "X-Zapier-Tenant": {"t"}}, 400, "identity_invalid", ""},
		{"unicode and path characters are plain ids", trusted, "",
			http.Header{"X-Zapier-User": {"../ユーザー/%2e%2e"}, "X-Zapier-Tenant": {"t"}}, 200, "", "../ユーザー/%2e%2e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.fake.ResetRecorded()
			status, hdr, body, err := send(request{path: "/zapier/api/v2/echo" + tc.path, header: tc.header, client: tc.client})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantCode != "" {
				expectError(t, status, hdr, body, tc.wantStatus, tc.wantCode)
				if n := len(g.fake.Requests()); n != 0 {
					t.Errorf("a refused request reached Zapier (%d requests)", n)
				}
				return
			}
			if status != tc.wantStatus {
				t.Fatalf("status %d: %s", status, body)
			}
			e := decodeEcho(t, body)
			if e.User != tc.wantUser {
				t.Errorf("Zapier saw user %q, want %q", e.User, tc.wantUser)
			}
			for name := range e.Headers {
				if strings.Contains(strings.ToLower(strings.ReplaceAll(name, "_", "-")), "zapier-") {
					t.Errorf("header %q reached Zapier", name)
				}
			}
		})
	}
}

// TestBadConfigurationIsRefusedByValidate runs `caddy validate` on broken
// configs: each must fail with a message that names the option.
func TestBadConfigurationIsRefusedByValidate(t *testing.T) {
	const valid = "client_id id\n\t\tclient_secret {env.SECRET}\n\t\tissuer https://iss.example\n"
	for _, tc := range []struct {
		name, zapier, want string
	}{
		{"no client_id", "client_secret s\n\t\tissuer https://iss.example", "client_id is required"},
		{"no client_secret", "client_id id\n\t\tissuer https://iss.example", "client_secret is required"},
		{"secret placeholder resolves to nothing", "client_id id\n\t\tclient_secret {env.UNSET_ZAPIER_SECRET}\n\t\tissuer https://iss.example", "client_secret is required"},
		{"no issuer", "client_id id\n\t\tclient_secret s", "issuer is required"},
		{"jwt_ttl over 5m", valid + "jwt_ttl 6m", "jwt_ttl"},
		{"unknown algorithm", valid + "signing_alg HS256", "signing_alg"},
		{"empty trusted_sources", valid + "identity {\n\t\t\ttrusted_sources\n\t\t}", "trusted_sources"},
		{"malformed CIDR", valid + "identity {\n\t\t\ttrusted_sources 10.0.0.0/99\n\t\t}", "trusted_sources"},
		{"malformed token_url", valid + "token_url zapier.com/oauth/token", "token_url"},
		{"malformed api_url", valid + "api_url https://", "api_url"},
		{"bad client_auth", valid + "exchange {\n\t\t\tclient_auth jwt\n\t\t}", "client_auth"},
		{"unknown option", valid + "colour blue", "colour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "Caddyfile")
			body := fmt.Sprintf("{\n\tadmin off\n\tzapier {\n\t\t%s\n\t}\n}\n:0 {\n\tzapier_auth\n}\n", tc.zapier)
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runCaddy(t, []string{"SECRET=from-env", "XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()},
				"validate", "--config", cfg, "--adapter", "caddyfile")
			if err == nil {
				t.Fatalf("caddy validate accepted it:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("caddy validate output does not name %q:\n%s", tc.want, out)
			}
			if strings.Contains(out, "from-env") {
				t.Error("the resolved secret is in the output")
			}
		})
	}

	t.Run("trusting everyone is allowed when spelled out, with a warning", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "Caddyfile")
		body := "{\n\tadmin off\n\tzapier {\n\t\t" + valid + "\t\tidentity {\n\t\t\ttrusted_sources 0.0.0.0/0 ::/0\n\t\t}\n\t}\n}\n:0 {\n\tzapier_auth\n}\n"
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runCaddy(t, []string{"SECRET=s", "XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()},
			"validate", "--config", cfg, "--adapter", "caddyfile")
		if err != nil {
			t.Fatalf("validate: %v\n%s", err, out)
		}
		if !strings.Contains(out, "trusts every address") {
			t.Errorf("no warning about trusting every address:\n%s", out)
		}
	})
}
