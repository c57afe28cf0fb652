package authproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// replayBody is a request body held in a pooled buffer so it can be sent
// twice. The buffer goes back to the pool only when nothing can read it any
// more: the handler is done with it (release) and every body handed to the
// next handler has been closed. A transport may read and close the request
// body after the handler chain has returned; until it closes it, the bytes
// it reads are this request's, never a later request's.
type replayBody struct {
	buf        *bytes.Buffer // nil when the request has no body
	replayable bool
	refs       atomic.Int32 // the handler's hold, plus one per open bodyReader
}

// noBody is the replay state of every request without a body.
var noBody = &replayBody{replayable: true}

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// releaseBodyBuffer returns a body buffer to the pool (a variable so a test
// can see when it happens).
var releaseBodyBuffer = func(b *bytes.Buffer) { bodyBuffers.Put(b) }

// bufferBody reads up to maxReplayBody bytes of the request body. A body
// that fits is replayable; a longer one is passed on unchanged (what was read
// followed by the rest). A request without a body needs no buffer.
func bufferBody(r *http.Request) (*replayBody, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return noBody, nil
	}
	if r.ContentLength > maxReplayBody {
		return &replayBody{}, nil
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r.Body, maxReplayBody+1))
	if err != nil {
		releaseBodyBuffer(buf)
		return nil, err
	}
	b := &replayBody{buf: buf}
	b.refs.Store(1)
	if n > maxReplayBody {
		b.refs.Add(1)
		r.Body = &bodyReader{body: b, r: bytes.NewReader(buf.Bytes()), rest: r.Body}
		return b, nil
	}
	_ = r.Body.Close()
	b.replayable = true
	b.rewind(r)
	return b, nil
}

// rewind gives r a fresh reader over the buffered body.
func (b *replayBody) rewind(r *http.Request) {
	if b.buf == nil {
		r.Body = http.NoBody
		return
	}
	b.refs.Add(1)
	r.Body = &bodyReader{body: b, r: bytes.NewReader(b.buf.Bytes())}
	r.ContentLength = int64(b.buf.Len())
}

// release drops the handler's hold once the request is over.
func (b *replayBody) release() { b.unref() }

func (b *replayBody) unref() {
	if b.buf == nil || b.refs.Add(-1) != 0 {
		return
	}
	if b.buf.Cap() <= 4*maxReplayBody {
		releaseBodyBuffer(b.buf)
	}
}

var errBodyClosed = errors.New("zapier_auth: read of a closed request body")

// bodyReader is one pass over a buffered body (followed by the unread rest
// of an oversized one). Close releases its hold on the buffer; Read after
// Close fails instead of reading a buffer that may belong to another
// request. Read and Close may be called from different goroutines.
type bodyReader struct {
	mu     sync.Mutex
	body   *replayBody
	r      *bytes.Reader
	rest   io.ReadCloser // nil for a replayable body
	closed bool
}

func (br *bodyReader) Read(p []byte) (int, error) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.closed {
		return 0, errBodyClosed
	}
	if br.r.Len() > 0 || br.rest == nil {
		return br.r.Read(p)
	}
	return br.rest.Read(p)
}

func (br *bodyReader) Close() error {
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.closed {
		return nil
	}
	br.closed = true
	br.r = nil
	var err error
	if br.rest != nil {
		err = br.rest.Close()
	}
	br.body.unref()
	return err
}
