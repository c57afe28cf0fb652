package mcpgateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The decrypted token records are kept in memory, so a tool call costs no
// storage round trip and no decryption in steady state. What may make a
// cached record wrong, and what happens then:
//
//   - This gateway refreshes, saves or forgets it: the cache is updated
//     under the record's lock, like the storage.
//   - Another gateway sharing the storage does: it publishes the record's
//     storage key on the Invalidations (Redis pub/sub with the zapier
//     app's cache.redis), and every other gateway drops its copy at once.
//     Without Invalidations (or while they are down) a copy is used for
//     CacheTTL at most.
//   - Zapier refuses the token (401): Refresh reads the storage under the
//     lock, as before: a token another gateway already replaced is picked
//     up there without a refresh.
//
// Only records are cached, not their absence: a user who has not
// authorized an app costs a storage read per request, as before.

// DefaultTokenCacheTTL is how long a gateway uses a cached record without
// a live invalidation channel (another gateway's forget or refresh reaches
// it within this).
const DefaultTokenCacheTTL = 2 * time.Second

// SharedTokenCacheTTL is how long a cached record is used while the
// invalidation channel is live (a bound in case a message is lost).
const SharedTokenCacheTTL = 10 * time.Minute

// Invalidations carry "this record changed" between the gateways sharing
// the token storage.
type Invalidations interface {
	// Publish tells the other gateways that the record under key changed.
	Publish(ctx context.Context, key string) error
	// Listen runs until ctx ends, calling changed(key) for each key
	// another gateway published, and live(true) once it receives them,
	// live(false) when it may miss some (the channel broke). Messages sent
	// while it was not live are lost: the cache is emptied on every change
	// of liveness.
	Listen(ctx context.Context, changed func(key string), live func(bool))
}

type cachedRecord struct {
	rec *Record // never modified once cached
	at  time.Time
	key string // the storage key (what invalidations name)
}

// cacheKey names a record in memory without the keyed hash of the
// storage key, which would cost an HMAC per call.
type cacheKey struct {
	id  Identity
	app string
}

// recordCache is the Tokens' in-memory copy of the records.
type recordCache struct {
	ttl  time.Duration // without a live channel
	bus  Invalidations
	live atomic.Bool

	mu      sync.RWMutex
	m       map[cacheKey]cachedRecord
	storage map[string]cacheKey // storage key → m's key
	// gen counts invalidations: a record read from the storage is cached
	// only when none happened during the read (it may be the old one).
	gen uint64

	loads atomic.Int64 // storage reads of Current (tests count them)
	puts  int          // since the last sweep

	stop context.CancelFunc
}

func (c *recordCache) maxAge() time.Duration {
	if c.bus != nil && c.live.Load() {
		return max(c.ttl, SharedTokenCacheTTL)
	}
	return c.ttl
}

func (c *recordCache) get(k cacheKey, now time.Time) (*Record, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[k]
	if ok && now.Sub(e.at) < c.maxAge() {
		return e.rec, c.gen
	}
	return nil, c.gen
}

// putIfCurrent caches rec read from the storage when no invalidation
// happened since gen.
func (c *recordCache) putIfCurrent(k cacheKey, key string, rec *Record, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		c.putLocked(k, key, rec, now)
	}
}

func (c *recordCache) putLocked(k cacheKey, key string, rec *Record, now time.Time) {
	c.m[k] = cachedRecord{rec: rec, at: now, key: key}
	c.storage[key] = k
	if c.puts++; c.puts >= sweepEvery {
		c.sweepLocked(now)
	}
}

// sweepEvery: every so many records cached, the expired ones are dropped,
// so users who stopped calling leave no tokens in memory (beyond the TTL,
// give or take sweepEvery of them).
const sweepEvery = 256

func (c *recordCache) sweepLocked(now time.Time) {
	c.puts = 0
	age := c.maxAge()
	for k, e := range c.m {
		if now.Sub(e.at) >= age {
			delete(c.m, k)
			delete(c.storage, e.key)
		}
	}
}

// size is the number of records cached.
func (c *recordCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

func (c *recordCache) deleteLocked(key string) {
	if k, ok := c.storage[key]; ok {
		delete(c.m, k)
		delete(c.storage, key)
	}
}

// set caches what this gateway just wrote (under the record's lock), or
// drops the key when rec is nil.
func (c *recordCache) set(k cacheKey, key string, rec *Record, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.deleteLocked(key)
	if rec != nil {
		c.putLocked(k, key, rec, now)
	}
}

// drop forgets key, or everything when key is "".
func (c *recordCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if key == "" {
		clear(c.m)
		clear(c.storage)
		return
	}
	c.deleteLocked(key)
}

// EnableCache keeps the records in memory (see recordCache): ttl bounds a
// copy's age without a live invalidation channel (DefaultTokenCacheTTL
// when 0); bus, if set, is listened to until Close. Call it before use.
func (t *Tokens) EnableCache(ttl time.Duration, bus Invalidations) {
	if ttl <= 0 {
		ttl = DefaultTokenCacheTTL
	}
	c := &recordCache{ttl: ttl, bus: bus, m: map[cacheKey]cachedRecord{}, storage: map[string]cacheKey{}}
	if bus != nil {
		ctx, cancel := context.WithCancel(context.Background())
		c.stop = cancel
		go bus.Listen(ctx, c.drop, func(live bool) {
			c.drop("") // what was missed, or cached for longer than ttl
			c.live.Store(live)
		})
	}
	t.cache = c
}

// Close stops listening for invalidations.
func (t *Tokens) Close() {
	if t.cache != nil && t.cache.stop != nil {
		t.cache.stop()
	}
}

// StorageReads counts the storage reads Current made (0 without the
// cache: it is not counted then).
func (t *Tokens) StorageReads() int64 {
	if t.cache == nil {
		return 0
	}
	return t.cache.loads.Load()
}

// changed records this gateway's write of (id, app)'s record (rec nil:
// deleted) in the cache and tells the other gateways.
func (t *Tokens) changed(ctx context.Context, id Identity, app string, rec *Record) {
	c := t.cache
	if c == nil {
		return
	}
	key := t.store.storageKey(id, app)
	c.set(cacheKey{id, app}, key, rec, t.now())
	if c.bus == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if c.bus.Publish(ctx, key) == nil {
		return
	}
	// The channel is down (then the others, most likely, use ttl) or
	// failed once: try again for a while, in the background.
	go func() {
		for range 5 {
			time.Sleep(time.Second)
			if c.bus.Publish(ctx, key) == nil {
				return
			}
		}
	}()
}
