package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// MaxJSONBody bounds the JSON body of an end-user request.
const MaxJSONBody = 64 << 10

// StatusClientGone is the status of a request whose caller went away.
const StatusClientGone = 499

// HandlerError is a request a capability's handler did not answer: the
// caller went away (StatusClientGone), or an internal failure (500) that
// the host (Caddy) logs and never shows.
type HandlerError struct {
	Status int
	Err    error
}

func (e *HandlerError) Error() string { return e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// Fail answers err: the gateway's own (*Error), or a failed call to Zapier
// (mapped with CallError); anything else is an internal failure, returned
// as a *HandlerError, never shown. A caller that went away gets no body.
func Fail(w http.ResponseWriter, r *http.Request, err error) error {
	if _, ok := zapierapi.AsError(err); ok {
		err = CallError(err)
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		return &HandlerError{Status: StatusClientGone, Err: r.Context().Err()}
	}
	var aerr *Error
	if errors.As(err, &aerr) {
		WriteError(w, aerr)
		return nil
	}
	return &HandlerError{Status: http.StatusInternalServerError, Err: err}
}

// WriteJSON answers v as JSON, never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteError(w, &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "encoding the response failed"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// DecodeJSON reads one JSON object (at most MaxJSONBody) with only the
// known fields. Requiring application/json also keeps cross-site forms
// (which cannot send it without a CORS preflight) away from POST routes.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) *Error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return BadRequest("the body must be JSON, with Content-Type: application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return BadRequest("malformed JSON body: " + bodyErrorText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("malformed JSON body: one object expected")
	}
	return nil
}

// bodyErrorText describes a decoding error without quoting the body.
func bodyErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &typeErr):
		return "field " + typeErr.Field + " has the wrong type"
	case errors.As(err, &maxErr):
		return "too large"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "not a JSON object"
}

// Unanswered answers, for a capability's handler serving as a plain
// http.Handler (outside Caddy), what its Serve left unanswered: an internal
// failure is a 500 internal_error that shows nothing of the failure; a
// caller that went away gets nothing.
func Unanswered(w http.ResponseWriter, err error) {
	var herr *HandlerError
	if err == nil || errors.As(err, &herr) && herr.Status == StatusClientGone {
		return
	}
	WriteError(w, &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "the request failed"})
}
