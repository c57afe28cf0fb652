package mcpgateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memKV is an in-memory KV.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (k *memKV) Store(_ context.Context, key string, v []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = append([]byte(nil), v...)
	return nil
}

func (k *memKV) Load(_ context.Context, key string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (k *memKV) Delete(_ context.Context, key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
	return nil
}

func (k *memKV) List(_ context.Context, prefix string, _ bool) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for key := range k.m {
		if strings.HasPrefix(key, prefix+"/") {
			out = append(out, key)
		}
	}
	if len(out) == 0 {
		return nil, fs.ErrNotExist
	}
	return out, nil
}

var (
	alice = Identity{Tenant: "org", User: "alice"}
	bob   = Identity{Tenant: "org", User: "bob"}
)

func newStore(t *testing.T, kv KV, secret string) *Store {
	t.Helper()
	s, err := NewStore(kv, []byte(secret), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreEncryptsAndBindsRecords(t *testing.T) {
	ctx := context.Background()
	kv := newMemKV()
	s := newStore(t, kv, "0123456789abcdef-secret")
	rec := &Record{App: "SlackCLIAPI", ServerURL: "https://mcp.example/s", AccessToken: "at-SECRET-1", RefreshToken: "rt-SECRET-1"}
	if err := s.Put(ctx, alice, rec); err != nil {
		t.Fatal(err)
	}
	for key, v := range kv.m {
		if strings.Contains(string(v), "SECRET") || strings.Contains(key, "alice") || strings.Contains(key, "org") {
			t.Fatalf("storage leaks a token or the identity: %s = %s", key, v)
		}
	}
	got, err := s.Get(ctx, alice, "SlackCLIAPI")
	if err != nil || got == nil || got.AccessToken != "at-SECRET-1" || got.RefreshToken != "rt-SECRET-1" {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if fmt.Sprint(*got) == "" || strings.Contains(fmt.Sprintf("%v %#v", *got, *got), "SECRET") {
		t.Fatal("Record formatting leaks a token")
	}
	// Another user never sees it; a record copied under bob's key does not open.
	if got, _ := s.Get(ctx, bob, "SlackCLIAPI"); got != nil {
		t.Fatal("bob reads alice's record")
	}
	kv.m[s.storageKey(bob, "SlackCLIAPI")] = kv.m[s.storageKey(alice, "SlackCLIAPI")]
	if got, _ := s.Get(ctx, bob, "SlackCLIAPI"); got != nil {
		t.Fatal("a record copied to another user's key opened")
	}
	// Another key: the record counts as absent.
	other := newStore(t, kv, "another-secret-0123456789")
	if got, err := other.Get(ctx, alice, "SlackCLIAPI"); got != nil || err != nil {
		t.Fatalf("record opened with another key: %v %v", got, err)
	}
	list, err := s.List(ctx, alice)
	if err != nil || len(list) != 1 || list[0].App != "SlackCLIAPI" {
		t.Fatalf("List = %v, %v", list, err)
	}
	if ok, _ := s.Delete(ctx, alice, "SlackCLIAPI"); !ok {
		t.Fatal("Delete found nothing")
	}
	if list, _ := s.List(ctx, alice); len(list) != 0 {
		t.Fatalf("List after delete = %v", list)
	}
}

// upstream is an MCP-server stand-in that accepts one bearer token.
type upstream struct {
	mu    sync.Mutex
	token string
	seen  []http.Header
	calls atomic.Int32
}

func (u *upstream) valid(tok string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return tok == u.token
}

func (u *upstream) set(tok string) {
	u.mu.Lock()
	u.token = tok
	u.mu.Unlock()
}

func newTokens(t *testing.T, up *upstream, refreshTo func(n int) (string, error)) (*Tokens, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	s := newStore(t, newMemKV(), "0123456789abcdef-secret")
	refresh := func(ctx context.Context, id Identity, rec Record) (Record, error) {
		i := int(n.Add(1))
		tok, err := refreshTo(i)
		if err != nil {
			return Record{}, err
		}
		up.set(tok)
		rec.AccessToken = tok
		rec.Expiry = time.Now().Add(time.Hour)
		return rec, nil
	}
	return NewTokens(s, refresh, 5*time.Second, nil), &n
}

func TestProxyPassesHeadersAndInjectsToken(t *testing.T) {
	up := &upstream{token: "at-1"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.mu.Lock()
		up.seen = append(up.seen, r.Header.Clone())
		up.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer at-1" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Mcp-Session-Id", "sess-1")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "upstream=1")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	defer srv.Close()
	tokens, _ := newTokens(t, up, func(int) (string, error) { return "", errors.New("no refresh") })
	ctx := context.Background()
	_ = tokens.Save(ctx, alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at-1", Expiry: time.Now().Add(time.Hour)})
	var observed Call
	p := &Proxy{Tokens: tokens, Observe: func(_ context.Context, _ Identity, c Call) { observed = c }}

	req := httptest.NewRequest(http.MethodPost, "/A", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":1}}}`))
	req.Header.Set("Authorization", "Bearer client-token")
	req.Header.Set("Cookie", "session=browser")
	req.Header.Set("X-Zapier-User", "alice")
	req.Header.Set("Mcp-Session-Id", "sess-1")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	req.Header.Set("Content-Type", "application/json")
	rr := httptest.NewRecorder()
	if err := p.Serve(rr, req, alice, "A"); err != nil {
		t.Fatal(err)
	}
	if rr.Code != 200 || rr.Header().Get("Mcp-Session-Id") != "sess-1" || rr.Header().Get("Set-Cookie") != "" {
		t.Fatalf("response %d %v", rr.Code, rr.Header())
	}
	h := up.seen[0]
	if h.Get("Authorization") != "Bearer at-1" || h.Get("Cookie") != "" || h.Get("X-Zapier-User") != "" ||
		h.Get("Mcp-Session-Id") != "sess-1" || h.Get("Mcp-Protocol-Version") != "2025-06-18" {
		t.Fatalf("upstream saw %v", h)
	}
	if observed.Tool != "echo" || observed.RPCMethod != "tools/call" || observed.Status != 200 || string(observed.Arguments) != `{"x":1}` {
		t.Fatalf("observed %+v", observed)
	}
}

func TestProxyWithoutRecordNeedsAuthorization(t *testing.T) {
	tokens, _ := newTokens(t, &upstream{}, nil)
	p := &Proxy{Tokens: tokens}
	err := p.Serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/A", strings.NewReader("{}")), alice, "A")
	if !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("err = %v", err)
	}
}

// Fifty concurrent calls meet a revoked token: one refresh, every call
// replayed with the new token and answered.
func TestProxyCoalescesRefreshAndReplays(t *testing.T) {
	up := &upstream{token: "at-1"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.calls.Add(1)
		if !up.valid(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body) // echo: proves the replay carried the body
	}))
	defer srv.Close()
	tokens, refreshes := newTokens(t, up, func(n int) (string, error) { return fmt.Sprintf("at-refreshed-%d", n), nil })
	ctx := context.Background()
	_ = tokens.Save(ctx, alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at-1", RefreshToken: "rt", Expiry: time.Now().Add(time.Hour)})
	up.set("revoked")                                   // Zapier no longer accepts at-1
	p := &Proxy{Tokens: tokens, StreamsPerIdentity: 50} // fifty at once from one identity
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, i)
			rr := httptest.NewRecorder()
			if err := p.Serve(rr, httptest.NewRequest(http.MethodPost, "/A", strings.NewReader(body)), alice, "A"); err != nil {
				errs <- err
				return
			}
			if rr.Code != 200 || rr.Body.String() != body {
				errs <- fmt.Errorf("call %d: %d %q", i, rr.Code, rr.Body.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	rec, _ := tokens.Store().Get(ctx, alice, "A")
	if rec.AccessToken != "at-refreshed-1" || rec.RefreshToken != "rt" {
		t.Fatalf("stored %v", rec)
	}
}

func TestProxyRefusedRefreshForgetsRecord(t *testing.T) {
	up := &upstream{token: "valid"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	tokens, _ := newTokens(t, up, func(int) (string, error) { return "", fmt.Errorf("invalid_grant: %w", ErrAuthorizationRequired) })
	ctx := context.Background()
	_ = tokens.Save(ctx, alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at-1", RefreshToken: "rt", Expiry: time.Now().Add(time.Hour)})
	p := &Proxy{Tokens: tokens}
	err := p.Serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/A", strings.NewReader("{}")), alice, "A")
	if !errors.Is(err, ErrAuthorizationRequired) {
		t.Fatalf("err = %v", err)
	}
	if rec, _ := tokens.Store().Get(ctx, alice, "A"); rec != nil {
		t.Fatal("the refused record is still stored")
	}
}

func TestProxyRefreshesExpiredTokenBeforeUse(t *testing.T) {
	up := &upstream{token: "at-new"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.calls.Add(1)
		if !up.valid(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	tokens, refreshes := newTokens(t, up, func(int) (string, error) { return "at-new", nil })
	ctx := context.Background()
	_ = tokens.Save(ctx, alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at-old", RefreshToken: "rt", Expiry: time.Now().Add(-time.Minute)})
	rr := httptest.NewRecorder()
	if err := (&Proxy{Tokens: tokens}).Serve(rr, httptest.NewRequest(http.MethodPost, "/A", strings.NewReader("{}")), alice, "A"); err != nil {
		t.Fatal(err)
	}
	if rr.Code != http.StatusAccepted || refreshes.Load() != 1 || up.calls.Load() != 1 {
		t.Fatalf("status %d, %d refreshes, %d upstream calls", rr.Code, refreshes.Load(), up.calls.Load())
	}
}

// SSE events reach the client one by one: the second is sent upstream
// only after the client has read the first through the proxy.
func TestProxyStreamsSSEUnbuffered(t *testing.T) {
	firstRead := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "event: message\ndata: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-firstRead:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "event: message\ndata: two\n\n")
	}))
	defer srv.Close()
	tokens, _ := newTokens(t, &upstream{}, nil)
	ctx := context.Background()
	_ = tokens.Save(ctx, alice, &Record{App: "A", ServerURL: srv.URL, AccessToken: "at", Expiry: time.Now().Add(time.Hour)})
	p := &Proxy{Tokens: tokens}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Serve(w, r, alice, "A"); err != nil {
			t.Error(err)
		}
	}))
	defer front.Close()
	resp, err := http.Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	var lines []string
	for len(lines) < 2 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v", err)
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	if lines[1] != "data: one" {
		t.Fatalf("first event %q", lines)
	}
	close(firstRead)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: two") {
		t.Fatalf("second event missing: %q", rest)
	}
}
