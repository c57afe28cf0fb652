package mcpgateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/memstorage"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// The cost of one tool call (issue 26 item 6): no storage read per call in
// steady state, and the Go benchmarks of the per-call paths.

// countingKV counts the storage reads (Load) of a KV with locks.
type countingKV struct {
	*memstorage.Storage
	loads atomic.Int64
}

func (k *countingKV) Load(ctx context.Context, key string) ([]byte, error) {
	k.loads.Add(1)
	return k.Storage.Load(ctx, key)
}

// cannedMCP answers every request as an MCP server answers a tools/call,
// in memory (no network): what the gateway adds is all that is measured.
type cannedMCP struct{ calls atomic.Int64 }

const cannedResult = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\n\n"

func (c *cannedMCP) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	if r.Header.Get("Authorization") != "Bearer at-1" {
		return &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	}
	return &http.Response{StatusCode: http.StatusOK, Request: r, ContentLength: -1,
		Header: http.Header{"Content-Type": {"text/event-stream"}, "Mcp-Session-Id": {"s1"}},
		Body:   io.NopCloser(strings.NewReader(cannedResult))}, nil
}

// perCallEnv is a handler whose token store counts its reads, with alice's
// record for app "slack" at serverURL.
func perCallEnv(t testing.TB, serverURL string, transport http.RoundTripper, tweak func(*HandlerConfig)) (*Handler, *countingKV, *Store) {
	t.Helper()
	kv := &countingKV{Storage: memstorage.New()}
	store, err := NewStore(kv, []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	namesKey := []byte("names key names key names key 32")
	store.Owners = gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return namesKey, nil }))
	rec := &Record{App: "slack", ServerURL: serverURL, AccessToken: "at-1", RefreshToken: "rt-1", Expiry: time.Now().Add(time.Hour)}
	if err := store.Put(context.Background(), alice, rec); err != nil {
		t.Fatal(err)
	}
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	cfg := HandlerConfig{
		Policy: &gateway.Policy{Identity: &rules}, Caller: &gateway.Caller{},
		Exchange: func(context.Context, gateway.Identity, string, func(context.Context) (zapierapi.Token, error)) (zapierapi.Token, error) {
			return zapierapi.Token{}, fmt.Errorf("no exchange in this test")
		},
		SignJWT:     func(context.Context, gateway.Identity) (string, error) { return "", nil },
		Store:       store,
		CallbackURL: "https://app.example/zapier/mcp/callback",
		Transport:   transport,
	}
	cfg.States = connect.NewStateKeeper(kv, connect.DefaultStateTTL)
	if tweak != nil {
		tweak(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h, kv, store
}

// toolCall is one tools/call POST to the per-app route as alice.
func toolCall(h http.Handler, app string, id int) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/"+app,
		strings.NewReader(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`, id)))
	r.RemoteAddr = testRemote
	r.Header.Set("X-Zapier-User", "alice")
	r.Header.Set("X-Zapier-Tenant", "org")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Mcp-Session-Id", "s1")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// N tool calls through a per-app route read the token record from the
// storage once: the first call; the others use the decrypted copy.
func TestPerAppToolCallsReadNoStorageInSteadyState(t *testing.T) {
	up := &cannedMCP{}
	h, kv, _ := perCallEnv(t, "http://mcp.example/slack", up, nil)
	if w := toolCall(h, "slack", 1); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"text":"hi"`) {
		t.Fatalf("first call: %d %s", w.Code, w.Body)
	}
	before := kv.loads.Load()
	const n = 50
	for i := range n {
		if w := toolCall(h, "slack", 2+i); w.Code != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, w.Code, w.Body)
		}
	}
	if reads := kv.loads.Load() - before; reads != 0 {
		t.Fatalf("%d tool calls after the first read the storage %d times, want 0", n, reads)
	}
	if got := up.calls.Load(); got != n+1 {
		t.Fatalf("the MCP server got %d calls, want %d", got, n+1)
	}
}

