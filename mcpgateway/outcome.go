package mcpgateway

import (
	"context"
	"errors"
)

// The outcomes of a proxied MCP request (a closed set: metric labels).
const (
	OutcomeSuccess       = "success"                // 2xx from the MCP server
	OutcomeToolError     = "tool_error"             // 2xx, but a tool result with isError: true
	OutcomeUpstreamError = "upstream_error"         // another status from the MCP server
	OutcomeAuthRequired  = "authorization_required" // 401 mcp_authorization_required
	OutcomeFailed        = "failed"                 // unreachable, refresh failed, storage
	OutcomeCanceled      = "canceled"               // the client went away
	OutcomeDenied        = "denied"                 // the tool policy refused the call
	OutcomeLimited       = "limited"                // over the user's tool-call cap
	OutcomeUnchecked     = "unchecked"              // a body the policy cannot check (too large, not JSON-RPC)
)

var (
	// Outcomes lists every outcome of a proxied request.
	Outcomes = []string{OutcomeSuccess, OutcomeUpstreamError, OutcomeAuthRequired, OutcomeFailed, OutcomeCanceled,
		OutcomeDenied, OutcomeLimited, OutcomeToolError, OutcomeUnchecked}
	// MethodClasses bound the method label: anything else is "other".
	MethodClasses = []string{"initialize", "tools/list", "tools/call", "notification", "stream", "other"}
)

// MethodClass is the bounded class of a JSON-RPC method.
func MethodClass(method string) string {
	switch {
	case method == "":
		return "stream" // GET/DELETE, batches
	case method == "initialize" || method == "tools/list" || method == "tools/call":
		return method
	case len(method) > 14 && method[:14] == "notifications/":
		return "notification"
	}
	return "other"
}

// Outcome is how a proxied request ended.
func Outcome(c Call) string {
	switch {
	case errors.Is(c.Err, context.Canceled):
		return OutcomeCanceled
	case errors.Is(c.Err, ErrAuthorizationRequired):
		return OutcomeAuthRequired
	case errors.Is(c.Err, ErrToolDenied):
		return OutcomeDenied
	case errors.Is(c.Err, ErrToolCallLimit), errors.Is(c.Err, ErrTooManyStreams):
		return OutcomeLimited
	case errors.Is(c.Err, ErrBodyTooLarge), errors.Is(c.Err, ErrBodyUnreadable), errors.Is(c.Err, ErrDuplicateMember):
		return OutcomeUnchecked
	case c.Err != nil:
		return OutcomeFailed
	case c.Status >= 200 && c.Status < 300 && c.ToolError:
		return OutcomeToolError
	case c.Status >= 200 && c.Status < 300:
		return OutcomeSuccess
	}
	return OutcomeUpstreamError
}
