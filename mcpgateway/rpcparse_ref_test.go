package mcpgateway

import (
	"bytes"
	"encoding/json"
)

// parseRPC reads the JSON-RPC messages of a request body: one object, or
// a batch (an array) of them. Member names are matched exactly, as the MCP
// server matches them (encoding/json's struct decoding would also take
// "NAME" for "name", and a {"name":"denied","NAME":"allowed"} call would
// pass the policy as "allowed" and run as "denied").
func parseRPCReference(body []byte) rpcRequest {
	out := rpcRequest{ok: true}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return out
	}
	var raws []json.RawMessage
	batch := trimmed[0] == '['
	if batch {
		if json.Unmarshal(trimmed, &raws) != nil {
			return rpcRequest{}
		}
	} else {
		raws = []json.RawMessage{trimmed}
	}
	str := func(m map[string]json.RawMessage, key string) string {
		var v string
		_ = json.Unmarshal(m[key], &v)
		return v
	}
	for i, raw := range raws {
		var m, params map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil || m == nil {
			return rpcRequest{}
		}
		_ = json.Unmarshal(m["params"], &params)
		// encoding/json keeps the last of two members with one name; an
		// MCP server may keep the first. {"method":"tools/list",
		// "method":"tools/call"} or two params.name would be checked as one
		// thing and run as another: such a message is not checkable.
		if !uniqueMembersReference(raw) || params != nil && !uniqueMembersReference(m["params"]) {
			out.duplicate = true
		}
		id, method := canonicalID(m["id"]), str(m, "method")
		switch method {
		case "tools/list":
			if id != "" {
				if out.listIDs == nil {
					out.listIDs = map[string]bool{}
				}
				out.listIDs[id] = true
			}
		case "tools/call":
			out.tools = append(out.tools, str(params, "name"))
			if id != "" {
				if out.callIDs == nil {
					out.callIDs = map[string]bool{}
				}
				out.callIDs[id] = true
			}
		}
		if !batch && i == 0 {
			out.method = method
			if len(out.method) > 128 {
				out.method = out.method[:128]
			}
			if method == "tools/call" {
				out.tool, out.arguments = boundedName(str(params, "name")), params["arguments"]
			}
		}
	}
	return out
}

// uniqueMembers reports whether the JSON object raw names no member twice.
// Names are compared as decoded ("\u006dethod" is "method"). A value that
// is not an object has no members to repeat.
func uniqueMembersReference(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return false
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return true
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		name, ok := tok.(string)
		if !ok || seen[name] {
			return false
		}
		seen[name] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return true
}
