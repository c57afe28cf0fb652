package fakezapier

import (
	"context"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// RegisterMCPAppServer is RegisterMCPApp with an MCP server of the test's
// own (the test's tools, protocol versions, event store): the fake lists
// the app and serves server at /mcp/<id> behind the same check of the MCP
// access tokens it issued for the app.
func (s *Server) RegisterMCPAppServer(id, title string, server *mcp.Server, opts *mcp.StreamableHTTPOptions) {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, opts)
	s.registerMCPHandler(id, title, h)
}

// registerMCPHandler lists app id and serves h at /mcp/<id> behind the
// fake's check of the MCP access tokens it issued for the app.
func (s *Server) registerMCPHandler(id, title string, h http.Handler) {
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		st := s.mcp()
		st.mu.Lock()
		defer st.mu.Unlock()
		g, ok := st.access[token]
		if !ok || g.revoked || g.app != id || !s.now().Before(g.expires) {
			st.stats.Unauthorized++
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{Scopes: []string{"mcp:run"}, Expiration: g.expires, UserID: g.tenant + "/" + g.user}, nil
	}
	app := &mcpApp{id: id, title: title,
		handler: auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{Scopes: []string{"mcp:run"}})(h)}
	st := s.mcp()
	st.mu.Lock()
	st.apps[id] = app
	st.mu.Unlock()
}
