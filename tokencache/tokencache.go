// Package tokencache caches access tokens per (tenant, user).
//
// It bounds the cache with CLOCK eviction (an LRU approximation),
// coalesces concurrent misses into one fetch, refreshes tokens in the
// background shortly before they expire, remembers permanent failures for a
// short while, and never hands out an expired token. Every proxied request
// does a lookup, so the hit path takes a read lock, reads the clock once,
// sets a reference bit at most once per eviction sweep, and allocates
// nothing. Entries are stored without pointers, so however many tokens are
// cached, the garbage collector has nothing of them to scan.
//
// A Token's Value from Get shares the cache's memory. Like any Go string it
// never changes, and it stays valid however long the caller keeps it.
package tokencache

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Key identifies one cached identity.
type Key struct{ Tenant, User string }

// Token is a cached access token. Get returns Expiry in the local time zone
// without a monotonic clock reading: the cache keeps it as Unix nanoseconds.
type Token struct {
	Value  string
	Expiry time.Time
}

// FetchFunc obtains a fresh token for key. It runs on a context detached
// from the caller's cancellation (its values are kept) and bounded by
// Config.FetchTimeout; it must honour ctx so that Close can stop it.
type FetchFunc func(ctx context.Context, key Key) (Token, error)

// Result tells how Get obtained its answer; it is meant for metrics.
type Result uint8

const (
	Hit          Result = iota // valid cached token
	Miss                       // this caller triggered the fetch and waited for it
	Coalesced                  // joined a fetch already in flight for the key
	RefreshAhead               // valid cached token served; it is within the refresh window, so a background refresh was started, is running or is backing off after a failure
	Negative                   // a recent permanent failure was served from the negative cache
)

