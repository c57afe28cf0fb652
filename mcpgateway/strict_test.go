package mcpgateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A message that names a member twice (method, id, jsonrpc, params.name,
// at the top level or in params, spelled plainly or escaped) is refused
// while a policy is set: the policy would read the last, the MCP server
// may run the first. Nothing reaches the server.
func TestProxyRefusesDuplicateMembers(t *testing.T) {
	var upstreamCalls atomic.Int32
	up := policyServer(t, true)
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		http.Redirect(w, r, up.URL, http.StatusTemporaryRedirect)
	}))
	defer counting.Close()
	var refused atomic.Int32
	tokens, _ := newTokens(t, &upstream{}, nil)
	_ = tokens.Save(t.Context(), alice, &Record{App: "A", ServerURL: counting.URL, AccessToken: "at"})
	p := &Proxy{Tokens: tokens, Policy: func(_ Identity, _, tool string) bool { return tool != "delete_all" }}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Serve(w, r, alice, "A"); errors.Is(err, ErrDuplicateMember) {
			refused.Add(1)
			http.Error(w, "duplicate", http.StatusBadRequest)
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	defer front.Close()
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"delete_all"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","\u006dethod":"tools/call","params":{"name":"delete_all"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}`,
		`{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"echo"}}`,
		`{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_all"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}]`,
	} {
		resp, err := http.Post(front.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%.70s: %d, want 400", body, resp.StatusCode)
		}
	}
	if n := upstreamCalls.Load(); n != 0 || refused.Load() != 7 {
		t.Fatalf("%d requests reached the server, %d refused", n, refused.Load())
	}
	// Repeated names deeper down (in arguments) are the tool's business.
	if rpc := parseRPC([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1,"a":2}}}`)); !rpc.ok || rpc.duplicate {
		t.Fatalf("arguments with a repeated name: %+v", rpc)
	}
}

// firstMember reads member name of the JSON object raw as a first-wins
// parser does.
func firstMember(raw []byte, name string) (json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, false
		}
		if tok == name {
			return v, true
		}
	}
	return nil, false
}

// FuzzParseRPC: the request side of the parser the tool policy uses never
// panics, and for every message it accepts as checkable (no repeated
// member), a parser that keeps the first of two members reads the same
// method and tool: there is no reading the server could run that the
// policy did not check.
func FuzzParseRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list","\u006dethod":"tools/call"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"x"}}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"delete_all","name":"echo"}}`,
		`{"method":"tools/call","params":[1,2]}`,
		`[]`, ``, `null`, `"tools/call"`, `[[{}]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rpc := parseRPC(body)
		if !rpc.ok || rpc.duplicate {
			return
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		var method string
		if raw, ok := firstMember(trimmed, "method"); ok {
			_ = json.Unmarshal(raw, &method)
		}
		if len(method) <= 128 && method != rpc.method {
			t.Fatalf("%q: method %q read first, %q by the policy", body, method, rpc.method)
		}
		if method != "tools/call" {
			return
		}
		var name string
		if params, ok := firstMember(trimmed, "params"); ok {
			if raw, ok := firstMember(params, "name"); ok {
				_ = json.Unmarshal(raw, &name)
			}
		}
		if len(rpc.tools) != 1 || rpc.tools[0] != name {
			t.Fatalf("%q: tool %q read first, %v by the policy", body, name, rpc.tools)
		}
	})
}
