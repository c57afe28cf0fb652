package partner

// The partner's AI agent, reduced to two routes the page calls: it speaks
// MCP (Streamable HTTP, the official Go SDK) to the gateway's aggregate
// endpoint, which has the tools of every app the session's user authorized
// for AI agents. It sends the identity headers, as the ingress does; the
// gateway injects the user's MCP tokens, so no token is ever on this side.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tool is one MCP tool as the page lists it.
type Tool struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// InputSchema is the tool's input JSON Schema, from which the page
	// builds the call's form.
	InputSchema any `json:"input_schema,omitempty"`
}

// EnableAgents adds the MCP routes, speaking to the gateway at gateway
// (e.g. http://127.0.0.1:8081, whose /zapier/mcp/ is the aggregate
// endpoint):
//
//	GET  /partner/mcp/tools → {"tools":[{"name","description"}]}
//	POST /partner/mcp/call {"name","arguments"?} → {"is_error","text"}
func (s *Server) EnableAgents(gateway string) {
	s.mcpEndpoint = strings.TrimSuffix(gateway, "/") + "/zapier/mcp/"
	s.mux.HandleFunc("GET /partner/mcp/tools", s.mcpTools)
	s.mux.HandleFunc("POST /partner/mcp/call", s.mcpCall)
}

// asUser adds the session's identity to every request of the MCP client.
type asUser struct{ tenant, user string }

func (a asUser) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Zapier-Tenant", a.tenant)
	r.Header.Set("X-Zapier-User", a.user)
	return http.DefaultTransport.RoundTrip(r)
}

// mcpSession opens an MCP session with the gateway as the request's user;
// the caller closes it.
func (s *Server) mcpSession(w http.ResponseWriter, r *http.Request) (context.Context, *mcp.ClientSession, func()) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in first")
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	client := mcp.NewClient(&mcp.Implementation{Name: "demo-partner-agent", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             s.mcpEndpoint,
		HTTPClient:           &http.Client{Transport: asUser{sess.Tenant, sess.User}},
		DisableStandaloneSSE: true, // request and response only
	}, nil)
	if err != nil {
		cancel()
		writeError(w, http.StatusBadGateway, "mcp_failed", err.Error())
		return nil, nil, nil
	}
	return ctx, cs, func() { _ = cs.Close(); cancel() }
}

func (s *Server) mcpTools(w http.ResponseWriter, r *http.Request) {
	ctx, cs, done := s.mcpSession(w, r)
	if cs == nil {
		return
	}
	defer done()
	tools := []Tool{}
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			writeError(w, http.StatusBadGateway, "mcp_failed", err.Error())
			return
		}
		tools = append(tools, Tool{Name: t.Name, Description: t.Description, InputSchema: t.InputSchema})
	}
	writeJSON(w, map[string]any{"tools": tools})
}

func (s *Server) mcpCall(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	}
	if json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req) != nil || req.Name == "" {
		writeError(w, http.StatusBadRequest, "bad_request", `want {"name","arguments"?}`)
		return
	}
	ctx, cs, done := s.mcpSession(w, r)
	if cs == nil {
		return
	}
	defer done()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: req.Name, Arguments: req.Arguments})
	if err != nil {
		writeError(w, http.StatusBadGateway, "mcp_failed", err.Error())
		return
	}
	var text []string
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			text = append(text, t.Text)
		}
	}
	writeJSON(w, map[string]any{"is_error": res.IsError, "text": strings.Join(text, "\n")})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