// Through the aggregate endpoint too: after the first call (which lists
// the tools and opens the upstream session), a call reads no storage.
func TestAggregateToolCallsReadNoStorageInSteadyState(t *testing.T) {
	ctx := context.Background()
	app, appSrv := newCountingApp(t)
	h, kv, _ := perCallEnv(t, appSrv.URL, nil, nil)
	gw := httptest.NewServer(h)
	t.Cleanup(gw.Close)
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL + "/",
		HTTPClient: &http.Client{Transport: identityHeaders{"org", "alice"}}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	call := func(i int) {
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "slack__echo", Arguments: map[string]any{"text": fmt.Sprint(i)}})
		if err != nil || res.IsError {
			t.Fatalf("call %d: %v %+v", i, err, res)
		}
	}
	call(0)
	before := kv.loads.Load()
	const n = 30
	for i := range n {
		call(1 + i)
	}
	if reads := kv.loads.Load() - before; reads != 0 {
		t.Fatalf("%d tool calls after the first read the storage %d times, want 0", n, reads)
	}
	if got := app.runs.Load(); got != n+1 {
		t.Fatalf("the tool ran %d times, want %d", got, n+1)
	}
}

// identityHeaders adds the identity headers a partner's front end adds.
type identityHeaders struct{ tenant, user string }

func (ih identityHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Zapier-Tenant", ih.tenant)
	r.Header.Set("X-Zapier-User", ih.user)
	return http.DefaultTransport.RoundTrip(r)
}

// memBus is Invalidations between Tokens in one process: what one
// publishes reaches the others' listeners (not its own), synchronously.
type memBus struct {
	mu        sync.Mutex
	listeners map[*memBusEnd]func(string)
}

type memBusEnd struct{ bus *memBus }

func (b *memBus) end() *memBusEnd {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.listeners == nil {
		b.listeners = map[*memBusEnd]func(string){}
	}
	return &memBusEnd{bus: b}
}

func (e *memBusEnd) Publish(_ context.Context, key string) error {
	e.bus.mu.Lock()
	defer e.bus.mu.Unlock()
	for other, f := range e.bus.listeners {
		if other != e {
			f(key)
		}
	}
	return nil
}

func (e *memBusEnd) Listen(ctx context.Context, changed func(string), live func(bool)) {
	e.bus.mu.Lock()
	e.bus.listeners[e] = changed
	e.bus.mu.Unlock()
	live(true)
	<-ctx.Done()
}

