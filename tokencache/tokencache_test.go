package tokencache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock: TTL logic is tested without sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

var (
	alice = Key{Tenant: "acme", User: "alice"}
	bob   = Key{Tenant: "acme", User: "bob"}
)

// counter wraps a fetch function and counts its calls.
type counter struct {
	n  atomic.Int32
	fn FetchFunc
}

func (f *counter) fetch(ctx context.Context, k Key) (Token, error) {
	f.n.Add(1)
	return f.fn(ctx, k)
}

func newCache(t *testing.T, cfg Config, fn FetchFunc) (*Cache, *counter) {
	t.Helper()
	f := &counter{fn: fn}
	c, err := New(cfg, f.fetch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, f
}

// tokenIn returns a fetch that issues a numbered token valid for ttl.
func tokenIn(clk *fakeClock, ttl time.Duration) FetchFunc {
	var n atomic.Int32
	return func(context.Context, Key) (Token, error) {
		return Token{Value: fmt.Sprintf("tok-%d", n.Add(1)), Expiry: clk.Now().Add(ttl)}, nil
	}
}

func mustGet(t *testing.T, c *Cache, k Key, want Result) Token {
	t.Helper()
	tok, res, err := c.Get(context.Background(), k)
	if err != nil {
		t.Fatalf("Get(%v): %v", k, err)
	}
	if res != want {
		t.Fatalf("Get(%v) result = %v, want %v", k, res, want)
	}
	return tok
}

// inflight returns the call in flight for k, or nil.
func inflight(c *Cache, k Key) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight[k]
}

// waitWaiters blocks until n callers wait on k's in-flight fetch.
func waitWaiters(t *testing.T, c *Cache, k Key, n int) *call {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		cl := c.inflight[k]
		got := 0
		if cl != nil {
			got = cl.waiters
		}
		c.mu.Unlock()
		if got >= n {
			return cl
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d waiters on %v, have %d", n, k, got)
		}
		runtime.Gosched()
	}
}

// waitFetched waits until the fetch in flight for k (if any) has published.
func waitFetched(c *Cache, k Key) {
	if cl := inflight(c, k); cl != nil {
		<-cl.done
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{
		Hit: "hit", Miss: "miss", Coalesced: "coalesced", RefreshAhead: "refresh_ahead",
		Negative: "negative", Result(42): "Result(42)",
	} {
		if got := r.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", r, got, want)
		}
	}
}

