// Package ratelimit limits how often a key (an identity, a tenant) may do
// something: Events per Window, with a burst of Events, as a GCRA (a token
// bucket kept as one time value per key, exact in integer time). It is plain
// Go, safe for concurrent use, bounded in memory, and takes an injectable
// clock.
package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys bounds the keys a Limiter tracks when Config.MaxKeys is 0.
const DefaultMaxKeys = 100000

// Config configures a Limiter.
type Config struct {
	Events  int              // allowed per Window (and in one burst); 0 disables the limiter
	Window  time.Duration    // > 0
	MaxKeys int              // keys tracked at most; 0 means DefaultMaxKeys
	Now     func() time.Time // default time.Now
}

// Limiter is a per-key rate limiter. A nil *Limiter allows everything.
type Limiter struct {
	id       uint64 // lock order for AllowAll
	interval time.Duration
	tau      time.Duration // burst tolerance: Window - interval
	maxKeys  int
	now      func() time.Time

	mu  sync.Mutex
	tat map[string]time.Time // theoretical arrival time per key
}

var ids atomic.Uint64

// New returns a Limiter, or nil (allow everything) when cfg.Events is 0.
func New(cfg Config) (*Limiter, error) {
	switch {
	case cfg.Events < 0:
		return nil, fmt.Errorf("ratelimit: events %d is negative", cfg.Events)
	case cfg.Events == 0:
		return nil, nil
	case cfg.Window <= 0:
		return nil, errors.New("ratelimit: the window must be positive")
	case cfg.MaxKeys < 0:
		return nil, fmt.Errorf("ratelimit: max keys %d is negative", cfg.MaxKeys)
	}
	interval := cfg.Window / time.Duration(cfg.Events)
	if interval <= 0 {
		return nil, fmt.Errorf("ratelimit: %d events per %v is too many", cfg.Events, cfg.Window)
	}
	l := &Limiter{
		id:       ids.Add(1),
		interval: interval,
		tau:      interval * time.Duration(cfg.Events-1),
		maxKeys:  cmp.Or(cfg.MaxKeys, DefaultMaxKeys),
		now:      cfg.Now,
		tat:      map[string]time.Time{},
	}
	if l.now == nil {
		l.now = time.Now
	}
	return l, nil
}

// Allow takes one event for key. When refused, retryAfter is how long until
// one would be allowed.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	ok, retryAfter, _ = AllowAll(Check{l, key})
	return ok, retryAfter
}

// Len is the number of keys tracked.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tat)
}

// Check names one key of one limiter.
type Check struct {
	L   *Limiter // nil: no limit
	Key string
}

// AllowAll takes one event from every check's bucket, or from none: when
// any refuses, nothing is spent, retryAfter is the longest wait among the
// refusals and refusedBy the index in checks of the check that imposes it
// (-1 when allowed). Nil limiters are skipped.
func AllowAll(checks ...Check) (ok bool, retryAfter time.Duration, refusedBy int) {
	active := make([]Check, 0, len(checks))
	index := make([]int, 0, len(checks))
	for i, c := range checks {
		if c.L != nil {
			active = append(active, c)
			index = append(index, i)
		}
	}
	refusedBy = -1
	if len(active) == 0 {
		return true, 0, refusedBy
	}
	locked := slices.Clone(active)
	slices.SortFunc(locked, func(a, b Check) int { return cmp.Compare(a.L.id, b.L.id) })
	locked = slices.CompactFunc(locked, func(a, b Check) bool { return a.L == b.L })
	for _, c := range locked {
		c.L.mu.Lock()
	}
	defer func() {
		for _, c := range locked {
			c.L.mu.Unlock()
		}
	}()

	next := make([]time.Time, len(active))
	for i, c := range active {
		now := c.L.now()
		tat := c.L.tat[c.Key]
		if tat.Before(now) {
			tat = now
		}
		if wait := tat.Sub(now) - c.L.tau; wait > 0 {
			if wait > retryAfter {
				retryAfter, refusedBy = wait, index[i]
			}
			continue
		}
		next[i] = tat.Add(c.L.interval)
	}
	if retryAfter > 0 {
		return false, retryAfter, refusedBy
	}
	for i, c := range active {
		c.L.store(c.Key, next[i])
	}
	return true, 0, -1
}

// store records key's new arrival time, making room first when the key is
// new and the limiter is full: keys whose bucket has refilled (their state
// is the same as none) go first, then any, down to 3/4 of the bound so that
// the sweep is paid for by the many inserts after it. Called with mu held.
func (l *Limiter) store(key string, tat time.Time) {
	if _, ok := l.tat[key]; !ok && len(l.tat) >= l.maxKeys {
		now := l.now()
		for k, t := range l.tat {
			if !t.After(now) {
				delete(l.tat, k)
			}
		}
		for k := range l.tat {
			if len(l.tat) < l.maxKeys*3/4+1 {
				break
			}
			delete(l.tat, k)
		}
	}
	l.tat[key] = tat
}
