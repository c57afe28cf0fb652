package mcpgateway

import (
	"errors"
	"net/http"
	"strings"
)

// The 2026-07-28 revision of the Streamable HTTP transport (SEP-2575,
// SEP-2243) has no session: every request says what it is in headers a
// load balancer or an MCP server can route on, and the server refuses a
// request whose headers are missing or disagree with its body.

// ProtocolVersion2026 is the first revision without sessions, whose
// requests carry Mcp-Method (and Mcp-Name, Mcp-Param-*).
const ProtocolVersion2026 = "2026-07-28"

const (
	methodHeader     = "Mcp-Method"
	nameHeader       = "Mcp-Name"
	paramHeaderStart = "Mcp-Param-"
)

// ErrHeaderMismatch is a request whose Mcp-Method or Mcp-Name header says
// something else than its body: the tool policy reads the body, a server
// or a load balancer may route on the header, so it is not sent.
var ErrHeaderMismatch = errors.New("mcpgateway: the Mcp-Method or Mcp-Name header does not match the request body")

// stateless reports whether r speaks a revision without sessions.
func stateless(r *http.Request) bool {
	v := r.Header.Get("Mcp-Protocol-Version")
	return v != "" && v >= ProtocolVersion2026
}

// passRoutingHeaders copies the 2026 routing headers (Mcp-Method, Mcp-Name,
// every Mcp-Param-*) from the client's request to the upstream one.
func passRoutingHeaders(dst, src http.Header) {
	for k, v := range src {
		if k == methodHeader || k == nameHeader || strings.HasPrefix(k, paramHeaderStart) {
			dst[k] = append([]string(nil), v...)
		}
	}
}

// checkRoutingHeaders refuses a request whose routing headers disagree
// with its body (or that repeats one): Mcp-Method must name the method of
// the one message the body holds, and Mcp-Name, on a tools/call, its tool.
func checkRoutingHeaders(h http.Header, rpc rpcRequest) error {
	methods, names := h.Values(methodHeader), h.Values(nameHeader)
	if len(methods) == 0 && len(names) == 0 {
		return nil
	}
	// A batch (or an empty body) has no one method: the revision that has
	// these headers has no batches either.
	if len(methods) > 1 || len(names) > 1 || !rpc.ok || rpc.method == "" {
		return ErrHeaderMismatch
	}
	if len(methods) == 1 && methods[0] != rpc.method {
		return ErrHeaderMismatch
	}
	if len(names) == 1 && rpc.method == "tools/call" && (len(rpc.tools) != 1 || rpc.tools[0] != names[0]) {
		return ErrHeaderMismatch
	}
	return nil
}