func TestNewValidation(t *testing.T) {
	ok := func(context.Context, Key) (Token, error) { return Token{}, nil }
	for name, tc := range map[string]struct {
		cfg Config
		fn  FetchFunc
	}{
		"nil fetch":        {Config{}, nil},
		"negative size":    {Config{Size: -1}, ok},
		"negative margin":  {Config{ExpiryMargin: -time.Second}, ok},
		"negative timeout": {Config{FetchTimeout: -time.Second}, ok},
	} {
		if _, err := New(tc.cfg, tc.fn); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	c, err := New(Config{}, ok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.window != DefaultRefreshAhead || c.negativeTTL != DefaultNegativeTTL ||
		c.timeout != DefaultFetchTimeout || c.backoff != 5*time.Second || c.neg == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestMissThenHit(t *testing.T) {
	clk := newClock()
	c, f := newCache(t, Config{Now: clk.Now}, tokenIn(clk, time.Hour))
	first := mustGet(t, c, alice, Miss)
	if got := mustGet(t, c, alice, Hit); got != first {
		t.Fatalf("hit returned %+v, want %+v", got, first)
	}
	mustGet(t, c, bob, Miss)
	if n := f.n.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
}

func TestFetchGetsCallerValuesNotCancellation(t *testing.T) {
	type ctxKey struct{}
	var got any
	c, _ := newCache(t, Config{FetchTimeout: time.Minute}, func(ctx context.Context, _ Key) (Token, error) {
		got = ctx.Value(ctxKey{})
		if _, ok := ctx.Deadline(); !ok {
			return Token{}, errors.New("no deadline on fetch context")
		}
		return Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "span"))
	defer cancel()
	if _, _, err := c.Get(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if got != "span" {
		t.Fatalf("fetch saw value %v, want span", got)
	}
}

func TestExpiredEntryIsMiss(t *testing.T) {
	clk := newClock()
	c, f := newCache(t, Config{Now: clk.Now, ExpiryMargin: 10 * time.Second, RefreshAhead: -1},
		tokenIn(clk, time.Minute))
	old := mustGet(t, c, alice, Miss)
	clk.Advance(49 * time.Second) // 11s before Expiry: still valid
	mustGet(t, c, alice, Hit)
	clk.Advance(time.Second) // exactly Expiry - margin: expired
	if got := mustGet(t, c, alice, Miss); got == old {
		t.Fatal("expired token returned")
	}
	if n := f.n.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

func TestFetchedExpiredTokenIsError(t *testing.T) {
	clk := newClock()
	const secret = "SECRET-TOKEN-VALUE"
	c, _ := newCache(t, Config{Now: clk.Now, ExpiryMargin: time.Minute}, func(context.Context, Key) (Token, error) {
		return Token{Value: secret, Expiry: clk.Now().Add(30 * time.Second)}, nil
	})
	tok, res, err := c.Get(context.Background(), alice)
	if !errors.Is(err, ErrExpiredToken) || res != Miss || tok != (Token{}) {
		t.Fatalf("Get = %+v, %v, %v; want zero token, miss, ErrExpiredToken", tok, res, err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error %q leaks the token", err)
	}
	if c.Len() != 0 {
		t.Fatal("expired token was cached")
	}
}

// TestNeverReturnsExpiredProperty drives random gets, evictions and clock
// steps against tokens of random lifetime and checks every returned token.
func TestNeverReturnsExpiredProperty(t *testing.T) {
	clk := newClock()
	rng := rand.New(rand.NewPCG(1, 2))
	var rngMu sync.Mutex
	const margin = 5 * time.Second
	c, _ := newCache(t, Config{Now: clk.Now, Size: 8, ExpiryMargin: margin, RefreshAhead: 20 * time.Second},
		func(context.Context, Key) (Token, error) {
			rngMu.Lock()
			ttl := time.Duration(rng.IntN(120)-10) * time.Second // some already expired
			rngMu.Unlock()
			return Token{Value: "t", Expiry: clk.Now().Add(ttl)}, nil
		})
	keys := make([]Key, 12)
	for i := range keys {
		keys[i] = Key{Tenant: "t", User: fmt.Sprint(i)}
	}
	served := 0
	for i := 0; i < 20000; i++ {
		rngMu.Lock()
		k := keys[rng.IntN(len(keys))]
		step := time.Duration(rng.IntN(3000)) * time.Millisecond
		op := rng.IntN(20)
		rngMu.Unlock()
		if op == 0 {
			c.Evict(k)
			continue
		}
		now := clk.Now()
		tok, _, err := c.Get(context.Background(), k)
		if err == nil {
			served++
			if !now.Before(tok.Expiry.Add(-margin)) {
				t.Fatalf("step %d: token expiring %v served at %v (margin %v)", i, tok.Expiry, now, margin)
			}
		} else if !errors.Is(err, ErrExpiredToken) {
			t.Fatalf("step %d: %v", i, err)
		}
		clk.Advance(step)
	}
	if served < 1000 {
		t.Fatalf("only %d tokens served; test is not exercising the cache", served)
	}
}

func TestColdMissCoalesces(t *testing.T) {
	release := make(chan struct{})
	c, f := newCache(t, Config{}, func(context.Context, Key) (Token, error) {
		<-release
		return Token{Value: "shared", Expiry: time.Now().Add(time.Hour)}, nil
	})
	const n = 200
	type out struct {
		tok Token
		res Result
		err error
	}
	outs := make(chan out, n)
	for range n {
		go func() {
			tok, res, err := c.Get(context.Background(), alice)
			outs <- out{tok, res, err}
		}()
	}
	waitWaiters(t, c, alice, n)
	close(release)
	counts := map[Result]int{}
	for range n {
		o := <-outs
		if o.err != nil || o.tok.Value != "shared" {
			t.Fatalf("got %+v, %v", o.tok, o.err)
		}
		counts[o.res]++
	}
	if f.n.Load() != 1 {
		t.Fatalf("fetches = %d, want 1", f.n.Load())
	}
	if counts[Miss] != 1 || counts[Coalesced] != n-1 {
		t.Fatalf("results = %v, want 1 miss and %d coalesced", counts, n-1)
	}
}

func TestCoalescedError(t *testing.T) {
	release := make(chan struct{})
	boom := errors.New("boom")
	c, f := newCache(t, Config{}, func(context.Context, Key) (Token, error) {
		<-release
		return Token{}, boom
	})
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := c.Get(context.Background(), alice)
			errs <- err
		}()
	}
	waitWaiters(t, c, alice, n)
	close(release)
	for range n {
		if err := <-errs; err != boom {
			t.Fatalf("err = %v, want boom", err)
		}
	}
	if f.n.Load() != 1 {
		t.Fatalf("fetches = %d, want 1", f.n.Load())
	}
	// Transient errors are not cached: the next Get fetches again.
	release = make(chan struct{})
	close(release)
	if _, res, err := c.Get(context.Background(), alice); err != boom || res != Miss || f.n.Load() != 2 {
		t.Fatalf("after transient error: res %v err %v fetches %d", res, err, f.n.Load())
	}
}

func TestCancelledCallerDoesNotCancelOthers(t *testing.T) {
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	fetchErr := make(chan error, 1)
	c, f := newCache(t, Config{}, func(ctx context.Context, _ Key) (Token, error) {
		<-gate
		fetchErr <- ctx.Err()
		return Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	})
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, _, err := c.Get(ctxA, alice)
		errA <- err
	}()
	waitWaiters(t, c, alice, 1)
	resB := make(chan Result, 1)
	go func() {
		tok, res, err := c.Get(context.Background(), alice)
		if err != nil || tok.Value != "v" {
			t.Errorf("B got %+v, %v", tok, err)
		}
		resB <- res
	}()
	waitWaiters(t, c, alice, 2)

	t.Cleanup(release)
	cancelA()
	select { // A returns while the fetch is still blocked
	case err := <-errA:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("A err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled caller still waiting for the fetch")
	}
	release()
	if res := <-resB; res != Coalesced {
		t.Fatalf("B result = %v, want coalesced", res)
	}
	if err := <-fetchErr; err != nil {
		t.Fatalf("fetch context was cancelled: %v", err)
	}
	mustGet(t, c, alice, Hit)
	if f.n.Load() != 1 {
		t.Fatalf("fetches = %d, want 1", f.n.Load())
	}
}

func TestAlreadyCancelledCallerDoesNotFetch(t *testing.T) {
	c, f := newCache(t, Config{}, tokenIn(newClock(), time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := c.Get(ctx, alice); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if f.n.Load() != 0 {
		t.Fatal("fetched for a cancelled caller")
	}
}

func TestFetchTimeout(t *testing.T) {
	c, _ := newCache(t, Config{FetchTimeout: 20 * time.Millisecond}, func(ctx context.Context, _ Key) (Token, error) {
		<-ctx.Done()
		return Token{}, ctx.Err()
	})
	if _, _, err := c.Get(context.Background(), alice); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestRefreshAheadServesOldAndRefreshesOnce(t *testing.T) {
	clk := newClock()
	var gate chan struct{} // nil: first fetch does not block
	started := make(chan struct{}, 200)
	n := 0
	c, f := newCache(t, Config{Now: clk.Now, RefreshAhead: time.Minute}, func(context.Context, Key) (Token, error) {
		n++
		if gate != nil {
			started <- struct{}{}
			<-gate
		}
		return Token{Value: fmt.Sprintf("tok-%d", n), Expiry: clk.Now().Add(10 * time.Minute)}, nil
	})
	old := mustGet(t, c, alice, Miss)
	gate = make(chan struct{})
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // runs before Close, even if the test fails early

	clk.Advance(9*time.Minute + 30*time.Second) // 30s left: inside the window
	const hits = 100
	var wg sync.WaitGroup
	for range hits {
		wg.Go(func() {
			tok, res, err := c.Get(context.Background(), alice)
			if err != nil || res != RefreshAhead || tok != old {
				t.Errorf("Get = %+v, %v, %v; want old token, refresh_ahead", tok, res, err)
			}
		})
	}
	wg.Wait() // every hit returned while the refresh is still blocked
	<-started
	if got := f.n.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2 (one miss, one refresh)", got)
	}
	cl := inflight(c, alice)
	release()
	<-cl.done
	tok := mustGet(t, c, alice, Hit)
	if tok.Value != "tok-2" {
		t.Fatalf("after refresh got %q, want tok-2", tok.Value)
	}
}

func TestRefreshAheadFailureKeepsTokenAndBacksOff(t *testing.T) {
	clk := newClock()
	fail := false
	c, f := newCache(t, Config{Now: clk.Now, RefreshAhead: 30 * time.Second}, func(context.Context, Key) (Token, error) {
		if fail {
			return Token{}, errors.New("upstream down")
		}
		return Token{Value: "v", Expiry: clk.Now().Add(time.Minute)}, nil
	})
	old := mustGet(t, c, alice, Miss)
	fail = true
	clk.Advance(40 * time.Second) // 20s left
	if tok := mustGet(t, c, alice, RefreshAhead); tok != old {
		t.Fatal("refresh window did not serve the cached token")
	}
	waitFetched(c, alice)
	if f.n.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", f.n.Load())
	}
	// Backoff is min(30s/10, 5s) = 3s: no new fetch before it elapses.
	for range 10 {
		if tok := mustGet(t, c, alice, RefreshAhead); tok != old {
			t.Fatal("failed refresh dropped the valid token")
		}
		if cl := inflight(c, alice); cl != nil {
			t.Fatal("refresh retried during backoff")
		}
	}
	clk.Advance(2 * time.Second)
	mustGet(t, c, alice, RefreshAhead)
	if f.n.Load() != 2 {
		t.Fatalf("fetches = %d before backoff elapsed, want 2", f.n.Load())
	}
	clk.Advance(time.Second)
	mustGet(t, c, alice, RefreshAhead)
	waitFetched(c, alice)
	if f.n.Load() != 3 {
		t.Fatalf("fetches = %d after backoff, want 3", f.n.Load())
	}
	// Once the old token expires it is never served.
	clk.Advance(20 * time.Second)
	if _, res, err := c.Get(context.Background(), alice); err == nil || res != Miss {
		t.Fatalf("expired token: res %v err %v, want miss with error", res, err)
	}
}

func TestRefreshAheadDisabled(t *testing.T) {
	clk := newClock()
	c, f := newCache(t, Config{Now: clk.Now, RefreshAhead: -1}, tokenIn(clk, time.Minute))
	mustGet(t, c, alice, Miss)
	clk.Advance(59 * time.Second)
	mustGet(t, c, alice, Hit)
	if f.n.Load() != 1 {
		t.Fatal("refresh started although disabled")
	}
}

func TestNegativeCache(t *testing.T) {
	clk := newClock()
	errPerm := errors.New("invalid_grant")
	errTemp := errors.New("503")
	var next atomic.Pointer[error]
	next.Store(&errPerm)
	c, f := newCache(t, Config{
		Now: clk.Now, NegativeTTL: 10 * time.Second,
		IsPermanent: func(err error) bool { return err == errPerm },
	}, func(context.Context, Key) (Token, error) {
		if e := *next.Load(); e != nil {
			return Token{}, e
		}
		return Token{Value: "v", Expiry: clk.Now().Add(time.Hour)}, nil
	})
	get := func(wantRes Result, wantErr error) {
		t.Helper()
		_, res, err := c.Get(context.Background(), alice)
		if res != wantRes || err != wantErr {
			t.Fatalf("Get = %v, %v; want %v, %v", res, err, wantRes, wantErr)
		}
	}
	get(Miss, errPerm)
	get(Negative, errPerm)
	clk.Advance(9 * time.Second)
	get(Negative, errPerm)
	if f.n.Load() != 1 {
		t.Fatalf("fetches = %d, want 1", f.n.Load())
	}
	clk.Advance(time.Second) // TTL over
	get(Miss, errPerm)
	if f.n.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", f.n.Load())
	}
	// Evict clears the negative entry.
	if !c.Evict(alice) {
		t.Fatal("Evict of a negative entry reported false")
	}
	var none error
	next.Store(&none)
	get(Miss, nil)

	// Transient errors are never negative-cached.
	c.Evict(alice)
	next.Store(&errTemp)
	get(Miss, errTemp)
	get(Miss, errTemp)
	if f.n.Load() != 5 {
		t.Fatalf("fetches = %d, want 5", f.n.Load())
	}
}

func TestNegativeCacheDisabled(t *testing.T) {
	errPerm := errors.New("perm")
	c, f := newCache(t, Config{NegativeTTL: -1, IsPermanent: func(error) bool { return true }},
		func(context.Context, Key) (Token, error) { return Token{}, errPerm })
	c.Get(context.Background(), alice)
	if _, res, _ := c.Get(context.Background(), alice); res != Miss || f.n.Load() != 2 {
		t.Fatalf("res %v fetches %d", res, f.n.Load())
	}
}

func TestEvictToken(t *testing.T) {
	clk := newClock()
	c, _ := newCache(t, Config{Now: clk.Now}, tokenIn(clk, time.Hour))
	cur := mustGet(t, c, alice, Miss)
	if c.EvictToken(alice, "some-older-token") {
		t.Fatal("EvictToken evicted a different token")
	}
	mustGet(t, c, alice, Hit)
	if c.EvictToken(bob, cur.Value) {
		t.Fatal("EvictToken evicted another key")
	}
	if !c.EvictToken(alice, cur.Value) {
		t.Fatal("EvictToken did not evict the current token")
	}
	if c.EvictToken(alice, cur.Value) {
		t.Fatal("second EvictToken reported true")
	}
	if got := mustGet(t, c, alice, Miss); got == cur {
		t.Fatal("evicted token still served")
	}
}

func TestEvictAndPurge(t *testing.T) {
	clk := newClock()
	release := make(chan struct{})
	c, _ := newCache(t, Config{Now: clk.Now}, func(_ context.Context, k Key) (Token, error) {
		if k == bob {
			<-release
		}
		return Token{Value: k.User, Expiry: clk.Now().Add(time.Hour)}, nil
	})
	mustGet(t, c, alice, Miss)
	if c.Evict(bob) {
		t.Fatal("Evict of an absent key reported true")
	}
	if !c.Evict(alice) || c.Len() != 0 {
		t.Fatal("Evict did not remove the entry")
	}
	mustGet(t, c, alice, Miss)

	// A fetch in flight across Purge answers its waiter but is not cached.
	done := make(chan struct{})
	go func() {
		defer close(done)
		mustGet(t, c, bob, Miss)
	}()
	cl := waitWaiters(t, c, bob, 1)
	c.Purge()
	if c.Len() != 0 {
		t.Fatalf("Len after Purge = %d", c.Len())
	}
	close(release)
	<-cl.done
	<-done
	if c.Len() != 0 {
		t.Fatal("fetch started before Purge repopulated the cache")
	}
	mustGet(t, c, bob, Miss)
}

// TestEvictionBound fills the cache past its size: it stays at its size,
// OnEvict reports each capacity eviction (and nothing else), entries used
// since they were stored outlive unused ones, and a just-stored entry is not
// the next to go.
func TestEvictionBound(t *testing.T) {
	const size = 1000
	clk := newClock()
	var mu sync.Mutex
	evicted := map[Key]bool{}
	c, _ := newCache(t, Config{Now: clk.Now, Size: size, OnEvict: func(k Key) {
		mu.Lock()
		evicted[k] = true
		mu.Unlock()
	}}, tokenIn(clk, time.Hour))
	k := func(i int) Key { return Key{Tenant: "t", User: fmt.Sprint(i)} }
	for i := range size {
		mustGet(t, c, k(i), Miss)
	}
	for i := range size / 2 {
		mustGet(t, c, k(i), Hit)
	}
	for i := size; i < size+size/2; i++ {
		mustGet(t, c, k(i), Miss)
		if c.Len() != size {
			t.Fatalf("Len = %d after %d entries, want %d", c.Len(), i+1, size)
		}
		mustGet(t, c, k(i), Hit) // its own eviction never takes it
	}
	mu.Lock()
	usedEvicted := 0
	for i := range size / 2 {
		if evicted[k(i)] {
			usedEvicted++
		}
	}
	n := len(evicted)
	mu.Unlock()
	if n != size/2 {
		t.Fatalf("%d evictions reported, want %d", n, size/2)
	}
	// CLOCK is an approximation: an entry shifted back to fill a hole
	// behind the hand may be visited again early. A handful, not many.
	if usedEvicted > size/50 {
		t.Errorf("%d of the %d used entries were evicted before unused ones", usedEvicted, size/2)
	}
	t.Logf("used entries evicted: %d of %d", usedEvicted, size/2)

	// Explicit removals are not capacity evictions.
	c.Evict(k(0))
	c.Purge()
	mu.Lock()
	defer mu.Unlock()
	if len(evicted) != n {
		t.Fatalf("OnEvict called for explicit removal: %d evictions", len(evicted))
	}
}

func TestPanicInFetch(t *testing.T) {
	const secret = "SECRET-IN-PANIC"
	release := make(chan struct{})
	var panicking atomic.Bool
	panicking.Store(true)
	c, f := newCache(t, Config{}, func(context.Context, Key) (Token, error) {
		if panicking.Load() {
			<-release
			panic(secret)
		}
		return Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	})
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := c.Get(context.Background(), alice)
			errs <- err
		}()
	}
	waitWaiters(t, c, alice, n)
	close(release)
	for range n {
		err := <-errs
		var pe *PanicError
		if !errors.As(err, &pe) || pe.Value != secret || len(pe.Stack) == 0 {
			t.Fatalf("err = %v, want *PanicError carrying the value", err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error string %q leaks the panic value", err)
		}
	}
	panicking.Store(false)
	mustGet(t, c, alice, Miss)
	if f.n.Load() != 2 {
		t.Fatalf("fetches = %d, want 2", f.n.Load())
	}
}

func TestGoexitInFetch(t *testing.T) {
	c, _ := newCache(t, Config{}, func(context.Context, Key) (Token, error) {
		runtime.Goexit()
		return Token{}, nil
	})
	var pe *PanicError
	if _, _, err := c.Get(context.Background(), alice); !errors.As(err, &pe) {
		t.Fatalf("err = %v, want *PanicError", err)
	}
}

// fetchGoroutines counts goroutines currently inside the cache's fetch
// machinery, goleak-style.
func fetchGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "tokencache.(*Cache).run(")
}