// Two gateways share the storage and an invalidation channel: a record
// the second cached (its steady state: no storage read) is dropped when
// the first forgets it, and re-read when the first refreshes it.
func TestForgetAndRefreshInvalidateAnotherGateway(t *testing.T) {
	ctx := context.Background()
	kv := &countingKV{Storage: memstorage.New()}
	bus := &memBus{}
	newGateway := func() *Tokens {
		store, err := NewStore(kv, []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		tok := NewTokens(store, func(_ context.Context, _ Identity, rec Record) (Record, error) {
			n++
			rec.AccessToken = fmt.Sprintf("at-refreshed-%d", n)
			return rec, nil
		}, time.Minute, nil)
		end := bus.end()
		ready := make(chan struct{})
		tok.EnableCache(time.Hour, &readyBus{memBusEnd: end, ready: ready})
		<-ready
		t.Cleanup(tok.Close)
		return tok
	}
	a, b := newGateway(), newGateway()
	rec := &Record{App: "slack", ServerURL: "http://mcp.example/slack", AccessToken: "at-1", RefreshToken: "rt-1", Expiry: time.Now().Add(time.Hour)}
	if err := a.Save(ctx, alice, rec); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Current(ctx, alice, "slack"); err != nil || got.AccessToken != "at-1" {
		t.Fatalf("b: %v %v", got, err)
	}
	before := kv.loads.Load()
	for range 10 {
		if _, err := b.Current(ctx, alice, "slack"); err != nil {
			t.Fatal(err)
		}
	}
	if reads := kv.loads.Load() - before; reads != 0 {
		t.Fatalf("b read the storage %d times in steady state", reads)
	}
	// a refreshes: b uses the new token without a refresh of its own.
	if got, err := a.Refresh(ctx, alice, "slack", "at-1"); err != nil || got.AccessToken != "at-refreshed-1" {
		t.Fatalf("a.Refresh: %v %v", got, err)
	}
	if got, err := b.Current(ctx, alice, "slack"); err != nil || got.AccessToken != "at-refreshed-1" {
		t.Fatalf("b after a's refresh: %v %v", got, err)
	}
	// a forgets: b refuses at once (its copy is an hour good otherwise).
	if found, err := a.Forget(ctx, alice, "slack"); !found || err != nil {
		t.Fatalf("a.Forget: %v %v", found, err)
	}
	if got, err := b.Current(ctx, alice, "slack"); err != ErrAuthorizationRequired {
		t.Fatalf("b after a's forget: %v %v, want ErrAuthorizationRequired", got, err)
	}
	if b.Refreshes() != 0 || a.Refreshes() != 1 {
		t.Fatalf("refreshes: a %d b %d", a.Refreshes(), b.Refreshes())
	}
}

// readyBus signals once its listener is registered.
type readyBus struct {
	*memBusEnd
	ready chan struct{}
}

func (r *readyBus) Listen(ctx context.Context, changed func(string), live func(bool)) {
	r.memBusEnd.Listen(ctx, changed, func(up bool) {
		live(up)
		close(r.ready)
	})
}

// Without an invalidation channel, a cached record is used for the TTL at
// most: then it is read again (another gateway's forget reaches this one
// within the TTL).
func TestTokenCacheTTLWithoutChannel(t *testing.T) {
	ctx := context.Background()
	kv := &countingKV{Storage: memstorage.New()}
	store, err := NewStore(kv, []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tok := NewTokens(store, nil, time.Minute, clock)
	tok.EnableCache(2*time.Second, nil)
	other := NewTokens(store, nil, time.Minute, nil) // another gateway, no cache
	if err := other.Save(ctx, alice, &Record{App: "slack", ServerURL: "http://x", AccessToken: "at-1", Expiry: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := tok.Current(ctx, alice, "slack"); err != nil {
			t.Fatal(err)
		}
	}
	if n := tok.StorageReads(); n != 1 {
		t.Fatalf("%d storage reads, want 1", n)
	}
	if _, err := other.Forget(ctx, alice, "slack"); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Current(ctx, alice, "slack"); err != nil {
		t.Fatalf("within the TTL the copy is used: %v", err)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if _, err := tok.Current(ctx, alice, "slack"); err != ErrAuthorizationRequired {
		t.Fatalf("after the TTL: %v, want ErrAuthorizationRequired", err)
	}
}

// BenchmarkPerAppToolCall is the gateway's own work for one tools/call on
// a per-app route: identity, policy, token, request parsing, the upstream
// request and the copy of its answer (the MCP server answers in memory).
// NoCache reads and decrypts the record on every call, as before the
// cache.
func BenchmarkPerAppToolCall(b *testing.B) {
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", 0}, {"NoCache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			h, _, _ := perCallEnv(b, "http://mcp.example/slack", &cannedMCP{}, func(cfg *HandlerConfig) { cfg.TokenCacheTTL = bc.ttl })
			body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
			hdr := http.Header{"X-Zapier-User": {"alice"}, "X-Zapier-Tenant": {"org"}, "Content-Type": {"application/json"},
				"Accept": {"application/json, text/event-stream"}, "Mcp-Session-Id": {"s1"}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r := httptest.NewRequest(http.MethodPost, "/slack", strings.NewReader(body))
				r.RemoteAddr = testRemote
				r.Header = hdr.Clone()
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkAggregateToolCall is one tools/call through the aggregate
// endpoint over loopback HTTP, with an SDK client and an SDK app server
// (their work is counted too: compare with BenchmarkDirectToolCall).
func BenchmarkAggregateToolCall(b *testing.B) {
	ctx := context.Background()
	appSrv := echoApp(b)
	h, _, _ := perCallEnv(b, appSrv.URL, nil, nil)
	gw := httptest.NewServer(h)
	b.Cleanup(gw.Close)
	benchCalls(b, ctx, gw.URL+"/", identityHeaders{"org", "alice"}, "slack__echo")
}

// BenchmarkDirectToolCall is BenchmarkAggregateToolCall without the
// gateway: the same client and server.
func BenchmarkDirectToolCall(b *testing.B) {
	appSrv := echoApp(b)
	benchCalls(b, context.Background(), appSrv.URL, http.DefaultTransport, "echo")
}

func benchCalls(b *testing.B, ctx context.Context, endpoint string, rt http.RoundTripper, tool string) {
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: rt}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	params := &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}}
	if _, err := s.CallTool(ctx, params); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if res, err := s.CallTool(ctx, params); err != nil || res.IsError {
			b.Fatalf("%v %+v", err, res)
		}
	}
}

// echoApp is an SDK MCP server with an echo tool.
func echoApp(tb testing.TB) *httptest.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "Slack", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	tb.Cleanup(srv.Close)
	return srv
}

// writeCounter counts the writes to a server's connections.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l *writeCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	return c.Conn.Write(p)
}

