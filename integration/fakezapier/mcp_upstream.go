package fakezapier

import (
	"net/http/httputil"
	"net/url"
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
	s.registerMCPHandler(id, title, proxy)
}
