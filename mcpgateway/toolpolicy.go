package mcpgateway

import (
	"fmt"
	"path"
)

// ToolPolicy allows and denies tools by patterns (path.Match syntax:
// *, ?, [...]) on "<app>__<tool>", with the app's id and the tool's name
// as the app's MCP server gives it. A tool is allowed when the allow list
// is empty or one of its patterns matches, and no deny pattern matches.
type ToolPolicy struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

// Check reports a malformed pattern.
func (p *ToolPolicy) Check() error {
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

// Allows reports whether the policy allows the tool named name
// ("<app>__<tool>"); a nil policy allows every tool.
func (p *ToolPolicy) Allows(name string) bool {
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

// NewPolicy checks the patterns and returns the policy both the per-app
// proxy (tools/call) and the aggregate endpoint (list and call) apply: the
// every-tenant policy and the caller's tenant's. With neither configured
// it is nil (every tool allowed).
func NewPolicy(every *ToolPolicy, perTenant map[string]*ToolPolicy) (Policy, error) {
	if err := every.Check(); err != nil {
		return nil, fmt.Errorf("tools: %w", err)
	}
	for tenant, p := range perTenant {
		if err := p.Check(); err != nil {
			return nil, fmt.Errorf("tenant_tools %s: %w", tenant, err)
		}
	}
	if every == nil && len(perTenant) == 0 {
		return nil, nil
	}
	return func(id Identity, app, tool string) bool {
		name := app + "__" + tool
		return every.Allows(name) && perTenant[id.Tenant].Allows(name)
	}, nil
}
