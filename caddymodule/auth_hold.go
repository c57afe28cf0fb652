package caddymodule

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// holdCap bounds the 401 zapier_auth holds back for a retry: while the
// recorder buffers a 401, at most maxReplayBody bytes are kept. A longer
// body is let go: what was held is written to the client and the rest
// streams after it (the request is then not retried; the token is still
// evicted). Everything else goes to the recorder unchanged.
type holdCap struct {
	rec     caddyhttp.ResponseRecorder
	out     http.ResponseWriter // the client
	spilled bool
}

func (c *holdCap) Header() http.Header { return c.rec.Header() }

func (c *holdCap) WriteHeader(status int) { c.rec.WriteHeader(status) }

func (c *holdCap) Write(p []byte) (int, error) {
	if c.spilled {
		return c.out.Write(p)
	}
	if c.rec.Status() == http.StatusUnauthorized && c.rec.Buffered() && c.rec.Buffer().Len()+len(p) > maxReplayBody {
		if err := c.rec.WriteResponse(); err != nil {
			return 0, err
		}
		c.spilled = true
		return c.out.Write(p)
	}
	return c.rec.Write(p)
}

// ReadFrom goes through Write, so that the bound holds for io.Copy too.
func (c *holdCap) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{c}, r)
}

type writerOnly struct{ io.Writer }

// FlushError flushes unless a 401 is being held (as the recorder does).
func (c *holdCap) FlushError() error {
	if c.spilled {
		return http.NewResponseController(c.out).Flush()
	}
	return http.NewResponseController(c.rec).Flush()
}

func (c *holdCap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(c.rec).Hijack()
}

func (c *holdCap) Unwrap() http.ResponseWriter { return c.rec }
