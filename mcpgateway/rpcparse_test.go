package mcpgateway

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// parseRPC reads bodies in place; it must say exactly what decoding them
// with encoding/json says (parseRPCReference, the implementation before).
func FuzzParseRPCMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `[null]`, `1`, `"x"`, `{"a":1}x`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
		`{"jsonrpc":"2.0","id":"a<b","method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":1.0,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":1e2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":007,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":-3,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":null,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":{"x":1},"method":"tools/call"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":"1","method":"tools/call","params":{"name":"x"}}]`,
		`{"method":"tools/list","method":"tools/call","params":{"name":"a"}}`,
		`{"\u006dethod":"tools/call","params":{"name":"a","na\u006de":"b"}}`,
		`{"method":"tools/call","params":{"name":"d\u00e9nied\"x","arguments":[1,{"a":"}"}]}}`,
		`{"method":"tools/call","params":"text"}`,
		`{"method":"tools/call","params":{"name":5}}`,
		`{"method":"tools/call","params":{"name":"\xff\xfe"}}`,
		` [ {"id" : 2 , "method" : "tools/call" , "params" : { "name" : "a b" } } , {"id":3} ] `,
		`[1,2]`, `[{"id":1},"x"]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, want := parseRPC(body), parseRPCReference(body)
		if !rpcEqual(got, want) {
			t.Fatalf("parseRPC(%q)\n got %+v\nwant %+v", body, got, want)
		}
	})
}

func rpcEqual(a, b rpcRequest) bool {
	if !bytes.Equal(a.arguments, b.arguments) {
		return false
	}
	a.arguments, b.arguments = nil, nil
	if len(a.tools) == 0 && len(b.tools) == 0 {
		a.tools, b.tools = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// canonicalID's shortcuts give what decoding and encoding give.
func FuzzCanonicalIDMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{`1`, `123456789012345`, `1234567890123456789`, `"a"`, `"a<b"`, `"\u0041"`, `1.0`, `null`, `"é"`, `0`, `-1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		var v any
		want := ""
		if json.Unmarshal(raw, &v) == nil {
			switch v.(type) {
			case string, float64:
				out, _ := json.Marshal(v)
				want = string(out)
			}
		}
		if got := canonicalID(bytes.TrimSpace(raw)); got != want && len(bytes.TrimSpace(raw)) == len(raw) {
			t.Fatalf("canonicalID(%s) = %q, want %q", raw, got, want)
		}
	})
}
