package connect

import (
	"errors"
	"net/url"
	"strings"
)

// MaxReturnTo bounds return_to; it travels in the state and in a URL.
const MaxReturnTo = 2048

// maxUnescapes is how many layers of percent-encoding are looked through.
// A value still changing after that many decodings is refused.
const maxUnescapes = 3

// ErrReturnTo is CheckReturnTo's refusal; its text is the API error's
// message.
var ErrReturnTo = errors.New("return_to must be a path on this site (starting with a single /) or a URL on one of return_origins")

// CheckReturnTo accepts where a finished redirect flow may send the browser:
// a relative path starting with a single "/", or an absolute URL that starts
// exactly with one of origins (scheme://host[:port], as configured) followed
// by "/", "?", "#" or nothing. Everything browsers are known to read as
// another host is refused, in the raw value and in every percent-decoding
// of it: "//host", "/\host", any backslash, ASCII control characters and
// whitespace (browsers drop tabs and newlines from URLs, so "/\t/host" is
// "//host"), and "//" anywhere in the path. Raw non-ASCII bytes are refused
// too: a browser percent-encodes them.
func CheckReturnTo(raw string, origins []string) error {
	if raw == "" || len(raw) > MaxReturnTo {
		return ErrReturnTo
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] >= 0x80 { // a URL that a browser sends is percent-encoded
			return ErrReturnTo
		}
	}
	rel := raw
	if !strings.HasPrefix(raw, "/") {
		rest, ok := cutOrigin(raw, origins)
		if !ok {
			return ErrReturnTo
		}
		if rest == "" {
			return nil
		}
		if rest[0] != '/' {
			rest = "/" + rest // "?q" or "#f" on the origin itself
		}
		u, err := url.Parse(raw)
		if err != nil || u.User != nil || u.Opaque != "" {
			return ErrReturnTo
		}
		rel = rest
	}
	for range maxUnescapes + 1 {
		if !safeRelative(rel) {
			return ErrReturnTo
		}
		dec, err := url.PathUnescape(rel)
		if err != nil {
			return ErrReturnTo
		}
		if dec == rel {
			return nil
		}
		rel = dec
	}
	return ErrReturnTo
}

// cutOrigin returns what follows an allowed origin at the start of raw.
func cutOrigin(raw string, origins []string) (string, bool) {
	for _, o := range origins {
		o = strings.TrimSuffix(o, "/")
		rest, ok := strings.CutPrefix(raw, o)
		if !ok || o == "" {
			continue
		}
		if rest == "" || strings.ContainsRune("/?#", rune(rest[0])) {
			return rest, true
		}
	}
	return "", false
}

// safeRelative is the check applied to every decoding of a relative
// return_to.
func safeRelative(p string) bool {
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	if len(p) > 1 && (p[1] == '/' || p[1] == '\\') {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '\\' {
			return false
		}
	}
	path := p
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		path = p[:i]
	}
	return !strings.Contains(path, "//")
}

// WithOutcome adds the outcome parameters to a validated return_to, keeping
// its own query and fragment.
func WithOutcome(returnTo string, params url.Values) string {
	base, frag, hasFrag := strings.Cut(returnTo, "#")
	switch {
	case !strings.Contains(base, "?"):
		base += "?"
	case !strings.HasSuffix(base, "?") && !strings.HasSuffix(base, "&"):
		base += "&"
	}
	base += params.Encode()
	if hasFrag {
		base += "#" + frag
	}
	return base
}