// sseProxyFront serves a Proxy for alice's app "A" at upstream, on a
// server that counts its writes.
func sseProxyFront(t *testing.T, serverURL string) (*httptest.Server, *writeCounter) {
	t.Helper()
	tokens, _ := newTokens(t, &upstream{}, nil)
	if err := tokens.Save(t.Context(), alice, &Record{App: "A", ServerURL: serverURL, AccessToken: "at"}); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Tokens: tokens}
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Serve(w, r, alice, "A"); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	wc := &writeCounter{Listener: front.Listener}
	front.Listener = wc
	front.Start()
	t.Cleanup(front.Close)
	return front, wc
}

// A tool call answered by one SSE event and the end of the stream reaches
// the client in one write (headers, event and end), not one per flush:
// before, three (the headers, the event, the end). Flushes only wait for
// more within streamFlushDelay: here an hour, so the count is exact.
func TestSSEAnswerReachesTheClientInOneWrite(t *testing.T) {
	defer func(d time.Duration) { streamFlushDelay = d }(streamFlushDelay)
	streamFlushDelay = time.Hour
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, cannedResult)
	}))
	defer up.Close()
	front, wc := sseProxyFront(t, up.URL)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 3 {
		before := wc.writes.Load()
		resp, err := client.Post(front.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != cannedResult {
			t.Fatalf("call %d: %q", i, got)
		}
		if n := wc.writes.Load() - before; n != 1 {
			t.Fatalf("call %d: %d writes to the client, want 1", i, n)
		}
	}
}

// An event followed by silence (a progress notification while the tool
// runs; a stream's headers before its first event) is not held back: it
// reaches the client while the upstream stream stays open.
func TestSSEEventBeforeSilenceReachesTheClient(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release // the headers alone first
		_, _ = io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	defer close(release)
	front, _ := sseProxyFront(t, up.URL)
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}`))
	if err != nil {
		t.Fatal(err) // the headers came
	}
	defer resp.Body.Close()
	release <- struct{}{}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: message\n" {
		t.Fatalf("%q %v", line, err)
	}
}

// Records of users who stopped calling do not stay in memory: expired
// ones are swept as others are cached.
func TestTokenCacheSweepsExpiredRecords(t *testing.T) {
	ctx := context.Background()
	store, err := NewStore(newMemKV(), []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := NewTokens(store, nil, time.Minute, func() time.Time { return now })
	tok.EnableCache(2*time.Second, nil)
	use := func(user string) {
		id := Identity{Tenant: "org", User: user}
		if err := tok.Save(ctx, id, &Record{App: "slack", ServerURL: "http://x", AccessToken: "at", Expiry: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tok.Current(ctx, id, "slack"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range sweepEvery - 1 {
		use(fmt.Sprint("old", i))
	}
	if n := tok.cache.size(); n != sweepEvery-1 {
		t.Fatalf("%d records cached, want %d", n, sweepEvery-1)
	}
	now = now.Add(3 * time.Second) // the old users' records expired
	for i := range 2 {
		use(fmt.Sprint("new", i))
	}
	if n := tok.cache.size(); n != 2 {
		t.Fatalf("%d records cached after the sweep, want 2 (the new users')", n)
	}
}

// Without an invalidation channel, a record another gateway forgot is
// still cached here; the app's server refusing its token (401) drops it:
// the next call reads the storage (and finds nothing) instead of sending
// the stale token again.
func TestRefusedTokenOfAForgottenRecordLeavesTheCache(t *testing.T) {
	ctx := context.Background()
	kv := &countingKV{Storage: memstorage.New()}
	store, err := NewStore(kv, []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	tok := NewTokens(store, nil, time.Minute, nil)
	tok.EnableCache(time.Hour, nil)
	other := NewTokens(store, nil, time.Minute, nil)
	if err := tok.Save(ctx, alice, &Record{App: "slack", ServerURL: "http://x", AccessToken: "at-1", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Forget(ctx, alice, "slack"); err != nil {
		t.Fatal(err)
	}
	if rec, err := tok.Current(ctx, alice, "slack"); err != nil || rec.AccessToken != "at-1" {
		t.Fatalf("the cached copy: %v %v", rec, err)
	}
	if _, err := tok.Refresh(ctx, alice, "slack", "at-1"); err != ErrAuthorizationRequired {
		t.Fatalf("Refresh: %v", err)
	}
	if _, err := tok.Current(ctx, alice, "slack"); err != ErrAuthorizationRequired {
		t.Fatalf("after the refusal: %v, want ErrAuthorizationRequired", err)
	}
}
