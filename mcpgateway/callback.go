package mcpgateway

import (
	"errors"
	"net/url"

	"github.com/zapgate/caddy-zapier/connect"
)

// MaxCode bounds an authorization code from the MCP authorize step.
const MaxCode = 2048

// Callback is what the MCP authorize step sends back to the callback
// route: a code, or an error (sanitised), with the flow's state.
type Callback struct {
	Code, State      string
	ErrCode, ErrDesc string
	HasError         bool
}

// ParseCallback reads the callback query strictly: each known parameter
// at most once, exactly one of code and error; a code is visible ASCII of
// at most MaxCode bytes; an error code and description come out sanitised.
func ParseCallback(raw string) (Callback, error) {
	bad := errors.New("the callback needs exactly one code or error, at most one state and error_description")
	if len(raw) > connect.MaxCallbackQuery {
		return Callback{}, bad
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return Callback{}, bad
	}
	for _, name := range []string{"code", "state", "error", "error_description"} {
		if len(q[name]) > 1 {
			return Callback{}, bad
		}
	}
	_, hasCode := q["code"]
	_, hasError := q["error"]
	if hasCode == hasError {
		return Callback{}, bad
	}
	p := Callback{Code: q.Get("code"), State: q.Get("state"), HasError: hasError}
	if hasCode && (p.Code == "" || len(p.Code) > MaxCode || !visibleASCII(p.Code)) {
		return Callback{}, errors.New("code is not an authorization code")
	}
	if hasError {
		p.ErrCode = connect.SanitizeErrorCode(q.Get("error"))
		p.ErrDesc = connect.SanitizeText(q.Get("error_description"), connect.MaxErrorDesc)
	}
	return p, nil
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
