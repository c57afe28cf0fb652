package authproxy

import (
	"bytes"
	"net/http"
)

// recorder passes a response through to the client, except one that
// shouldBuffer picks at WriteHeader: that one is kept in buf (header not
// sent) so the request can be sent again.
type recorder struct {
	w            http.ResponseWriter
	buf          *bytes.Buffer
	shouldBuffer func(status int, h http.Header) bool // nil: never
	status       int
	wroteHeader  bool
	buffered     bool
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(status int) {
	if r.wroteHeader {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		r.w.WriteHeader(status) // informational: more headers follow
		return
	}
	r.status, r.wroteHeader = status, true
	if r.shouldBuffer != nil && r.shouldBuffer(status, r.w.Header()) {
		r.buffered = true
		return
	}
	r.w.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.buffered {
		return r.buf.Write(p)
	}
	return r.w.Write(p)
}

// FlushError flushes unless the response is being held.
func (r *recorder) FlushError() error {
	if r.buffered {
		return nil
	}
	return http.NewResponseController(r.w).Flush()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.w }

// Status is the response's status (200 when none was written, as net/http
// would answer).
func (r *recorder) Status() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// Buffered says the response is held, not sent.
func (r *recorder) Buffered() bool { return r.buffered }

// writeHeld sends a held response: its status, then what was buffered.
func (r *recorder) writeHeld() error {
	r.buffered = false
	r.w.WriteHeader(r.status)
	_, err := r.w.Write(r.buf.Bytes())
	return err
}
