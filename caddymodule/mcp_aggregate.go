package caddymodule

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/sharedtokens"
	"github.com/zapgate/caddy-zapier/tokencache"
)

// MCPToolPolicy allows and denies tools by patterns (path.Match syntax:
// *, ?, [...]) on "<app>__<tool>", with the app's id and the tool's name
// as the app's MCP server gives it. A tool is allowed when the allow list
// is empty or one of its patterns matches, and no deny pattern matches.
type MCPToolPolicy struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

func (p *MCPToolPolicy) check() error {
	if p == nil {
		return nil
	}
	for _, pat := range append(append([]string(nil), p.Allow...), p.Deny...) {
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("tool pattern %q: %w", pat, err)
		}
	}
	return nil
}

func (p *MCPToolPolicy) allows(name string) bool {
	if p == nil {
		return true
	}
	match := func(pats []string) bool {
		for _, pat := range pats {
			if ok, _ := path.Match(pat, name); ok {
				return true
			}
		}
		return false
	}
	return (len(p.Allow) == 0 || match(p.Allow)) && !match(p.Deny)
}

// provisionPolicy checks the patterns and returns the policy both the
// per-app proxy (tools/call) and the aggregate endpoint (list and call)
// apply: the every-tenant policy and the caller's tenant's.
func (h *MCP) provisionPolicy() (mcpgateway.Policy, error) {
	if err := h.Tools.check(); err != nil {
		return nil, fmt.Errorf("zapier_mcp: tools: %w", err)
	}
	for tenant, p := range h.TenantTools {
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("zapier_mcp: tenant_tools %s: %w", tenant, err)
		}
	}
	if h.Tools == nil && len(h.TenantTools) == 0 {
		return nil, nil
	}
	return func(id mcpgateway.Identity, app, tool string) bool {
		name := app + "__" + tool
		return h.Tools.allows(name) && h.TenantTools[id.Tenant].allows(name)
	}, nil
}

func (h *MCP) provisionAggregate(policy mcpgateway.Policy, limit *mcpgateway.CallLimiter) {
	h.agg = &mcpgateway.Aggregator{Tokens: h.tokens, Base: mcpTransport, ListTTL: time.Duration(h.AggregateListTTL),
		Policy: policy, Observe: h.observe, Limit: limit, SessionsPerIdentity: h.AggregateSessionsPerIdentity,
		MaxSessions: h.AggregateSessionsMax, IdleTimeout: time.Duration(h.AggregateIdleTimeout)}
}

// serveAggregate is the mount's root: one MCP server with the tools of
// every app the caller authorized.
func (h *MCP) serveAggregate(w http.ResponseWriter, r *http.Request, key tokencache.Key) error {
	h.agg.ServeHTTP(w, r.WithContext(mcpgateway.WithIdentity(r.Context(), mcpIdentity(key))))
	return nil
}

// shareToolCallCap makes tool_calls_per_minute one window per user for
// every gateway sharing the Redis of cache.redis, with the api_budget's
// Redis window (a sorted set per user, under the same prefix and
// timeout). No network I/O here: the client connects on first use.
func (h *MCP) shareToolCallCap(limit *mcpgateway.CallLimiter, store *mcpgateway.Store) error {
	r := h.app.Cache.Redis
	if limit.PerMinute <= 0 || r == nil {
		return nil
	}
	client, err := sharedtokens.NewClient(caddy.NewReplacer().ReplaceKnown(r.URL, ""), time.Duration(r.Timeout))
	if err != nil {
		return fmt.Errorf("zapier_mcp: tool_calls_per_minute: %w", err)
	}
	h.redis = client
	prefix := cmp.Or(r.Prefix, sharedtokens.DefaultPrefix) + hashHex(h.app.ClientID)[:16] + ":"
	timeout := cmp.Or(time.Duration(r.Timeout), sharedtokens.DefaultTimeout)
	limit.Shared = func(ctx context.Context, id mcpgateway.Identity, perMinute int) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		// The user is named by the store's keyed hash, never in clear.
		window := budget.NewRedisWindow(client, prefix, "mcp_tool_calls:"+store.Subject(id))
		return window.Take(ctx, budget.Limit{Requests: perMinute, Per: time.Minute}, 1)
	}
	return nil
}

// Cleanup ends the aggregate endpoint's upstream sessions.
func (h *MCP) Cleanup() error {
	if h.agg != nil {
		h.agg.Close()
	}
	if h.redis != nil {
		return h.redis.Close()
	}
	return nil
}
