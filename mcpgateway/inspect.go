package mcpgateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
)

// maxHeldMessage bounds a tools/list response held back to be filtered.
// A larger one is not passed through unfiltered: the response is cut.
const maxHeldMessage = 8 << 20

// errHeldTooLarge cuts a response whose tools/list answer cannot be filtered.
var errHeldTooLarge = errors.New("mcpgateway: a tools/list response is too large to filter")

// rpcRequest is what the proxy learned from a request body: the JSON-RPC
// messages it carries, the tool calls in it, and the ids whose responses
// must be inspected.
type rpcRequest struct {
	ok        bool   // the body was empty, or JSON-RPC messages the proxy could read
	duplicate bool   // a message (or its params) names a member twice
	method    string // of a single message ("" for a batch or none)
	tool      string // of a single tools/call, bounded for logs and metrics
	arguments json.RawMessage
	tools     []string        // every tools/call's tool name, whole (batches too)
	listIDs   map[string]bool // ids of tools/list requests
	callIDs   map[string]bool // ids of tools/call requests
}

// responseInspector sits between the upstream body and the client. It
// removes the tools the policy denies from tools/list responses (holding
// back only the message being filtered; everything else passes as it
// comes) and notes whether a tools/call result said isError. It reads
// JSON bodies (one document) and SSE streams (one document per event).
type responseInspector struct {
	out     func([]byte) error
	allowed func(tool string) bool // nil: nothing is filtered
	listIDs map[string]bool
	// anyList: any response may answer a tools/list (a resumed stream
	// replays responses to requests this proxy never saw).
	anyList bool
	callIDs map[string]bool
	sse     bool

	toolError bool // a tools/call result had isError: true

	scan         jsonScanner
	holding      bool // the current message or event is held back
	untilDecided bool // holding only until the scanner decides
	held         []byte
	pending      []byte // bytes of the current write to send

	// SSE framing
	lineStart bool
	field     []byte
	fieldDone bool
	isData    bool
	skipSpace bool
	afterCR   bool
	eventData bool // the event has had a data line
}

// newResponseInspector returns nil when there is nothing to inspect.
func newResponseInspector(resp *http.Response, req rpcRequest, allowed func(string) bool, resumed bool) *responseInspector {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/json" && mt != "text/event-stream" {
		return nil
	}
	ri := &responseInspector{allowed: allowed, listIDs: req.listIDs, callIDs: req.callIDs,
		anyList: resumed && mt == "text/event-stream", sse: mt == "text/event-stream", lineStart: true}
	if ri.allowed == nil {
		ri.listIDs, ri.anyList = nil, false
	}
	if len(ri.listIDs) == 0 && !ri.anyList && len(ri.callIDs) == 0 {
		return nil
	}
	ri.scan.decided = ri.decided
	ri.scan.message = ri.message
	ri.scan.batch = ri.batch
	ri.startDocument()
	return ri
}

func (ri *responseInspector) filtering() bool { return len(ri.listIDs) > 0 || ri.anyList }

func (ri *responseInspector) startDocument() {
	ri.scan.reset()
	if ri.filtering() {
		ri.holding, ri.untilDecided = true, true
	}
}

// decided: the message's id (or method) is known. Only a response to a
// tools/list stays held; the bytes held so far go on.
func (ri *responseInspector) decided(m *msgInfo) {
	if !ri.holding || !ri.untilDecided {
		return
	}
	if !m.hasMethod && (ri.anyList || ri.listIDs[m.id]) {
		ri.untilDecided = false
		return
	}
	ri.release()
}

// batch: a batch is held whole when filtering (its later messages may
// answer a tools/list).
func (ri *responseInspector) batch() {
	if ri.holding {
		ri.untilDecided = false
	}
}

func (ri *responseInspector) message(m msgInfo) {
	if !m.hasMethod && m.isError && ri.callIDs[m.id] {
		ri.toolError = true
	}
}

func (ri *responseInspector) release() {
	ri.pending = append(ri.pending, ri.held...)
	ri.held, ri.holding, ri.untilDecided = ri.held[:0], false, false
}

// Write inspects p and passes on what may go now.
func (ri *responseInspector) Write(p []byte) error {
	ri.pending = ri.pending[:0]
	for _, c := range p {
		if ri.holding {
			ri.held = append(ri.held, c)
			if len(ri.held) > maxHeldMessage {
				return errHeldTooLarge
			}
		} else {
			ri.pending = append(ri.pending, c)
		}
		if !ri.sse {
			ri.scan.step(c)
			continue
		}
		if err := ri.stepSSE(c); err != nil {
			return err
		}
	}
	if len(ri.pending) == 0 {
		return nil
	}
	return ri.out(ri.pending)
}

// Close ends a JSON body: a held document is filtered and sent.
func (ri *responseInspector) Close() error {
	if ri.sse || !ri.holding {
		return nil
	}
	doc, _, err := filterToolsList(ri.held, ri.allowed, ri.listIDs, ri.anyList)
	if err != nil {
		return err
	}
	return ri.out(doc)
}

