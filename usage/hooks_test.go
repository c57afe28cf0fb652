package usage

import (
	"testing"

	"github.com/zapgate/caddy-zapier/mcpgateway"
)

// A tool call the quota refused reserved nothing; one refused by the
// gateway's other checks before the quota neither; a failed one was sent.
func TestMCPUsageOutcomes(t *testing.T) {
	for _, c := range []struct {
		call mcpgateway.Call
		res  MCPResult
		sent bool
	}{
		{mcpgateway.Call{Status: 200}, MCPSuccess, true},
		{mcpgateway.Call{Status: 200, ToolError: true}, MCPFailed, true},
		{mcpgateway.Call{Status: 502}, MCPFailed, true},
		{mcpgateway.Call{Err: mcpgateway.ErrUpstream}, MCPFailed, true},
		{mcpgateway.Call{Err: QuotaExceeded(Limit{Tasks: 1, Period: 1}, 1)}, MCPNotCalled, false},
		{mcpgateway.Call{Err: mcpgateway.ErrToolDenied}, MCPNotCalled, false},
		{mcpgateway.Call{Err: &mcpgateway.LimitError{}}, MCPNotCalled, false},
		{mcpgateway.Call{Err: mcpgateway.ErrAuthorizationRequired}, MCPNotCalled, true},
	} {
		res, sent := mcpResult(c.call)
		if res != c.res || sent != c.sent {
			t.Errorf("%+v: %v %v, want %v %v", c.call, res, sent, c.res, c.sent)
		}
	}
}
