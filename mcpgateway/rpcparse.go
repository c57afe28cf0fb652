package mcpgateway

import (
	"bytes"
	"encoding/json"
)

// parseRPC reads the JSON-RPC messages of a request body: one object, or
// a batch (an array) of them. Member names are matched exactly, as the MCP
// server matches them (encoding/json's struct decoding would also take
// "NAME" for "name", and a {"name":"denied","NAME":"allowed"} call would
// pass the policy as "allowed" and run as "denied"). Of a member named
// twice the last counts, as in encoding/json, and the message is marked
// duplicate: an MCP server may keep the first ({"method":"tools/list",
// "method":"tools/call"} would be checked as one thing and run as
// another), so such a message is not checkable.
//
// It runs on every proxied request, so it reads the body in place: the
// body is validated once (json.Valid), then walked without decoding more
// than the few values it reports.
func parseRPC(body []byte) rpcRequest {
	out := rpcRequest{ok: true}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return out
	}
	if !json.Valid(trimmed) {
		return rpcRequest{}
	}
	batch := trimmed[0] == '['
	var raws [][]byte
	if batch {
		raws = arrayElements(trimmed)
	} else {
		raws = [][]byte{trimmed}
	}
	for i, raw := range raws {
		if raw[0] != '{' {
			return rpcRequest{} // not a message (null counts as none too)
		}
		var idRaw, methodRaw, paramsRaw []byte
		unique := eachMember(raw, func(key string, v []byte) {
			switch key {
			case "id":
				idRaw = v
			case "method":
				methodRaw = v
			case "params":
				paramsRaw = v
			}
		})
		var nameRaw, argsRaw []byte
		if len(paramsRaw) > 0 && paramsRaw[0] == '{' {
			if !eachMember(paramsRaw, func(key string, v []byte) {
				switch key {
				case "name":
					nameRaw = v
				case "arguments":
					argsRaw = v
				}
			}) {
				unique = false
			}
		}
		if !unique {
			out.duplicate = true
		}
		id, method := canonicalID(idRaw), jsonString(methodRaw)
		switch method {
		case "tools/list":
			if id != "" {
				if out.listIDs == nil {
					out.listIDs = map[string]bool{}
				}
				out.listIDs[id] = true
			}
		case "tools/call":
			out.tools = append(out.tools, jsonString(nameRaw))
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
				out.tool, out.arguments = boundedName(jsonString(nameRaw)), argsRaw
			}
		}
	}
	return out
}

// The walkers below read JSON that json.Valid accepted.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\r' && b[i] != '\n' {
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// arrayElements returns the raw elements of the array b.
func arrayElements(b []byte) [][]byte {
	var out [][]byte
	i := skipSpace(b, 1)
	for i < len(b) && b[i] != ']' {
		end := skipValue(b, i)
		out = append(out, b[i:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return out
}

// eachMember calls f with each member of the object b (names decoded) and
// reports whether no name came twice.
func eachMember(b []byte, f func(key string, v []byte)) bool {
	var seen [8]string
	names := seen[:0]
	unique := true
	i := skipSpace(b, 1)
	for i < len(b) && b[i] == '"' {
		end := skipString(b, i)
		key := jsonString(b[i:end])
		for _, n := range names {
			if n == key {
				unique = false
			}
		}
		names = append(names, key)
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // ':'
		vend := skipValue(b, i)
		f(key, b[i:vend])
		i = skipSpace(b, vend)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return unique
}

// jsonString decodes the JSON string raw, or returns "" when raw is not a
// string. Plain ASCII is taken as it is; anything else as encoding/json
// decodes it (escapes, invalid UTF-8 replaced).
func jsonString(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	inner := raw[1 : len(raw)-1]
	plain := true
	for _, c := range inner {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(inner)
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

// canonicalID renders a JSON-RPC id the same way whatever its spelling
// (1, 1.0, "1" stays a string), so a response matches its request.
func canonicalID(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	// The usual spellings, without decoding: a small integer, or a plain
	// string that encoding/json writes back as it is.
	if raw[0] >= '1' && raw[0] <= '9' && len(raw) <= 15 {
		digits := true
		for _, c := range raw {
			if c < '0' || c > '9' {
				digits = false
				break
			}
		}
		if digits {
			return string(raw)
		}
	}
	if raw[0] == '"' && len(raw) >= 2 && raw[len(raw)-1] == '"' && len(raw) <= 130 {
		plain := true
		for _, c := range raw[1 : len(raw)-1] {
			if c < 0x20 || c >= 0x7f || c == '\\' || c == '"' || c == '<' || c == '>' || c == '&' {
				plain = false
				break
			}
		}
		if plain {
			return string(raw)
		}
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	switch v.(type) {
	case string, float64:
	default:
		return "" // null or another type: not an id we track
	}
	out, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(out)
}