// stepSSE follows the event framing: data field bytes go to the scanner,
// a blank line ends the event (and its document).
func (ri *responseInspector) stepSSE(c byte) error {
	if ri.afterCR && c == '\n' { // \r\n is one line end
		ri.afterCR = false
		return nil
	}
	ri.afterCR = c == '\r'
	if c == '\r' || c == '\n' {
		blank := ri.lineStart
		if ri.isData {
			ri.eventData = true
		}
		ri.lineStart, ri.field, ri.fieldDone, ri.isData = true, ri.field[:0], false, false
		if blank {
			return ri.endEvent()
		}
		return nil
	}
	if ri.lineStart {
		ri.lineStart = false
	}
	switch {
	case !ri.fieldDone && c == ':':
		ri.fieldDone = true
		ri.isData = string(ri.field) == "data"
		ri.skipSpace = true
	case !ri.fieldDone:
		if len(ri.field) < 8 {
			ri.field = append(ri.field, c)
		} else {
			ri.field = append(ri.field[:0], '-') // a field we do not read
		}
	case ri.isData:
		if ri.skipSpace {
			ri.skipSpace = false
			if c == ' ' {
				return nil
			}
		}
		if ri.eventData {
			ri.scan.step('\n') // data lines are joined with newlines
			ri.eventData = false
		}
		ri.scan.step(c)
	}
	return nil
}

func (ri *responseInspector) endEvent() error {
	ri.eventData = false
	if ri.holding {
		ev, err := filterSSEEvent(ri.held, ri.allowed, ri.listIDs, ri.anyList)
		if err != nil {
			return err
		}
		ri.pending = append(ri.pending, ev...)
		ri.held, ri.holding = ri.held[:0], false
	}
	ri.startDocument()
	return nil
}

// filterSSEEvent rewrites one held SSE event: its data is filtered, its
// other lines are kept. An event with nothing to filter is returned as is.
func filterSSEEvent(event []byte, allowed func(string) bool, listIDs map[string]bool, anyList bool) ([]byte, error) {
	lines := bytes.Split(bytes.ReplaceAll(bytes.ReplaceAll(event, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n")), []byte("\n"))
	var data [][]byte
	var out []byte
	for _, line := range lines {
		if len(line) == 0 {
			continue
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(v, []byte(" ")))
			continue
		}
		out = append(append(out, line...), '\n')
	}
	if len(data) == 0 {
		return event, nil
	}
	doc, changed, err := filterToolsList(bytes.Join(data, []byte("\n")), allowed, listIDs, anyList)
	if err != nil || !changed {
		return event, err
	}
	for _, line := range bytes.Split(doc, []byte("\n")) {
		out = append(append(append(out, "data: "...), line...), '\n')
	}
	return append(out, '\n'), nil
}

// filterToolsList removes the tools allowed refuses from every tools/list
// response in doc (one message or a batch). Other messages are unchanged,
// and so is what does not parse as one: a client cannot read a tools list
// from it either.
func filterToolsList(doc []byte, allowed func(string) bool, listIDs map[string]bool, anyList bool) ([]byte, bool, error) {
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var msgs []json.RawMessage
		if err := json.Unmarshal(trimmed, &msgs); err != nil {
			return doc, false, nil // no JSON client reads it as a tools list either
		}
		changed := false
		for i, m := range msgs {
			out, ok, err := filterToolsListMessage(m, allowed, listIDs, anyList)
			if err != nil {
				return nil, false, err
			}
			if ok {
				msgs[i], changed = out, true
			}
		}
		if !changed {
			return doc, false, nil
		}
		out, err := json.Marshal(msgs)
		return out, err == nil, err
	}
	out, ok, err := filterToolsListMessage(trimmed, allowed, listIDs, anyList)
	if err != nil || !ok {
		return doc, false, err
	}
	return out, true, nil
}

func filterToolsListMessage(raw json.RawMessage, allowed func(string) bool, listIDs map[string]bool, anyList bool) (json.RawMessage, bool, error) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, false, nil
	}
	_, hasMethod := msg["method"]
	result, hasResult := msg["result"]
	if hasMethod || !hasResult || !(anyList || listIDs[canonicalID(msg["id"])]) {
		return nil, false, nil
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(result, &res); err != nil {
		return nil, false, nil
	}
	toolsRaw, ok := res["tools"]
	if !ok {
		return nil, false, nil
	}
	var tools []json.RawMessage
	if err := json.Unmarshal(toolsRaw, &tools); err != nil {
		return nil, false, nil
	}
	kept := tools[:0]
	for _, t := range tools {
		var tool map[string]json.RawMessage
		var name string
		if json.Unmarshal(t, &tool) == nil && json.Unmarshal(tool["name"], &name) == nil && allowed(name) {
			kept = append(kept, t)
		}
	}
	if len(kept) == len(tools) {
		return nil, false, nil
	}
	var err error
	if res["tools"], err = json.Marshal(kept); err != nil {
		return nil, false, err
	}
	if msg["result"], err = json.Marshal(res); err != nil {
		return nil, false, err
	}
	out, err := json.Marshal(msg)
	return out, err == nil, err
}
