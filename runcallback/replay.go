package runcallback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// ErrReplayed is Spend's answer for a token seen before (within its
// lifetime): answer 409, as for a second delivery of a run.
var ErrReplayed = errors.New("runcallback: callback token already used")

// DefaultReplayPrefix is where spent tokens are recorded in storage.
const DefaultReplayPrefix = "zapier/run-callback-tokens"

// DefaultReplayMemory bounds the tokens a ReplayCache remembers in memory.
const DefaultReplayMemory = 10000

// ReplayStorage is the core's storage interface (a subset of
// certmagic.Storage), so sidecars sharing Caddy's storage share the cache.
type ReplayStorage = gateway.Storage

// ReplayCache refuses a callback token seen before. A token is named by its
// jti or, without one, by the hash of the whole token; it is remembered
// until it expires (it cannot verify after that anyway). The record is
// written create-if-absent under the storage lock, so of two sidecars
// receiving the same token one accepts it. Memory holds at most Max names
// (a shortcut for tokens seen here; storage decides).
type ReplayCache struct {
	Storage ReplayStorage
	Prefix  string           // DefaultReplayPrefix when ""
	Max     int              // DefaultReplayMemory when 0
	Now     func() time.Time // time.Now when nil

	mu     sync.Mutex
	seen   map[string]time.Time // name → expiry
	swept  time.Time
	sweeps sync.Mutex
}

// TokenName is the name a token is remembered by: hex SHA-256 of its jti,
// or of the token when it has none (domain-separated, so a jti can never
// name another token's hash).
func TokenName(c Claims, token string) string {
	h := sha256.New()
	if c.ID != "" {
		h.Write([]byte("jti\x00" + c.ID))
	} else {
		h.Write([]byte("token\x00" + strings.TrimSpace(token)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (c *ReplayCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *ReplayCache) prefix() string {
	if c.Prefix == "" {
		return DefaultReplayPrefix
	}
	return c.Prefix
}

// Spend records the token as used, or returns ErrReplayed if it was used
// before. claims are the token's verified claims.
func (c *ReplayCache) Spend(ctx context.Context, claims Claims, token string) error {
	name := TokenName(claims, token)
	now := c.now()
	c.mu.Lock()
	if exp, ok := c.seen[name]; ok && now.Before(exp) {
		c.mu.Unlock()
		return ErrReplayed
	}
	c.mu.Unlock()

	key := path.Join(c.prefix(), name)
	if err := c.Storage.Lock(ctx, key); err != nil {
		return fmt.Errorf("locking the callback token record: %w", err)
	}
	err := func() error {
		b, err := c.Storage.Load(ctx, key)
		switch {
		case err == nil:
			if exp, perr := strconv.ParseInt(string(b), 10, 64); perr != nil || now.Before(time.Unix(exp, 0)) {
				return ErrReplayed
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("loading the callback token record: %w", err)
		}
		exp := claims.Expiry.Add(DefaultLeeway) // verifiable until exp plus the skew allowed
		if err := c.Storage.Store(ctx, key, []byte(strconv.FormatInt(exp.Unix()+1, 10))); err != nil {
			return fmt.Errorf("recording the callback token: %w", err)
		}
		return nil
	}()
	_ = c.Storage.Unlock(context.WithoutCancel(ctx), key)
	if err != nil && !errors.Is(err, ErrReplayed) {
		return err
	}
	c.remember(name, claims.Expiry.Add(DefaultLeeway), now)
	if err == nil {
		c.maybeSweep(ctx, now)
	}
	return err
}

// Unspend forgets a token Spend recorded, when what it was spent on failed
// for a reason worth a retry (the storage of the result).
func (c *ReplayCache) Unspend(ctx context.Context, claims Claims, token string) error {
	name := TokenName(claims, token)
	c.mu.Lock()
	delete(c.seen, name)
	c.mu.Unlock()
	err := c.Storage.Delete(ctx, path.Join(c.prefix(), name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// remember keeps name in memory, dropping expired names and, when still
// full, the one expiring first.
func (c *ReplayCache) remember(name string, exp, now time.Time) {
	limit := c.Max
	if limit <= 0 {
		limit = DefaultReplayMemory
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]time.Time{}
	}
	if len(c.seen) >= limit {
		for n, e := range c.seen {
			if !now.Before(e) {
				delete(c.seen, n)
			}
		}
	}
	for len(c.seen) >= limit {
		var first string
		var firstExp time.Time
		for n, e := range c.seen {
			if first == "" || e.Before(firstExp) {
				first, firstExp = n, e
			}
		}
		delete(c.seen, first)
	}
	c.seen[name] = exp
}

// Len is how many names memory holds.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// replaySweepEvery is how often, at most, Spend deletes expired records.
const replaySweepEvery = 10 * time.Minute

func (c *ReplayCache) maybeSweep(ctx context.Context, now time.Time) {
	if !c.sweeps.TryLock() {
		return
	}
	defer c.sweeps.Unlock()
	if now.Sub(c.swept) < replaySweepEvery {
		return
	}
	c.swept = now
	c.Sweep(ctx)
}

// Sweep deletes the records of expired tokens.
func (c *ReplayCache) Sweep(ctx context.Context) {
	names, err := c.Storage.List(ctx, c.prefix(), false)
	if err != nil {
		return
	}
	now := c.now()
	for _, k := range names {
		if ctx.Err() != nil {
			return
		}
		b, err := c.Storage.Load(ctx, k)
		if err != nil {
			continue
		}
		if exp, perr := strconv.ParseInt(string(b), 10, 64); perr == nil && !now.Before(time.Unix(exp, 0)) {
			_ = c.Storage.Delete(ctx, k)
		}
	}
}
