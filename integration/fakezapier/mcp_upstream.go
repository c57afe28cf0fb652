package fakezapier

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/modelcontextprotocol/go-sdk/auth"
)

// RegisterMCPAppUpstream lists an app in GET /v2/whitelabel/apps whose MCP
// server (/mcp/<id>) is another MCP server, at upstream: the fake checks
// the MCP access token as for its own apps (live, bound to this app) and
// passes each request on, without the token, streaming the answer as it
// comes. The conformance test puts the MCP conformance suite's reference
// server there.
func (s *Server) RegisterMCPAppUpstream(id, title string, upstream *url.URL) {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.URL.Path, pr.Out.URL.RawPath = upstream.Path, upstream.RawPath
			pr.Out.Header.Del("Authorization")
		},
		FlushInterval: -1,
	}
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
		handler: auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{Scopes: []string{"mcp:run"}})(proxy)}
	st := s.mcp()
	st.mu.Lock()
	st.apps[id] = app
	st.mu.Unlock()
}