var resultNames = [...]string{"hit", "miss", "coalesced", "refresh_ahead", "negative"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// Defaults for zero Config fields.
const (
	DefaultSize         = 100000
	DefaultRefreshAhead = 60 * time.Second
	DefaultNegativeTTL  = 10 * time.Second
	DefaultFetchTimeout = 30 * time.Second

	maxRefreshBackoff = 5 * time.Second
)

var (
	// ErrClosed is returned by Get when a fetch would be needed after Close.
	ErrClosed = errors.New("tokencache: cache closed")
	// ErrExpiredToken is returned when fetch returns a token that is already
	// expired (or within ExpiryMargin of it); such a token is not cached.
	ErrExpiredToken = errors.New("tokencache: fetched token is already expired")
)

// PanicError is returned to every waiter when the fetch function panics.
// Its message deliberately omits the panic value, which could hold a secret.
type PanicError struct {
	Value any    // the recovered value; nil if fetch called runtime.Goexit
	Stack []byte // stack of the panicking goroutine
}

func (e *PanicError) Error() string {
	if e.Value == nil {
		return "tokencache: fetch exited without returning"
	}
	return "tokencache: fetch panicked"
}

// Config configures a Cache. Zero values select the defaults.
type Config struct {
	Size int // max entries; 0 means DefaultSize. Tenants or users longer than 65535 bytes are never cached

	// RefreshAhead is the window before a token's effective expiry
	// (Expiry - ExpiryMargin) in which a hit starts a background refresh.
	// 0 means DefaultRefreshAhead; a negative value disables refresh-ahead.
	RefreshAhead time.Duration

	// ExpiryMargin: a token is treated as expired this long before Expiry,
	// so that it does not expire in flight. Default 0.
	ExpiryMargin time.Duration

	// NegativeTTL is how long a permanent failure is cached. 0 means
	// DefaultNegativeTTL; a negative value disables negative caching.
	NegativeTTL time.Duration

	// FetchTimeout bounds one detached fetch (including its retries).
	// 0 means DefaultFetchTimeout.
	FetchTimeout time.Duration

	IsPermanent func(error) bool // which fetch errors are negative-cached; nil = none
	Now         func() time.Time // default time.Now

	// OnEvict is called when an entry is dropped for capacity (not for
	// expiry, Evict or Purge), from the fetch goroutine with no lock held.
	// Optional.
	OnEvict func(Key)
}

// Cache is a concurrency-safe token cache. Create it with New.
type Cache struct {
	fetch       FetchFunc
	now         func() time.Time
	isPermanent func(error) bool
	onEvict     func(Key)
	margin      time.Duration // tokens expiring within margin of now are expired
	window      time.Duration // margin + refresh-ahead: tokens expiring within it get refreshed
	negativeTTL time.Duration
	timeout     time.Duration
	backoff     time.Duration // wait after a failed background refresh

	closeCtx  context.Context // cancelled by Close; cancels every fetch
	closeFunc context.CancelFunc
	wg        sync.WaitGroup // fetch goroutines

	// One lock guards everything. A plain hit needs only the read lock (the
	// table's CLOCK bit is atomic); anything else takes the write lock.
	mu       sync.RWMutex
	tokens   *table
	neg      *simplelru.LRU[Key, negEntry] // nil when negative caching is disabled
	inflight map[Key]*call
	retryAt  map[Key]time.Time // keys whose background refresh failed recently; usually empty
	gen      uint64            // bumped by Purge so older fetches do not repopulate
	closed   bool
}

type negEntry struct {
	err   error
	until time.Time
}

// call is one in-flight fetch; tok and err are written before done closes.
type call struct {
	done    chan struct{}
	tok     Token
	err     error
	gen     uint64
	refresh bool // started by refresh-ahead rather than a miss
	waiters int  // callers blocked on done (guarded by Cache.mu; for tests)
}

// New returns a Cache that obtains tokens with fetch.
func New(cfg Config, fetch FetchFunc) (*Cache, error) {
	if fetch == nil {
		return nil, errors.New("tokencache: nil fetch function")
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("tokencache: negative size %d", cfg.Size)
	}
	if cfg.ExpiryMargin < 0 {
		return nil, fmt.Errorf("tokencache: negative expiry margin %v", cfg.ExpiryMargin)
	}
	if cfg.FetchTimeout < 0 {
		return nil, fmt.Errorf("tokencache: negative fetch timeout %v", cfg.FetchTimeout)
	}
	size := cmpDefault(cfg.Size, DefaultSize)
	ra := cmpDefault(cfg.RefreshAhead, DefaultRefreshAhead)
	c := &Cache{
		fetch:       fetch,
		now:         cfg.Now,
		isPermanent: cfg.IsPermanent,
		onEvict:     cfg.OnEvict,
		margin:      cfg.ExpiryMargin,
		window:      cfg.ExpiryMargin,
		negativeTTL: cmpDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		timeout:     cmpDefault(cfg.FetchTimeout, DefaultFetchTimeout),
		tokens:      newTable(size),
		inflight:    make(map[Key]*call),
		retryAt:     make(map[Key]time.Time),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if ra > 0 {
		c.window += ra
		c.backoff = min(ra/10, maxRefreshBackoff)
	}
	c.closeCtx, c.closeFunc = context.WithCancel(context.Background())
	if c.negativeTTL > 0 {
		var err error
		if c.neg, err = simplelru.NewLRU[Key, negEntry](size, nil); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func cmpDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// removeLocked drops key's token; it reports whether there was one.
func (c *Cache) removeLocked(h uint64, key Key) bool {
	if !c.tokens.remove(h, key) {
		return false
	}
	if len(c.retryAt) > 0 {
		delete(c.retryAt, key)
	}
	return true
}

// Get returns a valid token for key, from the cache or by fetching it.
// If ctx ends while waiting for a fetch, Get returns ctx.Err() at once and
// the fetch carries on for the other waiters and the cache.
func (c *Cache) Get(ctx context.Context, key Key) (Token, Result, error) {
	now := c.now()
	h := c.tokens.hash(key)
	c.mu.RLock()
	if v, exp, ok := c.tokens.lookup(h, key); ok && now.Add(c.window).UnixNano() < exp { // expires after the refresh window
		c.mu.RUnlock()
		return Token{Value: v, Expiry: time.Unix(0, exp)}, Hit, nil
	}
	c.mu.RUnlock()

	c.mu.Lock()
	if v, exp, ok := c.tokens.lookup(h, key); ok {
		tok := Token{Value: v, Expiry: time.Unix(0, exp)}
		if now.Add(c.window).Before(tok.Expiry) { // refreshed meanwhile
			c.mu.Unlock()
			return tok, Hit, nil
		}
		if now.Add(c.margin).Before(tok.Expiry) { // still valid
			c.refreshLocked(ctx, key, now)
			c.mu.Unlock()
			return tok, RefreshAhead, nil
		}
		c.removeLocked(h, key) // expired: never served
	}
	return c.missLocked(ctx, key, now)
}

// refreshLocked starts a background refresh unless one is running, the
// last one failed less than c.backoff ago, or the cache is closed.
func (c *Cache) refreshLocked(ctx context.Context, key Key, now time.Time) {
	if c.closed || c.inflight[key] != nil {
		return
	}
	if t, ok := c.retryAt[key]; ok && now.Before(t) {
		return
	}
	c.startLocked(ctx, key, true)
}

// missLocked is entered with c.mu held and releases it.
func (c *Cache) missLocked(ctx context.Context, key Key, now time.Time) (Token, Result, error) {
	if c.neg != nil {
		if ne, ok := c.neg.Peek(key); ok {
			if now.Before(ne.until) {
				c.mu.Unlock()
				return Token{}, Negative, ne.err
			}
			c.neg.Remove(key)
		}
	}
	res := Coalesced
	cl := c.inflight[key]
	if cl == nil {
		res = Miss
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return Token{}, res, err
		}
		if c.closed {
			c.mu.Unlock()
			return Token{}, res, ErrClosed
		}
		cl = c.startLocked(ctx, key, false)
	}
	cl.waiters++
	c.mu.Unlock()

	select {
	case <-cl.done:
		// finish validated the token at its own clock reading, which may
		// precede ours if we joined just before it published.
		if cl.err == nil && !now.Add(c.margin).Before(cl.tok.Expiry) {
			return Token{}, res, ErrExpiredToken
		}
		return cl.tok, res, cl.err
	case <-ctx.Done():
		return Token{}, res, ctx.Err()
	}
}

func (c *Cache) startLocked(ctx context.Context, key Key, refresh bool) *call {
	cl := &call{done: make(chan struct{}), gen: c.gen, refresh: refresh}
	c.inflight[key] = cl
	c.wg.Add(1)
	go c.run(ctx, key, cl)
	return cl
}

// run performs one fetch on a context that keeps the caller's values
// (trace spans) but not its cancellation, then publishes the result.
func (c *Cache) run(parent context.Context, key Key, cl *call) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), c.timeout)
	defer cancel()
	stop := context.AfterFunc(c.closeCtx, cancel)
	defer stop()

	var tok Token
	var err error = &PanicError{} // kept only if fetch calls runtime.Goexit
	// Deferred so that waiters are released even on runtime.Goexit.
	defer func() { c.finish(key, cl, tok, err) }()
	tok, err = c.safeFetch(ctx, key)
}

