// Package sharedtokens is an optional second token tier in Redis, shared by
// every gateway of one partner, in front of the token exchange.
//
// Each gateway keeps its own in-memory cache (package tokencache); this tier
// is that cache's fetch path. A gateway that misses locally looks in Redis
// first. When Redis has no fresh token for the identity, one gateway takes a
// lease (SET NX PX) and exchanges; the others wait for its token to appear,
// bounded by Config.Wait, then exchange on their own. Every lease carries a
// fencing token (INCR); a Lua script stores a token only if its fence is
// newer than the stored one, so a lease holder that stalled past its lease
// can never overwrite a newer token.
//
// Redis sees no identity and no token: keys are an HMAC of (tenant, user)
// and values are sealed with AES-256-GCM, both keyed from Config.Key.
//
// Redis is an optimisation, never a dependency: every operation has a short
// timeout, and after a failure the tier is skipped (each gateway exchanges
// on its own) for Config.Backoff before Redis is tried again.
package sharedtokens

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// Defaults for zero Config fields.
const (
	DefaultPrefix    = "zapier:"
	DefaultTimeout   = 250 * time.Millisecond
	DefaultLeaseTTL  = 10 * time.Second
	DefaultMinFresh  = 65 * time.Second
	DefaultBackoff   = time.Second
	KeySize          = 32 // bytes of Config.Key
	fenceTTL         = 24 * time.Hour
	firstPoll        = 20 * time.Millisecond
	maxPoll          = 250 * time.Millisecond
	defaultPurgeScan = 500
)

