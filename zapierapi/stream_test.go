package zapierapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestStreamFramesHeartbeatsAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer tok":
			w.WriteHeader(http.StatusUnauthorized)
		case r.URL.Path == "/gone":
			w.WriteHeader(http.StatusNotFound)
		case r.URL.Path == "/silent":
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(": keep-alive\n\ndata: {\"inbox_id\":\"a\"}\n\n: keep-alive\n\ndata: line1\ndata: line2\n\n"))
		}
	}))
	defer srv.Close()
	c, err := New(Config{ClientID: "c", ClientSecret: "s", TokenURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := c.Stream(context.Background(), "events", srv.URL+"/ok", "tok", time.Minute, func(b []byte) { got = append(got, string(b)) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != `{"inbox_id":"a"}` || got[1] != "line1\nline2" {
		t.Fatalf("frames: %q", got)
	}
	err = c.Stream(context.Background(), "events", srv.URL+"/gone", "tok", time.Minute, func([]byte) {})
	if !IsPermanent(err) {
		t.Fatalf("404: %v", err)
	}
	// A silent stream is given up after idle, without an error.
	if err := c.Stream(context.Background(), "events", srv.URL+"/silent", "tok", 50*time.Millisecond, func([]byte) {}); err != nil {
		t.Fatalf("silent: %v", err)
	}
}
