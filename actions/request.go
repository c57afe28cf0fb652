package actions

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const (
	// DefaultRunWait is how long POST run polls when the request gives no
	// wait.
	DefaultRunWait = 30 * time.Second
	// MaxRunWait is the longest wait a request may give.
	MaxRunWait = 120 * time.Second
	// MaxActionKeyLen is the longest action (or trigger) key accepted.
	MaxActionKeyLen = 256
)

// RequestError is a request the caller got wrong; its message is the one
// the gateway answers (caddymodule answers it as 400 bad_request).
type RequestError struct{ Message string }

func (e *RequestError) Error() string { return e.Message }

func invalid(msg string) error { return &RequestError{Message: msg} }

// ActionRequest is the body of POST inputs.
type ActionRequest struct {
	App string `json:"app"`
	// ConnectionID names one of the user's accounts of the app (a string
	// or an integer); default the most recently verified one.
	ConnectionID json.RawMessage `json:"connection_id,omitempty"`
	Action       string          `json:"action"`
	ActionType   string          `json:"action_type,omitempty"`
	Inputs       json.RawMessage `json:"inputs,omitempty"`
}

// RunRequest is the body of POST run.
type RunRequest struct {
	ActionRequest
	// Wait is how long to poll before answering 202: "30s", or a number
	// of seconds. Default 30s, at most 120s (ParseWait).
	Wait json.RawMessage `json:"wait,omitempty"`
}

// Check validates the request's own values; the error is a *RequestError.
func (req *ActionRequest) Check() error {
	switch {
	case req.Action == "" || len(req.Action) > MaxActionKeyLen:
		return invalid(fmt.Sprintf("action must be the action's key (1-%d bytes)", MaxActionKeyLen))
	case req.ActionType != "" && !zapierapi.ValidActionType(req.ActionType):
		return invalid("action_type must be one of " + strings.Join(zapierapi.ActionTypes, ", "))
	case !IsJSONObjectOrNull(req.Inputs):
		return invalid("inputs must be a JSON object keyed by input field id")
	}
	if len(req.ConnectionID) > 0 {
		if _, ok := connect.ConnectionIDFromJSON(req.ConnectionID); !ok {
			return invalid("connection_id must be one of the user's connection ids (a string or an integer)")
		}
	}
	return nil
}

// Connection is the account the request names, or "" for the default
// (after Check).
func (req *ActionRequest) Connection() string {
	id, _ := connect.ConnectionIDFromJSON(req.ConnectionID) // checked by Check
	return id
}

// IsJSONObjectOrNull reports whether raw is absent, null or an object (by
// its first byte; the body decoded as JSON already).
func IsJSONObjectOrNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null" || s[0] == '{'
}

// ParseWait reads wait: a duration string (read by parseDuration; the
// gateway passes Caddy's, which also takes days) or a number of seconds.
// Absent or null is DefaultRunWait; the error is a *RequestError.
func ParseWait(raw json.RawMessage, parseDuration func(string) (time.Duration, error)) (time.Duration, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return DefaultRunWait, nil
	}
	var d time.Duration
	var str string
	if json.Unmarshal(raw, &str) == nil {
		var err error
		if d, err = parseDuration(str); err != nil {
			return 0, invalid(`wait must be a duration such as "30s", or a number of seconds`)
		}
	} else {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, invalid(`wait must be a duration such as "30s", or a number of seconds`)
		}
		d = -1 // out of range, unless it converts safely
		if secs >= 0 && secs <= MaxRunWait.Seconds() {
			d = time.Duration(secs * float64(time.Second))
		}
	}
	if d < 0 || d > MaxRunWait {
		return 0, invalid(fmt.Sprintf("wait must be between 0s and %s", MaxRunWait))
	}
	return d, nil
}
