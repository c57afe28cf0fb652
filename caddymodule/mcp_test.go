package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/tokencache"
)

func TestUnmarshalMCP(t *testing.T) {
	var h MCP
	d := caddyfile.NewTestDispenser(`zapier_mcp {
		callback_url https://app.example/zapier/mcp/callback
		resource authorize_url
		pkce
		audit_payloads off
		scopes connection:write mcp:run
		token_key {env.MCP_KEY}
		state_ttl 5m
		apps_cache_ttl 1m
		max_replay_body 4096
		tool_calls_per_minute 30
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.CallbackURL != "https://app.example/zapier/mcp/callback" || h.Resource != mcpResourceAuthorize || !h.PKCE || h.AuditPayloads ||
		strings.Join(h.Scopes, " ") != "connection:write mcp:run" || h.TokenKey != "{env.MCP_KEY}" ||
		time.Duration(h.StateTTL) != 5*time.Minute || time.Duration(h.AppsCacheTTL) != time.Minute || h.MaxReplayBody != 4096 || h.ToolCallsPerMinute != 30 {
		t.Fatalf("parsed %+v", h)
	}
	for _, bad := range []string{
		"zapier_mcp extra",
		"zapier_mcp {\n resource elsewhere\n}",
		"zapier_mcp {\n pkce maybe\n}",
		"zapier_mcp {\n max_replay_body -1\n}",
		"zapier_mcp {\n nonsense 1\n}",
		"zapier_mcp {\n scopes\n}",
	} {
		var h MCP
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestPKCEVerifierIsDerivedPerState(t *testing.T) {
	h := &MCP{pkceKey: []byte("0123456789abcdef0123456789abcdef")}
	a, b := h.pkceVerifier("state-a"), h.pkceVerifier("state-b")
	if a == b || a != h.pkceVerifier("state-a") || len(a) < 43 {
		t.Fatalf("verifiers %q %q", a, b)
	}
	// RFC 7636 appendix B.
	if got := pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"); got != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Fatalf("challenge %q", got)
	}
}

func TestMethodClassIsBounded(t *testing.T) {
	for in, want := range map[string]string{
		"": "stream", "initialize": "initialize", "tools/call": "tools/call", "tools/list": "tools/list",
		"notifications/initialized": "notification", "resources/read": "other", strings.Repeat("x", 500): "other",
	} {
		if got := methodClass(in); got != want {
			t.Errorf("methodClass(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMCPToolPolicy(t *testing.T) {
	var h MCP
	d := caddyfile.NewTestDispenser(`zapier_mcp {
		callback_url https://app.example/zapier/mcp/callback
		tools deny *__delete_*
		tenant_tools acme allow Slack*__*
		tenant_tools acme deny SlackCLIAPI__archive
		aggregate_list_ttl 5s
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	policy, err := h.provisionPolicy()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tenant, app, tool string
		want              bool
	}{
		{"other", "Sheets", "read", true},
		{"other", "Sheets", "delete_rows", false},
		{"acme", "SlackCLIAPI", "send", true},
		{"acme", "SlackCLIAPI", "archive", false},
		{"acme", "SlackCLIAPI", "delete_all", false},
		{"acme", "Sheets", "read", false},
	} {
		if got := policy(mcpIdentity(tokencache.Key{Tenant: tc.tenant, User: "u"}), tc.app, tc.tool); got != tc.want {
			t.Errorf("%s %s__%s: %t, want %t", tc.tenant, tc.app, tc.tool, got, tc.want)
		}
	}
	bad := MCP{Tools: &MCPToolPolicy{Deny: []string{"[unclosed"}}}
	if _, err := bad.provisionPolicy(); err == nil {
		t.Fatal("a malformed pattern was accepted")
	}
	none := MCP{}
	if p, err := none.provisionPolicy(); p != nil || err != nil {
		t.Fatal("no policy configured should mean none")
	}
}

// The audit line names the identity only by its keyed hash, and carries
// the arguments only with audit_payloads.
func TestMCPAuditLine(t *testing.T) {
	for _, payloads := range []bool{false, true} {
		core, logs := observer.New(zapcore.InfoLevel)
		h := &MCP{audit: zap.New(core), AuditPayloads: payloads}
		id := mcpgateway.Identity{Tenant: "org", User: "alice@example.com"}
		h.observe(context.Background(), id, mcpgateway.Call{App: "SlackCLIAPI", RPCMethod: "tools/call", Tool: "send",
			Arguments: json.RawMessage(`{"text":"secret plans"}`), Status: 200, Duration: time.Second})
		h.observe(context.Background(), id, mcpgateway.Call{App: "SlackCLIAPI", RPCMethod: "tools/list", Status: 200})
		entries := logs.All()
		if len(entries) != 1 {
			t.Fatalf("%d audit lines, want 1 (tool calls only)", len(entries))
		}
		f := entries[0].ContextMap()
		if f["identity"] != gateway.LogHash("org", "alice@example.com") || f["app"] != "SlackCLIAPI" || f["tool"] != "send" ||
			f["outcome"] != "success" || f["duration"] != time.Second {
			t.Fatalf("audit fields %v", f)
		}
		line := fmt.Sprint(f)
		if strings.Contains(line, "alice") || strings.Contains(line, "org\x00") {
			t.Fatalf("the audit line names the user: %s", line)
		}
		if got := strings.Contains(line, "secret plans"); got != payloads {
			t.Fatalf("audit_payloads %t: arguments logged = %t", payloads, got)
		}
	}
}

// A tool result with isError is audited and counted as tool_error, not
// success; a body the policy cannot check is unchecked, for app "none".
func TestMCPToolErrorOutcome(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	h := &MCP{audit: zap.New(core)}
	id := mcpgateway.Identity{Tenant: "org", User: "alice"}
	before := counterValue(t, sharedMCPMetrics.toolCalls.WithLabelValues("SlackCLIAPI", mcpOutcomeToolError))
	h.observe(context.Background(), id, mcpgateway.Call{App: "SlackCLIAPI", RPCMethod: "tools/call", Tool: "send", Status: 200, ToolError: true})
	if got := counterValue(t, sharedMCPMetrics.toolCalls.WithLabelValues("SlackCLIAPI", mcpOutcomeToolError)); got-before != 1 {
		t.Fatalf("tool_error count grew by %v", got-before)
	}
	if f := logs.All()[0].ContextMap(); f["outcome"] != "tool_error" {
		t.Fatalf("audit outcome %v", f["outcome"])
	}
	for _, err := range []error{mcpgateway.ErrBodyTooLarge, mcpgateway.ErrBodyUnreadable} {
		if o := mcpOutcome(mcpgateway.Call{Err: err}); o != mcpOutcomeUnchecked {
			t.Fatalf("outcome %s", o)
		}
	}
	// An upstream error status is not made a tool error.
	if o := mcpOutcome(mcpgateway.Call{Status: 500, ToolError: true}); o != mcpOutcomeUpstreamError {
		t.Fatalf("outcome %s", o)
	}
}
