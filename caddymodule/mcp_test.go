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
	"github.com/zapgate/caddy-zapier/metrics"
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
	if h.CallbackURL != "https://app.example/zapier/mcp/callback" || h.Resource != mcpgateway.ResourceAuthorize || !h.PKCE || h.AuditPayloads ||
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
	// The policy's semantics are mcpgateway's (TestToolPolicy).
	acme := h.TenantTools["acme"]
	if h.Tools == nil || fmt.Sprint(h.Tools.Deny) != "[*__delete_*]" || len(h.Tools.Allow) != 0 || len(h.TenantTools) != 1 ||
		fmt.Sprint(acme.Allow, acme.Deny) != "[Slack*__*] [SlackCLIAPI__archive]" || time.Duration(h.AggregateListTTL) != 5*time.Second {
		t.Fatalf("parsed %+v %+v", h.Tools, h.TenantTools)
	}
	if _, err := mcpgateway.NewPolicy(h.Tools, h.TenantTools); err != nil {
		t.Fatal(err)
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
// success.
func TestMCPToolErrorOutcome(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	h := &MCP{audit: zap.New(core)}
	id := mcpgateway.Identity{Tenant: "org", User: "alice"}
	before := counterValue(t, metrics.MCP.ToolCalls.WithLabelValues("SlackCLIAPI", mcpgateway.OutcomeToolError))
	h.observe(context.Background(), id, mcpgateway.Call{App: "SlackCLIAPI", RPCMethod: "tools/call", Tool: "send", Status: 200, ToolError: true})
	if got := counterValue(t, metrics.MCP.ToolCalls.WithLabelValues("SlackCLIAPI", mcpgateway.OutcomeToolError)); got-before != 1 {
		t.Fatalf("tool_error count grew by %v", got-before)
	}
	if f := logs.All()[0].ContextMap(); f["outcome"] != "tool_error" {
		t.Fatalf("audit outcome %v", f["outcome"])
	}
}
