package runcallback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ErrInvalidDelivery is wrapped by every ParseDelivery error; answer 400.
var ErrInvalidDelivery = errors.New("runcallback: invalid callback body")

// MaxDeliveryBytes bounds a callback body.
const MaxDeliveryBytes = 1 << 20

// maxRunIDBytes bounds data.id; Zapier's ids look like "arun_abc123".
const maxRunIDBytes = 128

// Run statuses a callback may carry. Callbacks fire on terminal states only.
const (
	StatusSuccess = "success"
	StatusError   = "error"
)

// Delivery is a parsed action-run callback body:
//
//	{"data": {"type": "run", "id": "arun_abc123", "status": "success",
//	          "results": [ ... ], "errors": []}}
type Delivery struct {
	RunID  string // data.id: 1–128 bytes of visible ASCII (0x21–0x7E) except '/'
	Status string // StatusSuccess or StatusError
	// Results and Errors are JSON arrays, "[]" when absent or null. Their
	// elements are passed through unchecked.
	Results, Errors json.RawMessage
}

// ParseDelivery parses and strictly validates a callback body. Unknown
// members are tolerated (Zapier may add some); duplicate members are not,
// since two parsers could disagree on which one counts.
func ParseDelivery(body []byte) (Delivery, error) {
	var d Delivery
	if len(body) > MaxDeliveryBytes {
		return d, deliveryErr("body larger than %d bytes", MaxDeliveryBytes)
	}
	if !utf8.Valid(body) {
		return d, deliveryErr("body is not valid UTF-8")
	}
	top, err := decodeObject(body, "body")
	if err != nil {
		return d, err
	}
	rawData, ok := top["data"]
	if !ok || isNull(rawData) {
		return d, deliveryErr(`missing "data" object`)
	}
	data, err := decodeObject(rawData, `"data"`)
	if err != nil {
		return d, err
	}

	var typ string
	if err := stringMember(data, "type", &typ); err != nil {
		return d, err
	}
	if typ != "run" {
		return d, deliveryErr(`data.type is %s, want "run"`, clip(typ))
	}
	if err := stringMember(data, "id", &d.RunID); err != nil {
		return d, err
	}
	if err := checkRunID(d.RunID); err != nil {
		return Delivery{}, err
	}
	if err := stringMember(data, "status", &d.Status); err != nil {
		return Delivery{}, err
	}
	if d.Status != StatusSuccess && d.Status != StatusError {
		return Delivery{}, deliveryErr(`data.status is %s, want "success" or "error"`, clip(d.Status))
	}
	if d.Results, err = arrayMember(data, "results"); err != nil {
		return Delivery{}, err
	}
	if d.Errors, err = arrayMember(data, "errors"); err != nil {
		return Delivery{}, err
	}
	return d, nil
}

func deliveryErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidDelivery, fmt.Sprintf(format, args...))
}

// decodeObject decodes one JSON object into its members, refusing anything
// else, duplicate member names and trailing data.
func decodeObject(raw []byte, what string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, deliveryErr("%s is not valid JSON", what)
	}
	if tok != json.Delim('{') {
		return nil, deliveryErr("%s is not a JSON object", what)
	}
	members := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, deliveryErr("%s is not valid JSON", what)
		}
		name := tok.(string) // object keys are always strings
		if _, dup := members[name]; dup {
			return nil, deliveryErr("%s has duplicate member %s", what, clip(name))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, deliveryErr("%s is not valid JSON", what)
		}
		members[name] = v
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, deliveryErr("%s is not valid JSON", what)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, deliveryErr("%s has trailing data after the JSON object", what)
	}
	return members, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// stringMember reads a required string member of data.
func stringMember(data map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := data[name]
	if !ok || isNull(raw) {
		return deliveryErr("missing data.%s", name)
	}
	if raw[0] != '"' || json.Unmarshal(raw, dst) != nil {
		return deliveryErr("data.%s is not a string", name)
	}
	return nil
}

// arrayMember reads an optional array member of data; absent or null is [].
func arrayMember(data map[string]json.RawMessage, name string) (json.RawMessage, error) {
	raw, ok := data[name]
	if !ok || isNull(raw) {
		return json.RawMessage("[]"), nil
	}
	if raw[0] != '[' {
		return nil, deliveryErr("data.%s is not an array", name)
	}
	return raw, nil
}

// checkRunID keeps ids safe to log, to use as map keys and to splice into
// GET /v2/action-runs/{id}.
func checkRunID(id string) error {
	switch {
	case id == "":
		return deliveryErr("data.id is empty")
	case len(id) > maxRunIDBytes:
		return deliveryErr("data.id longer than %d bytes", maxRunIDBytes)
	case strings.Contains(id, "/"):
		return deliveryErr("data.id contains '/'")
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' { // also refuses space: ids have none
			return deliveryErr("data.id contains a byte outside printable ASCII at offset %d", i)
		}
	}
	return nil
}
