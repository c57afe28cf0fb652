package actions

import (
	"bytes"
	"net/http"

	"github.com/zapgate/caddy-zapier/gateway"
)

// MaxBody bounds a request body (the core's).
const MaxBody = gateway.MaxJSONBody

// fail answers an error: the gateway's own (*gateway.Error), a failed call
// to Zapier (mapped to the error table), or an internal failure (returned,
// never shown). A caller that went away gets no body.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) error {
	return gateway.Fail(w, r, err)
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
