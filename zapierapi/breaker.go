package zapierapi

import (
	"sync"
	"time"
)

// Breaker defaults: a few consecutive transient failures open it; it stays
// open briefly at first and longer while Zapier keeps failing.
const (
	DefaultBreakerThreshold = 5
	DefaultBreakerOpen      = 5 * time.Second
	DefaultBreakerMaxOpen   = 60 * time.Second
	// DefaultRateLimitCooldown is Zapier's documented cooldown after a 429,
	// used when the 429 came without a Retry-After.
	DefaultRateLimitCooldown = 60 * time.Second
)

// BreakerConfig tunes a Breaker. Zero values take the defaults.
type BreakerConfig struct {
	Threshold int           // consecutive transient failures that open the breaker
	Open      time.Duration // first open period; doubled after each failed probe
	MaxOpen   time.Duration // cap on the open period
	Now       func() time.Time
	// OnOpen is called (without locks held) each time the breaker opens,
	// with how long it stays open.
	OnOpen func(openFor time.Duration)
}

// Breaker keeps the gateway from hammering Zapier: it fails calls fast while
// Zapier is failing (after Threshold consecutive transient failures) and
// while a 429 cooldown runs. After the open period one probe call is let
// through (half-open); its success closes the breaker, its failure reopens
// it for twice as long.
//
// Use: err := b.Before(); if err != nil { fail fast }; defer b.After(callErr).
// Every Before that returns nil must be matched by one After.
type Breaker struct {
	cfg BreakerConfig

	mu            sync.Mutex
	failures      int       // consecutive transient failures
	openUntil     time.Time // zero when closed
	openFor       time.Duration
	probing       bool // a half-open probe is in flight
	cooldownUntil time.Time
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultBreakerThreshold
	}
	if cfg.Open <= 0 {
		cfg.Open = DefaultBreakerOpen
	}
	if cfg.MaxOpen < cfg.Open {
		cfg.MaxOpen = max(DefaultBreakerMaxOpen, cfg.Open)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Breaker{cfg: cfg}
}

// Before reports whether a call may go to Zapier now. When it may not, the
// error is a KindUnavailable *Error whose RetryAfter says when to try again.
func (b *Breaker) Before() error {
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.cooldownUntil) {
		return unavailable("Zapier rate limit cooldown", b.cooldownUntil.Sub(now))
	}
	if b.openUntil.IsZero() {
		return nil
	}
	if now.Before(b.openUntil) {
		return unavailable("circuit breaker open", b.openUntil.Sub(now))
	}
	if b.probing {
		// Half-open: one probe at a time; the others wait for its outcome.
		return unavailable("circuit breaker half-open", time.Second)
	}
	b.probing = true
	return nil
}

// After records the outcome of a call that Before allowed.
func (b *Breaker) After(err error) {
	now := b.cfg.Now()
	var opened time.Duration
	b.mu.Lock()
	wasProbe := b.probing
	b.probing = false
	switch kind := errorKind(err); {
	case err == nil || kind == KindRejected:
		// Zapier answered: it is up, whatever it thought of the request.
		b.failures, b.openUntil, b.openFor = 0, time.Time{}, 0
	case kind == KindRateLimited:
		retry := DefaultRateLimitCooldown
		if zerr, ok := AsError(err); ok && zerr.RetryAfter > 0 {
			retry = zerr.RetryAfter
		}
		if until := now.Add(retry); until.After(b.cooldownUntil) {
			b.cooldownUntil = until
		}
	case kind == KindUnavailable:
		// Not a call to Zapier: nothing learnt.
	default: // transient: failed, timed out, or not classified
		b.failures++
		switch {
		case wasProbe:
			b.openFor = min(2*b.openFor, b.cfg.MaxOpen)
		case b.failures >= b.cfg.Threshold && b.openUntil.IsZero():
			b.openFor = b.cfg.Open
		default:
			b.mu.Unlock()
			return
		}
		b.openUntil = now.Add(b.openFor)
		opened = b.openFor
	}
	b.mu.Unlock()
	if opened > 0 && b.cfg.OnOpen != nil {
		b.cfg.OnOpen(opened)
	}
}

// State is "closed", "open", "half_open" or "cooling_down" (after a 429).
func (b *Breaker) State() string {
	now := b.cfg.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case now.Before(b.cooldownUntil):
		return "cooling_down"
	case b.openUntil.IsZero():
		return "closed"
	case now.Before(b.openUntil):
		return "open"
	}
	return "half_open"
}

func errorKind(err error) Kind {
	if err == nil {
		return 0
	}
	if zerr, ok := AsError(err); ok {
		return zerr.Kind
	}
	return KindFailed
}

func unavailable(why string, retryAfter time.Duration) *Error {
	return &Error{Kind: KindUnavailable, Description: why, RetryAfter: retryAfter}
}
