package authproxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// A transport may still read (and close) the request body after the handler
// chain returned. zapier_auth's pooled body buffer must stay this request's
// until the body is closed: here the release hook scribbles over the buffer,
// as the next request reusing it would, and the late reader must still read
// its own bytes. Both the replayable (≤ 64 KiB) and the oversized path.
func TestPooledBodyIsReleasedOnCloseNotWhenServeHTTPReturns(t *testing.T) {
	var released int
	orig := releaseBodyBuffer
	releaseBodyBuffer = func(b *bytes.Buffer) {
		released++
		b.Reset()
		b.WriteString(strings.Repeat("N", 100)) // the next request's bytes
	}
	t.Cleanup(func() { releaseBodyBuffer = orig })

	c, err := tokencache.New(tokencache.Config{Size: 10}, func(context.Context, tokencache.Key) (tokencache.Token, error) {
		return tokencache.Token{Value: "tok", Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := testProxy(t, c)
	for _, size := range []int{10, maxReplayBody + 10} {
		released = 0
		want := strings.Repeat("a", size)
		var late io.ReadCloser
		next := Next(func(w http.ResponseWriter, r *http.Request) error {
			late = r.Body // the transport reads it later
			w.WriteHeader(http.StatusOK)
			return nil
		})
		r := httptest.NewRequest(http.MethodPost, "/v2/echo", io.NopCloser(strings.NewReader(want)))
		r.ContentLength = -1 // unknown length: the body is read into the pooled buffer
		r.RemoteAddr = "127.0.0.1:1234"
		r.Header.Set("X-Zapier-User", "u")
		r.Header.Set("X-Zapier-Tenant", "t")
		if err := h.Serve(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
		if released != 0 {
			t.Fatalf("size %d: buffer released %d times before the body was closed", size, released)
		}
		got, err := io.ReadAll(late)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("size %d: the late reader read %d bytes starting %q, want its own %d bytes", size, len(got), got[:min(len(got), 8)], size)
		}
		_ = late.Close()
		_ = late.Close()
		if released != 1 {
			t.Fatalf("size %d: released %d times after Close, want 1", size, released)
		}
		if n, err := late.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("size %d: read after Close gave %d, %v", size, n, err)
		}
	}
}

func TestBufferBody(t *testing.T) {
	small := httptest.NewRequest(http.MethodPost, "/", stringsReader("hello"))
	b, err := bufferBody(small)
	if err != nil || !b.replayable {
		t.Fatalf("small body: %v %v", b, err)
	}
	for range 2 {
		got := readAll(t, small)
		if got != "hello" {
			t.Fatalf("body = %q", got)
		}
		b.rewind(small)
	}
	b.release()

	none := httptest.NewRequest(http.MethodGet, "/", nil)
	if b, _ := bufferBody(none); !b.replayable {
		t.Error("a request without a body is not replayable")
	}

	big := make([]byte, maxReplayBody+10)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	chunked := httptest.NewRequest(http.MethodPost, "/", stringsReader(string(big)))
	chunked.ContentLength = -1
	b, err = bufferBody(chunked)
	if err != nil || b.replayable {
		t.Fatalf("oversized body: replayable=%v err=%v", b.replayable, err)
	}
	if got := readAll(t, chunked); got != string(big) {
		t.Errorf("oversized body was altered: %d bytes, want %d", len(got), len(big))
	}
	b.release()
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func readAll(t *testing.T, r *http.Request) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