func TestCloseCancelsAndWaits(t *testing.T) {
	clk := newClock()
	var returned atomic.Int32
	c, err := New(Config{Now: clk.Now, RefreshAhead: time.Minute}, func(ctx context.Context, k Key) (Token, error) {
		if k == alice {
			return Token{Value: "v", Expiry: clk.Now().Add(2 * time.Minute)}, nil
		}
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // slow shutdown: Close must still wait
		returned.Add(1)
		return Token{}, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, alice, Miss)

	missErr := make(chan error, 1)
	go func() {
		_, _, err := c.Get(context.Background(), bob)
		missErr <- err
	}()
	waitWaiters(t, c, bob, 1)
	// The fetch goroutine may not have been scheduled yet.
	for deadline := time.Now().Add(5 * time.Second); fetchGoroutines() < 1; {
		if time.Now().After(deadline) {
			t.Fatal("no fetch goroutine before Close")
		}
		runtime.Gosched()
	}

	c.Close()
	if returned.Load() != 1 {
		t.Fatal("Close returned before the fetch goroutine finished")
	}
	if err := <-missErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter err = %v, want context.Canceled", err)
	}
	// goleak-style: the goroutine may still be unwinding after wg.Done.
	for deadline := time.Now().Add(time.Second); fetchGoroutines() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("fetch goroutine leaked after Close")
		}
		runtime.Gosched()
	}

	// After Close: hits still work (also in the refresh window, without
	// starting a refresh); misses fail.
	mustGet(t, c, alice, Hit)
	clk.Advance(90 * time.Second)
	mustGet(t, c, alice, RefreshAhead)
	if inflight(c, alice) != nil {
		t.Fatal("refresh started after Close")
	}
	if _, _, err := c.Get(context.Background(), bob); !errors.Is(err, ErrClosed) {
		t.Fatalf("miss after Close: %v, want ErrClosed", err)
	}
	c.Close() // idempotent
}

func TestHitPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector instruments allocations")
	}
	c, _ := newCache(t, Config{}, func(context.Context, Key) (Token, error) {
		return Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	})
	ctx := context.Background()
	if _, _, err := c.Get(ctx, alice); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, res, _ := c.Get(ctx, alice); res != Hit {
			t.Fatal("not a hit")
		}
	})
	if allocs != 0 {
		t.Fatalf("hit path allocates %.1f times", allocs)
	}
}

func TestEvictTenant(t *testing.T) {
	clk := newClock()
	c, _ := newCache(t, Config{Now: clk.Now}, func(_ context.Context, k Key) (Token, error) {
		return Token{Value: k.Tenant + "/" + k.User, Expiry: clk.Now().Add(time.Hour)}, nil
	})
	// Enough entries of two tenants that removals shift probe runs.
	for i := range 500 {
		mustGet(t, c, Key{Tenant: "gone", User: fmt.Sprint("u", i)}, Miss)
		mustGet(t, c, Key{Tenant: "stays", User: fmt.Sprint("u", i)}, Miss)
	}
	mustGet(t, c, Key{Tenant: "gone-not", User: "x"}, Miss)
	if n := c.EvictTenant("gone"); n != 500 || c.Len() != 501 {
		t.Fatalf("EvictTenant = %d, Len %d", n, c.Len())
	}
	for i := range 500 {
		mustGet(t, c, Key{Tenant: "stays", User: fmt.Sprint("u", i)}, Hit)
	}
	mustGet(t, c, Key{Tenant: "gone-not", User: "x"}, Hit)
	mustGet(t, c, Key{Tenant: "gone", User: "u7"}, Miss)
	if n := c.EvictTenant("nobody"); n != 0 {
		t.Errorf("EvictTenant of an absent tenant = %d", n)
	}
}