// Config configures a Tier.
type Config struct {
	// URL of the Redis server: redis://[user:password@]host:port/db,
	// rediss://… for TLS, or unix:///path/to/socket. Required.
	URL string
	// Key is 32 secret bytes shared by every gateway using this Redis; it
	// keys the identity HMAC and the AES-GCM sealing of tokens. Required.
	Key []byte
	// Namespace separates gateways that share one Redis but not their
	// credentials (tokens of one Zapier client are useless to another).
	// It enters every key's HMAC; it is not stored.
	Namespace string
	// Prefix of every Redis key. Default "zapier:".
	Prefix string
	// Timeout of one Redis operation. Default 250ms.
	Timeout time.Duration
	// LeaseTTL is how long a gateway holds the right to exchange for one
	// identity. Default 10s.
	LeaseTTL time.Duration
	// Wait bounds how long a cold gateway waits for another gateway's
	// exchange before it exchanges itself. Default LeaseTTL.
	Wait time.Duration
	// MinFresh: a stored token is used only while more than this (or half
	// its lifetime, if that is less) is left, so that a gateway refreshing
	// ahead of expiry gets a newer token rather than the one it is
	// replacing. Default 65s.
	MinFresh time.Duration
	// Backoff: after a Redis failure, the tier is skipped this long.
	// Default 1s.
	Backoff time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnAvailability, if set, is called when Redis becomes unavailable (with
	// the error) and when it answers again (with nil). The error never holds
	// the key, and go-redis does not put the URL's password in errors.
	OnAvailability func(available bool, err error)
	// OnError, if set, receives problems that do not stop the tier, such as
	// a stored value that does not decrypt (a gateway with another Key).
	OnError func(error)
}

// Outcome tells how Fetch obtained its answer; it is meant for metrics.
type Outcome uint8

const (
	Shared              Outcome = iota // a fresh token was already in Redis
	Waited                             // another gateway exchanged while this one waited
	Exchanged                          // this gateway held the lease and exchanged
	FallbackUnavailable                // Redis failed or is backing off: exchanged without it
	FallbackTimeout                    // the lease holder published nothing within Wait: exchanged alone
)

// Outcomes lists every Outcome, for metrics that show all series at zero.
var Outcomes = []Outcome{Shared, Waited, Exchanged, FallbackUnavailable, FallbackTimeout}

var outcomeNames = [...]string{"shared", "waited", "exchanged", "fallback_unavailable", "fallback_timeout"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Tier is the shared token tier. It is safe for concurrent use.
type Tier struct {
	cfg    Config
	client *redis.Client
	keys   keyring
	ns     string // per-namespace part of every Redis key

	downUntil atomic.Int64 // unix nanoseconds; Redis is skipped before it
	down      atomic.Bool  // last known state, for OnAvailability transitions
}

// New checks cfg and builds the Redis client. It does no I/O: the client
// connects on first use.
func New(cfg Config) (*Tier, error) {
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("sharedtokens: key must be %d bytes, got %d", KeySize, len(cfg.Key))
	}
	cfg.Prefix = cmp.Or(cfg.Prefix, DefaultPrefix)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.Wait = cmp.Or(cfg.Wait, cfg.LeaseTTL)
	cfg.MinFresh = cmp.Or(cfg.MinFresh, DefaultMinFresh)
	cfg.Backoff = cmp.Or(cfg.Backoff, DefaultBackoff)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout < 0 || cfg.LeaseTTL < 0 || cfg.Wait < 0 || cfg.MinFresh < 0 || cfg.Backoff < 0 {
		return nil, errors.New("sharedtokens: durations must not be negative")
	}

	client, err := NewClient(cfg.URL, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	t := &Tier{cfg: cfg, client: client, keys: newKeyring(cfg.Key)}
	t.ns = t.keys.namespaceTag(cfg.Namespace)
	return t, nil
}

// NewClient builds a Redis client for url that fails fast: one dial
// attempt, no command retries, every wait bounded by timeout. A slow Redis
// must cost a request no more than timeout per operation. It does no I/O.
func NewClient(url string, timeout time.Duration) (*redis.Client, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// The URL may hold a password: never repeat it or url.Parse's error.
		return nil, errors.New("sharedtokens: malformed Redis URL (want redis://, rediss:// or unix://)")
	}
	timeout = cmp.Or(timeout, DefaultTimeout)
	opts.DialTimeout = timeout
	opts.DialerRetries = 1
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.PoolTimeout = timeout
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(opts), nil
}

// Close closes the Redis client.
func (t *Tier) Close() error { return t.client.Close() }

// Fetch returns a token for key: a fresh one from Redis, the one another
// gateway is exchanging (waiting at most Config.Wait), or one from exchange.
// exchange is called at most once. Redis trouble is never an error: the
// tier falls back to exchange. An error comes from exchange alone.
func (t *Tier) Fetch(ctx context.Context, key tokencache.Key, exchange tokencache.FetchFunc) (tokencache.Token, Outcome, error) {
	if !t.Available() {
		return t.fallback(ctx, key, exchange)
	}
	e := t.entry(key)
	waitUntil := t.cfg.Now().Add(t.cfg.Wait)
	poll := firstPoll
	for waited := false; ; waited = true {
		snap, err := t.load(ctx, e)
		if err != nil {
			return t.fallback(ctx, key, exchange)
		}
		if snap.found && t.fresh(snap.stored) {
			if waited {
				return snap.Token, Waited, nil
			}
			return snap.Token, Shared, nil
		}
		fence, err := t.acquire(ctx, e, snap.fence)
		if err != nil {
			return t.fallback(ctx, key, exchange)
		}
		if fence > 0 {
			tok, err := t.lead(ctx, key, e, fence, exchange)
			return tok, Exchanged, err
		}

		// Another gateway holds the lease, or published since the load:
		// wait for its token until waitUntil.
		left := waitUntil.Sub(t.cfg.Now())
		if left <= 0 {
			tok, err := exchange(ctx, key)
			return tok, FallbackTimeout, err
		}
		if fence == publishedMeanwhile {
			continue // look again at once
		}
		if !sleepCtx(ctx, min(poll, left)) {
			tok, err := exchange(ctx, key)
			return tok, FallbackTimeout, err
		}
		poll = min(2*poll, maxPoll)
	}
}

// lead exchanges under the lease and publishes the token with its fence.
// Publishing and releasing outlive a cancelled ctx so the lease is not left
// to expire on its own.
func (t *Tier) lead(ctx context.Context, key tokencache.Key, e entry, fence int64, exchange tokencache.FetchFunc) (tokencache.Token, error) {
	obtained := t.cfg.Now()
	tok, err := exchange(ctx, key)
	bg := context.WithoutCancel(ctx)
	if err != nil || !tok.Expiry.After(t.cfg.Now()) {
		t.op(bg, func(ctx context.Context) error {
			return releaseScript.Run(ctx, t.client, []string{e.lease}, fence).Err()
		})
		return tok, err
	}
	sealed, err := t.keys.seal(t.binding(e, fence), stored{Token: tok, Obtained: obtained})
	if err != nil {
		return tok, nil // cannot happen with a valid key; the caller still has its token
	}
	t.op(bg, func(ctx context.Context) error {
		return publishScript.Run(ctx, t.client, []string{e.tok, e.lease}, fence, sealed,
			t.keys.fingerprint(e.id, tok.Value), tok.Expiry.UnixMilli()).Err()
	})
	return tok, nil
}

// Forget removes key's token from Redis if it is still value (say, Zapier
// answered 401 to it), so the next fetch does not bring it back. The fence
// stays, so a stalled lease holder still cannot publish an older token.
func (t *Tier) Forget(ctx context.Context, key tokencache.Key, value string) {
	if !t.Available() {
		return
	}
	e := t.entry(key)
	t.op(ctx, func(ctx context.Context) error {
		return forgetScript.Run(ctx, t.client, []string{e.tok}, t.keys.fingerprint(e.id, value)).Err()
	})
}

// Evict removes key's token from Redis whatever it is.
func (t *Tier) Evict(ctx context.Context, key tokencache.Key) {
	if !t.Available() {
		return
	}
	e := t.entry(key)
	t.op(ctx, func(ctx context.Context) error {
		return t.client.HDel(ctx, e.tok, fieldData, fieldFingerprint).Err()
	})
}

// Purge removes every token of this namespace from Redis and returns how
// many it removed. It scans, so it is for operators, not for requests.
func (t *Tier) Purge(ctx context.Context) (int, error) {
	match := escapeGlob(t.cfg.Prefix+t.ns) + ":*:tok"
	n := 0
	iter := t.client.Scan(ctx, 0, match, defaultPurgeScan).Iterator()
	for iter.Next(ctx) {
		removed, err := t.client.HDel(ctx, iter.Val(), fieldData, fieldFingerprint).Result()
		if err != nil {
			return n, fmt.Errorf("sharedtokens: purging: %w", err)
		}
		if removed > 0 {
			n++
		}
	}
	if err := iter.Err(); err != nil {
		return n, fmt.Errorf("sharedtokens: purging: %w", err)
	}
	return n, nil
}

// Available reports whether the tier is in use: Redis answered the last
// time it was asked, or the backoff after a failure is over.
func (t *Tier) Available() bool {
	return t.cfg.Now().UnixNano() >= t.downUntil.Load()
}

// fallback exchanges without Redis, which just failed (op recorded it).
func (t *Tier) fallback(ctx context.Context, key tokencache.Key, exchange tokencache.FetchFunc) (tokencache.Token, Outcome, error) {
	tok, err := exchange(ctx, key)
	return tok, FallbackUnavailable, err
}

// op runs one Redis operation bounded by Config.Timeout and records whether
// Redis answered. A caller that went away is not Redis's fault.
func (t *Tier) op(ctx context.Context, f func(context.Context) error) error {
	opCtx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	err := f(opCtx)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	switch {
	case err == nil:
		if t.down.CompareAndSwap(true, false) && t.cfg.OnAvailability != nil {
			t.cfg.OnAvailability(true, nil)
		}
	case ctx.Err() != nil, errors.Is(err, redis.ErrClosed):
		// The caller went away, or this tier was closed (a config reload
		// replaced it): not Redis's fault.
	default:
		t.downUntil.Store(t.cfg.Now().Add(t.cfg.Backoff).UnixNano())
		if t.down.CompareAndSwap(false, true) && t.cfg.OnAvailability != nil {
			t.cfg.OnAvailability(false, err)
		}
	}
	return err
}

// snapshot is what load saw of an identity's stored token.
type snapshot struct {
	stored
	found bool  // a token that opened
	fence int64 // the fence it was published with; 0 if none
}

// load reads and opens key's stored token and its fence. A value that does
// not open is reported to OnError and treated as absent: the next publish
// replaces it.
func (t *Tier) load(ctx context.Context, e entry) (snapshot, error) {
	var vals []any
	err := t.op(ctx, func(ctx context.Context) error {
		var err error
		vals, err = t.client.HMGet(ctx, e.tok, fieldData, fieldFence).Result()
		return err
	})
	if err != nil || len(vals) != 2 {
		return snapshot{}, err
	}
	var snap snapshot
	if f, ok := vals[1].(string); ok {
		snap.fence, _ = strconv.ParseInt(f, 10, 64)
	}
	data, _ := vals[0].(string)
	if data == "" {
		return snap, nil
	}
	s, err := t.keys.open(t.binding(e, snap.fence), []byte(data))
	if err != nil {
		if t.cfg.OnError != nil {
			t.cfg.OnError(err)
		}
		return snap, nil
	}
	snap.stored, snap.found = s, true
	return snap, nil
}

// publishedMeanwhile is what acquire answers when a token was published
// after the load that found none fresh.
const publishedMeanwhile = -1

// acquire takes the lease for e and returns its fence, 0 when another
// gateway holds it, or publishedMeanwhile when the stored fence is no
// longer seen (the load's): a gateway that found no fresh token must not
// exchange if one was published since.
func (t *Tier) acquire(ctx context.Context, e entry, seen int64) (int64, error) {
	var fence int64
	err := t.op(ctx, func(ctx context.Context) error {
		var err error
		fence, err = acquireScript.Run(ctx, t.client, []string{e.lease, e.fence, e.tok},
			t.cfg.LeaseTTL.Milliseconds(), fenceTTL.Milliseconds(), seen).Int64()
		return err
	})
	return fence, err
}

// fresh reports whether a stored token is worth using instead of
// exchanging: more than MinFresh left, or half its lifetime for tokens
// shorter than 2×MinFresh.
func (t *Tier) fresh(s stored) bool {
	left := s.Token.Expiry.Sub(t.cfg.Now())
	return left > min(t.cfg.MinFresh, s.Token.Expiry.Sub(s.Obtained)/2)
}

// entry names key's Redis keys. The {id} hash tag keeps them in one Redis
// Cluster slot, as the scripts require.
type entry struct {
	id                string
	tok, lease, fence string
}

// binding binds a sealed value to this tier's namespace, e's identity and fence.
func (t *Tier) binding(e entry, fence int64) binding {
	return binding{namespace: t.cfg.Namespace, id: e.id, fence: fence}
}

func (t *Tier) entry(key tokencache.Key) entry {
	id := t.keys.identity(key)
	base := t.cfg.Prefix + t.ns + ":{" + id + "}:"
	return entry{id: id, tok: base + "tok", lease: base + "lease", fence: base + "fence"}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// escapeGlob escapes Redis glob metacharacters.
func escapeGlob(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}
