package mcpgateway

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// An identity's streams past StreamsPerIdentity are refused before they
// reach the app's server; another identity's are not; a closed stream
// frees its place.
func TestProxyCapsStreamsPerIdentity(t *testing.T) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var upstreamGets int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamGets++
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	tokens, _ := newTokens(t, &upstream{}, nil)
	for _, id := range []Identity{alice, bob} {
		_ = tokens.Save(t.Context(), id, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at"})
	}
	p := &Proxy{Tokens: tokens, StreamsPerIdentity: 2}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := alice
		if r.URL.Query().Get("user") == "bob" {
			id = bob
		}
		if err := p.Serve(w, r, id, "A"); errors.Is(err, ErrTooManyStreams) {
			http.Error(w, "too many", http.StatusTooManyRequests)
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	defer front.Close()
	open := func(user string) *http.Response {
		resp, err := http.Get(front.URL + "?user=" + user)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	a1, a2 := open("alice"), open("alice")
	<-started
	<-started
	if resp := open("alice"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice's third stream: %d", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
	b1 := open("bob")
	<-started
	if b1.StatusCode != http.StatusOK || p.OpenStreams() != 3 || upstreamGets != 3 {
		t.Fatalf("bob's stream: %d, %d open, %d upstream", b1.StatusCode, p.OpenStreams(), upstreamGets)
	}
	a1.Body.Close()
	// The proxy sees the client go when its next read of the upstream
	// ends; the upstream ends the stream when its request is canceled.
	for p.OpenStreams() != 2 {
		<-time.After(time.Millisecond)
	}
	a3 := open("alice")
	<-started
	if a3.StatusCode != http.StatusOK {
		t.Fatalf("a stream after one closed: %d", a3.StatusCode)
	}
	a2.Body.Close()
	a3.Body.Close()
	b1.Body.Close()
}

// A client that stops reading a stream loses it after WriteTimeout, and
// the app's server sees its request end (it is not held open).
func TestProxyClientThatStopsReadingFreesUpstream(t *testing.T) {
	upstreamDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		w.Header().Set("Content-Type", "text/event-stream")
		event := []byte("data: " + strings.Repeat("x", 32<<10) + "\n\n")
		for {
			if _, err := w.Write(event); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if r.Context().Err() != nil {
				return
			}
		}
	}))
	defer srv.Close()
	tokens, _ := newTokens(t, &upstream{}, nil)
	_ = tokens.Save(t.Context(), alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at"})
	p := &Proxy{Tokens: tokens, WriteTimeout: 50 * time.Millisecond}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = p.Serve(w, r, alice, "A")
	}))
	defer front.Close()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("status line %q %v", line, err)
	}
	// Stop reading. The proxy's writes block, time out, and the upstream
	// request is closed.
	<-upstreamDone
	for p.OpenStreams() != 0 {
		<-time.After(time.Millisecond)
	}
}
