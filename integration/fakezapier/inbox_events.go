package fakezapier

// The Trigger Inbox events stream (zapier-api-2026.md §3.9):
// GET …/inboxes/{id}/events answers text/event-stream with one data frame
// {"inbox_id","received_message_count","redelivery"} per event queued by
// InjectTriggerEvent, a ": keep-alive" comment every SetInboxHeartbeat
// (default 15s), and ends when the bearer token expires, after
// SetInboxStreamMax (default 10m), or on CloseInboxStreams.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

type inboxStreams struct {
	mu        sync.Mutex
	subs      map[string]map[chan int]bool // inbox id → subscribers (each gets counts)
	closed    chan struct{}
	heartbeat time.Duration
	maxLife   time.Duration
	opened    int
}

func (st *inboxStreams) init() {
	if st.subs == nil {
		st.subs = map[string]map[chan int]bool{}
		st.closed = make(chan struct{})
		st.heartbeat = 15 * time.Second
		st.maxLife = 10 * time.Minute
	}
}

// serveInboxEvents streams one inbox's availability frames. The caller
// has checked the token and that the inbox is the token owner's.
func (s *Server) serveInboxEvents(w http.ResponseWriter, r *http.Request, inboxID string, tokenExpires time.Time) {
	st := &s.inbox.streams
	st.mu.Lock()
	st.init()
	select {
	case <-st.closed:
		st.mu.Unlock()
		inboxError(w, http.StatusServiceUnavailable, "unavailable", "Streams are closed.")
		return
	default:
	}
	ch := make(chan int, 16)
	if st.subs[inboxID] == nil {
		st.subs[inboxID] = map[chan int]bool{}
	}
	st.subs[inboxID][ch] = true
	st.opened++
	closed, heartbeat, maxLife := st.closed, st.heartbeat, st.maxLife
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.subs[inboxID], ch)
		st.mu.Unlock()
	}()

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	life := time.NewTimer(min(maxLife, max(time.Until(tokenExpires), 0)))
	defer life.Stop()
	for {
		var frame string
		select {
		case <-r.Context().Done():
			return
		case <-closed:
			return
		case <-life.C:
			return // the token expired: the stream ends (§3.9)
		case <-beat.C:
			frame = ": keep-alive\n\n"
		case n := <-ch:
			b, _ := json.Marshal(map[string]any{"inbox_id": inboxID, "received_message_count": n, "redelivery": false})
			frame = fmt.Sprintf("data: %s\n\n", b)
		}
		if _, err := w.Write([]byte(frame)); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// publishInboxEvent wakes the inbox's streams (never blocking).
func (s *Server) publishInboxEvent(inboxID string) {
	st := &s.inbox.streams
	st.mu.Lock()
	defer st.mu.Unlock()
	st.init()
	for ch := range st.subs[inboxID] {
		select {
		case ch <- 1:
		default:
		}
	}
}

// SetInboxHeartbeat sets the keep-alive interval of streams opened later.
func (s *Server) SetInboxHeartbeat(d time.Duration) {
	s.inbox.streams.mu.Lock()
	defer s.inbox.streams.mu.Unlock()
	s.inbox.streams.init()
	s.inbox.streams.heartbeat = max(d, time.Millisecond)
}

// InboxStreams returns how many streams are open now and were ever opened.
func (s *Server) InboxStreams() (open, opened int) {
	s.inbox.streams.mu.Lock()
	defer s.inbox.streams.mu.Unlock()
	for _, subs := range s.inbox.streams.subs {
		open += len(subs)
	}
	return open, s.inbox.streams.opened
}

// CloseInboxStreams ends every stream and refuses new ones (503), so that
// an httptest server in front of the fake can close without waiting for
// long-lived requests. Call it before closing that server.
func (s *Server) CloseInboxStreams() {
	s.inbox.streams.mu.Lock()
	defer s.inbox.streams.mu.Unlock()
	s.inbox.streams.init()
	select {
	case <-s.inbox.streams.closed:
	default:
		close(s.inbox.streams.closed)
	}
}
