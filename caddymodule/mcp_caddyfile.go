package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/zapgate/caddy-zapier/mcpgateway"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_mcp {
//		callback_url    <url>                     # required
//		resource        server_url|authorize_url  # default server_url
//		pkce            [on|off]                  # default off
//		scopes          <scope...>                # default connection:write mcp:run
//		token_key       <secret>                  # default derived from client_secret
//		state_ttl       <duration>                # default 10m
//		apps_cache_ttl  <duration>                # default 10m
//		audit_payloads  [on|off]                  # default off
//		max_replay_body <bytes>                   # default 1048576
//		aggregate_list_ttl <duration>             # default 30s
//		aggregate_sessions_per_identity <n>       # default 8
//		aggregate_sessions_max <n>                # default 10000
//		aggregate_idle_timeout <duration>         # default 5m
//		expired_tools   mark|hide                 # default mark
//		connect_link_ttl <duration>               # default 10m
//		streams_per_identity <n>                  # default 64
//		stream_write_timeout <duration>           # default 30s
//		tool_calls_per_minute <n>                 # default 0: no cap
//		token_cache_ttl <duration>|off            # default 2s
//		tools        allow|deny <pattern...>      # every tenant; patterns on <app>__<tool>
//		tenant_tools <tenant> allow|deny <pattern...>
//	}
func (h *MCP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "callback_url":
			if !d.AllArgs(&h.CallbackURL) {
				return d.ArgErr()
			}
		case "resource":
			if !d.AllArgs(&h.Resource) {
				return d.ArgErr()
			}
			if h.Resource != mcpgateway.ResourceServer && h.Resource != mcpgateway.ResourceAuthorize {
				return d.Errf("resource must be %s or %s", mcpgateway.ResourceServer, mcpgateway.ResourceAuthorize)
			}
		case "pkce":
			if err := onOff(d, opt, &h.PKCE); err != nil {
				return err
			}
		case "audit_payloads":
			if err := onOff(d, opt, &h.AuditPayloads); err != nil {
				return err
			}
		case "scopes":
			h.Scopes = d.RemainingArgs()
			if len(h.Scopes) == 0 {
				return d.ArgErr()
			}
		case "token_key":
			if !d.AllArgs(&h.TokenKey) {
				return d.ArgErr()
			}
		case "state_ttl":
			if err := oneDuration(d, &h.StateTTL); err != nil {
				return err
			}
		case "apps_cache_ttl":
			if err := oneDuration(d, &h.AppsCacheTTL); err != nil {
				return err
			}
		case "max_replay_body":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("max_replay_body must be a positive number of bytes")
			}
			h.MaxReplayBody = n
		case "tool_calls_per_minute":
			if err := oneInt(d, &h.ToolCallsPerMinute); err != nil {
				return err
			}
		case "aggregate_list_ttl":
			if err := oneDuration(d, &h.AggregateListTTL); err != nil {
				return err
			}
		case "aggregate_sessions_per_identity":
			if err := oneInt(d, &h.AggregateSessionsPerIdentity); err != nil {
				return err
			}
		case "aggregate_sessions_max":
			if err := oneInt(d, &h.AggregateSessionsMax); err != nil {
				return err
			}
		case "aggregate_idle_timeout":
			if err := oneDuration(d, &h.AggregateIdleTimeout); err != nil {
				return err
			}
		case "expired_tools":
			if !d.AllArgs(&h.ExpiredTools) {
				return d.ArgErr()
			}
			if h.ExpiredTools != mcpgateway.ExpiredMark && h.ExpiredTools != mcpgateway.ExpiredHide {
				return d.Errf("expired_tools must be %s or %s", mcpgateway.ExpiredMark, mcpgateway.ExpiredHide)
			}
		case "connect_link_ttl":
			if err := oneDuration(d, &h.ConnectLinkTTL); err != nil {
				return err
			}
		case "streams_per_identity":
			if err := oneInt(d, &h.StreamsPerIdentity); err != nil {
				return err
			}
		case "token_cache_ttl":
			if err := tokenCacheTTL(d, &h.TokenCacheTTL); err != nil {
				return err
			}
		case "stream_write_timeout":
			if err := oneDuration(d, &h.StreamWriteTimeout); err != nil {
				return err
			}
		case "tools":
			if h.Tools == nil {
				h.Tools = new(MCPToolPolicy)
			}
			if err := policyLine(d, h.Tools); err != nil {
				return err
			}
		case "tenant_tools":
			var tenant string
			if !d.NextArg() {
				return d.ArgErr()
			}
			tenant = d.Val()
			if h.TenantTools == nil {
				h.TenantTools = map[string]*MCPToolPolicy{}
			}
			if h.TenantTools[tenant] == nil {
				h.TenantTools[tenant] = new(MCPToolPolicy)
			}
			if err := policyLine(d, h.TenantTools[tenant]); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized zapier_mcp option %q", opt)
		}
	}
	return nil
}

// onOff reads a flag: bare (on), or followed by on/off.
func onOff(d *caddyfile.Dispenser, opt string, dst *bool) error {
	args := d.RemainingArgs()
	switch {
	case len(args) == 0:
		*dst = true
	case len(args) == 1 && args[0] == "on":
		*dst = true
	case len(args) == 1 && args[0] == "off":
		*dst = false
	default:
		return d.Errf("%s takes on or off", opt)
	}
	return nil
}

// policyLine reads "allow|deny <pattern...>" into p.
func policyLine(d *caddyfile.Dispenser, p *MCPToolPolicy) error {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return d.Errf("expected allow or deny and at least one tool pattern")
	}
	switch args[0] {
	case "allow":
		p.Allow = append(p.Allow, args[1:]...)
	case "deny":
		p.Deny = append(p.Deny, args[1:]...)
	default:
		return d.Errf("expected allow or deny, got %q", args[0])
	}
	return nil
}
