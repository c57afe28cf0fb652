package authproxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
)

// holdCap bounds the 401 zapier_auth holds back for a retry: while the
// recorder buffers a 401, at most maxReplayBody bytes are kept. A longer
// body is let go: what was held is written to the client and the rest
// streams after it (the request is then not retried; the token is still
// evicted). Everything else goes to the recorder unchanged.
type holdCap struct {
	rec     *recorder
	out     http.ResponseWriter // the client
	spilled bool
}

func (c *holdCap) Header() http.Header { return c.rec.Header() }

func (c *holdCap) WriteHeader(status int) { c.rec.WriteHeader(status) }

func (c *holdCap) Write(p []byte) (int, error) {
	if c.spilled {
		return c.out.Write(p)
	}
	if c.rec.Status() == http.StatusUnauthorized && c.rec.Buffered() && c.rec.buf.Len()+len(p) > maxReplayBody {
		if err := c.rec.writeHeld(); err != nil {
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

// heldResponse is what a replayable request needs while next runs: a copy of
// the response header as it was (to undo what a held-back 401 wrote into the
// shared map) and the buffer for that 401. It is pooled because every request
// without a body takes this path; the copy shares the immutable strings and
// allocates nothing once the pool is warm.
type heldResponse struct {
	buf    bytes.Buffer
	names  []string
	values []string // values of names[i]: values[ends[i-1]:ends[i]]
	ends   []int
	nils   []bool // names[i] was set to a nil slice, which reverse_proxy tells apart from empty
}

var heldResponses = sync.Pool{New: func() any { return new(heldResponse) }}

func holdResponse(h http.Header) *heldResponse {
	held := heldResponses.Get().(*heldResponse)
	for name, vv := range h {
		held.names = append(held.names, name)
		held.values = append(held.values, vv...)
		held.ends = append(held.ends, len(held.values))
		held.nils = append(held.nils, vv == nil)
	}
	return held
}

// restore puts the header map back as it was when the response was held.
func (held *heldResponse) restore(h http.Header) {
	clear(h)
	start := 0
	for i, name := range held.names {
		end := held.ends[i]
		if held.nils[i] {
			h[name] = nil
		} else {
			h[name] = append(make([]string, 0, end-start), held.values[start:end]...)
		}
		start = end
	}
}

// release returns the state to the pool once the request is over, dropping
// its references to header strings.
func (held *heldResponse) release() {
	if held.buf.Cap() > maxReplayBody {
		return // a huge 401 body; let it go rather than pin it in the pool
	}
	held.buf.Reset()
	clear(held.names)
	clear(held.values)
	held.names, held.values, held.ends, held.nils = held.names[:0], held.values[:0], held.ends[:0], held.nils[:0]
	heldResponses.Put(held)
}
