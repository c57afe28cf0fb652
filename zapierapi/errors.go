package zapierapi

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidInput is wrapped by errors about bad arguments detected before
// anything is sent to Zapier.
var ErrInvalidInput = errors.New("zapierapi: invalid input")

// Kind classifies a failure for the gateway's error mapping.
type Kind int

const (
	KindRejected    Kind = iota + 1 // Zapier refused (4xx other than 429): permanent, not retried
	KindFailed                      // 5xx, network error, empty/malformed 200 after bounded retries
	KindTimeout                     // the attempt(s) timed out (per-attempt Timeout or caller deadline)
	KindRateLimited                 // 429
	KindUnavailable                 // not attempted: the breaker is open or a 429 cooldown is running
)

func (k Kind) String() string {
	switch k {
	case KindRejected:
		return "rejected"
	case KindFailed:
		return "failed"
	case KindTimeout:
		return "timeout"
	case KindRateLimited:
		return "rate_limited"
	case KindUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// verb is the Kind as used in Error messages.
func (k Kind) verb() string {
	switch k {
	case KindTimeout:
		return "timed out"
	case KindRateLimited:
		return "rate limited"
	}
	return k.String()
}

// Error is the error returned by every Client call that reached (or tried to
// reach) Zapier. No field ever holds a secret, token, JWT or request body.
type Error struct {
	Kind        Kind
	Op          string        // what failed, e.g. "token exchange"; "" reads as "token exchange"
	StatusCode  int           // HTTP status if any
	OAuthError  string        // OAuth "error" (or the API envelope's errors[0].code); sanitized
	Description string        // "error_description" (or errors[0].detail); sanitized, ≤ ~200 bytes
	RetryAfter  time.Duration // only when Zapier sent Retry-After; 0 otherwise
	Attempts    int
	Err         error // underlying cause
}

// Error renders e.g. "token exchange rejected: 400 invalid_grant: <desc>".
func (e *Error) Error() string {
	var b strings.Builder
	op := e.Op
	if op == "" {
		op = "token exchange"
	}
	b.WriteString(op + " " + e.Kind.verb())
	if e.StatusCode != 0 || e.OAuthError != "" {
		b.WriteString(":")
	}
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " %d", e.StatusCode)
	}
	if e.OAuthError != "" {
		b.WriteString(" " + e.OAuthError)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a rejection by Zapier that retrying
// with the same input will not fix.
func IsPermanent(err error) bool {
	e, ok := AsError(err)
	return ok && e.Kind == KindRejected
}

// AsError finds an *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

const (
	maxDescBytes = 200
	maxCodeBytes = 64
)

// jwtLike matches base64url-encoded JSON objects ("eyJ…"), i.e. JWTs and
// fragments of them, in case Zapier echoes a subject token.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}(\.[A-Za-z0-9_-]*){0,2}`)

// clean makes text from Zapier safe for an error message: known secrets and
// anything JWT-like are redacted, non-printable runes dropped, length bounded.
func clean(s string, max int, secrets []string) string {
	s = redact(s, secrets)
	s = strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError:
			return '?'
		case unicode.IsSpace(r):
			return ' '
		case !unicode.IsPrint(r):
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(redact(s, secrets)) // again: dropping runes may have joined a secret
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) < 4 { // too short to be a credential; redacting would mangle text
			continue
		}
		s = strings.ReplaceAll(s, sec, "[redacted]")
		if q := url.QueryEscape(sec); q != sec {
			s = strings.ReplaceAll(s, q, "[redacted]")
		}
	}
	return jwtLike.ReplaceAllString(s, "[redacted]")
}