func (c *Cache) safeFetch(ctx context.Context, key Key) (tok Token, err error) {
	defer func() {
		if r := recover(); r != nil {
			tok, err = Token{}, &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return c.fetch(ctx, key)
}

func (c *Cache) finish(key Key, cl *call, tok Token, err error) {
	now := c.now()
	if err == nil && !now.Add(c.margin).Before(tok.Expiry) {
		err = ErrExpiredToken
	}
	if err != nil {
		tok = Token{}
	} else {
		// As the table stores it, so misses and hits return equal Tokens.
		tok.Expiry = time.Unix(0, unixNanos(tok.Expiry))
	}
	perm := err != nil && c.neg != nil && c.isPermanent != nil && c.isPermanent(err)
	cl.tok, cl.err = tok, err

	var evicted Key
	didEvict := false
	h := c.tokens.hash(key)
	c.mu.Lock()
	if c.inflight[key] == cl {
		delete(c.inflight, key)
	}
	if cl.gen == c.gen {
		switch {
		case err == nil:
			if evicted, didEvict = c.tokens.put(h, key, tok, now.UnixNano()); didEvict {
				delete(c.retryAt, evicted)
			}
			delete(c.retryAt, key)
			if c.neg != nil {
				c.neg.Remove(key)
			}
		default:
			if perm {
				c.neg.Add(key, negEntry{err: err, until: now.Add(c.negativeTTL)})
			}
			// Only a still-cached key needs the backoff; this keeps
			// retryAt bounded by the cache size.
			if cl.refresh {
				if _, cached := c.tokens.peek(h, key); cached {
					c.retryAt[key] = now.Add(c.backoff)
				}
			}
		}
	}
	c.mu.Unlock()
	// Before releasing waiters, so an eviction is reported by the time the
	// Get that caused it returns.
	if didEvict && c.onEvict != nil {
		c.onEvict(evicted)
	}
	close(cl.done)
}

// Evict drops key's token and any negative entry; it reports whether
// anything was dropped. A fetch in flight for key is not affected.
func (c *Cache) Evict(key Key) bool {
	h := c.tokens.hash(key)
	c.mu.Lock()
	ok := c.removeLocked(h, key)
	if c.neg != nil && c.neg.Remove(key) {
		ok = true
	}
	c.mu.Unlock()
	return ok
}

// EvictTenant drops every token of tenant (offboarding a whole tenant)
// and returns how many it dropped. It walks the whole table under the write
// lock, so it is for operators, not for requests. Negative entries stay:
// they hold no token.
func (c *Cache) EvictTenant(tenant string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var keys []Key
	for i := range c.tokens.slots {
		if s := &c.tokens.slots[i]; s.expiry != 0 {
			if k, _ := c.tokens.arena.view(s.rec); k.Tenant == tenant {
				// view's strings share the arena's bytes: copy them before
				// removals reuse it.
				keys = append(keys, Key{Tenant: strings.Clone(k.Tenant), User: strings.Clone(k.User)})
			}
		}
	}
	for _, k := range keys {
		c.removeLocked(c.tokens.hash(k), k)
	}
	return len(keys)
}

// EvictToken drops key's token only if it is still value, so that a 401 for
// an old token does not evict a fresh one.
func (c *Cache) EvictToken(key Key, value string) bool {
	h := c.tokens.hash(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.tokens.peek(h, key); ok && v == value {
		return c.removeLocked(h, key)
	}
	return false
}

// Purge drops every entry. Fetches already in flight still answer their
// waiters but no longer populate the cache, and new misses start afresh.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens.purge()
	if c.neg != nil {
		c.neg.Purge()
	}
	clear(c.retryAt)
	clear(c.inflight)
	c.gen++
}

// Len returns the number of cached tokens (negative entries excluded).
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tokens.len()
}

// Bytes returns the memory holding the cached tokens: the table and the
// pages of tenant, user and token bytes, including freed entries not yet
// compacted away (at most about a quarter).
func (c *Cache) Bytes() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tokens.bytes()
}

// Close cancels in-flight fetches and waits for their goroutines. Afterwards
// Get still serves cached tokens, but returns ErrClosed where it would fetch.
// Close may be called more than once.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.closeFunc()
	c.wg.Wait()
}
