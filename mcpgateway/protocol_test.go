package mcpgateway

import (
	"errors"
	"net/http"
	"testing"
)

func TestRoutingHeadersMustMatchTheBody(t *testing.T) {
	call := parseRPC([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
	batch := parseRPC([]byte(`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}]`))
	list := parseRPC([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	for _, c := range []struct {
		what   string
		hdr    http.Header
		rpc    rpcRequest
		refuse bool
	}{
		{"no headers", http.Header{}, call, false},
		{"matching", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call, false},
		{"matching list", http.Header{"Mcp-Method": {"tools/list"}}, list, false},
		{"other method", http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Name": {"echo"}}, call, true},
		{"other tool", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"whoami"}}, call, true},
		{"name twice", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo", "whoami"}}, call, true},
		{"a batch", http.Header{"Mcp-Method": {"tools/call"}}, batch, true},
		{"a batch by name", http.Header{"Mcp-Name": {"echo"}}, batch, true},
		{"unreadable", http.Header{"Mcp-Method": {"tools/call"}}, rpcRequest{}, true},
	} {
		err := checkRoutingHeaders(c.hdr, c.rpc)
		if c.refuse != errors.Is(err, ErrHeaderMismatch) || !c.refuse && err != nil {
			t.Errorf("%s: %v", c.what, err)
		}
	}
	up := http.Header{}
	passRoutingHeaders(up, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}, "Mcp-Param-Region": {"eu"}, "Cookie": {"x"}})
	if up.Get("Mcp-Method") != "tools/call" || up.Get("Mcp-Name") != "echo" || up.Get("Mcp-Param-Region") != "eu" || up.Get("Cookie") != "" {
		t.Fatalf("forwarded %v", up)
	}
}
