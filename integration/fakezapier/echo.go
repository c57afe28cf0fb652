package fakezapier

// /v2/echo and /v2/echo/... : a fake-only route that reflects the request as
// the fake received it, so tests can see exactly what the gateway forwarded.

import "net/http"

// EchoResponse is the JSON body of /v2/echo.
type EchoResponse struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`     // decoded path
	RawPath string      `json:"raw_path"` // escaped path as received
	Query   string      `json:"query"`    // raw query string, without '?'
	Host    string      `json:"host"`
	Headers http.Header `json:"headers"` // all request headers, canonical names → values
	Body    string      `json:"body"`
	Tenant  string      `json:"tenant"`
	User    string      `json:"user"`
}

func (s *Server) serveEcho(w http.ResponseWriter, req *apiRequest) {
	r := req.r
	writeJSON(w, http.StatusOK, EchoResponse{
		Method:  r.Method,
		Path:    r.URL.Path,
		RawPath: r.URL.EscapedPath(),
		Query:   r.URL.RawQuery,
		Host:    r.Host,
		Headers: r.Header.Clone(),
		Body:    string(req.body),
		Tenant:  req.token.tenant,
		User:    req.token.user,
	})
}
