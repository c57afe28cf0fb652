package actions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// MaxBody bounds a request body.
const MaxBody = 64 << 10

// StatusClientClosed is the status of a request whose caller went away.
const StatusClientClosed = 499

// HandlerError is a request the handler did not answer: the caller went
// away (StatusClientClosed), or an internal failure (500) that the host
// logs and never shows.
type HandlerError struct {
	Status int
	Err    error
}

func (e *HandlerError) Error() string { return e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// fail answers an error: the gateway's own (*gateway.Error), a failed call
// to Zapier (mapped to the error table), or an internal failure (returned,
// never shown). A caller that went away gets no body.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) error {
	return Fail(w, r, err)
}

// Fail is how zapier_actions (and routes reusing its lookups) answer err.
func Fail(w http.ResponseWriter, r *http.Request, err error) error {
	if _, ok := zapierapi.AsError(err); ok {
		err = gateway.CallError(err)
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		return &HandlerError{Status: StatusClientClosed, Err: r.Context().Err()}
	}
	var aerr *gateway.Error
	if errors.As(err, &aerr) {
		gateway.WriteError(w, aerr)
		return nil
	}
	return &HandlerError{Status: http.StatusInternalServerError, Err: err}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		gateway.WriteError(w, &gateway.Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "encoding the response failed"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// decodeBody reads one JSON object with only the known fields. Requiring
// application/json also keeps cross-site forms (which cannot send it
// without a CORS preflight) away from the POST routes.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) *gateway.Error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return gateway.BadRequest("the body must be JSON, with Content-Type: application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return gateway.BadRequest("malformed JSON body: " + bodyErrorText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return gateway.BadRequest("malformed JSON body: one object expected")
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

// recorder buffers an answer (its headers go to the real writer's) so it
// can be stored before it is written out.
type recorder struct {
	w      http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

func (rec *recorder) Write(p []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	return rec.buf.Write(p)
}

// writeResponse writes the buffered answer out.
func (rec *recorder) writeResponse() error {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	rec.w.WriteHeader(rec.status)
	_, err := rec.w.Write(rec.buf.Bytes())
	return err
}
