package fakezapier

// The documented Workflow API rate limits (zapier-api.md §4.8): per client
// IP and per partner, a fixed number of /v2 requests per window; past either,
// 429 and a cooldown. Every /v2 route goes through throttled (api.go calls it
// before authentication and routing).

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimits configure the Workflow API rate limits: at most PerIP requests
// per Window from one client address and PerPartner per Window with the
// partner's tokens; past either, every such request is answered 429 with
// Retry-After until Cooldown has passed. Zero limits are off.
type RateLimits struct {
	PerIP, PerPartner int
	Window            time.Duration // default 1 minute
	Cooldown          time.Duration // default 60 seconds
}

// DocumentedRateLimits are Zapier's documented limits (zapier-api.md §4.8).
var DocumentedRateLimits = RateLimits{PerIP: 60, PerPartner: 150, Window: time.Minute, Cooldown: 60 * time.Second}

// Scaled returns l with Window and Cooldown divided by factor (values below
// 1 are taken as 1), so demos and benchmarks hit the same counts faster:
// DocumentedRateLimits.Scaled(60) allows 60 requests per IP per second with
// a 1 s cooldown. Zero durations take their defaults first.
func (l RateLimits) Scaled(factor float64) RateLimits {
	l = l.withDefaults()
	if !(factor > 1) { // also catches NaN
		return l
	}
	l.Window = time.Duration(float64(l.Window) / factor)
	l.Cooldown = time.Duration(float64(l.Cooldown) / factor)
	return l
}

func (l RateLimits) withDefaults() RateLimits {
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	if l.Cooldown <= 0 {
		l.Cooldown = 60 * time.Second
	}
	return l
}

// Per-IP buckets are swept once there are this many, so a load test from
// many addresses does not grow the map without bound.
const maxRateBuckets = 4096

// rateState is the Server's rate-limit state; the zero value has the limits
// off. It has its own lock and takes no other lock while holding it.
type rateState struct {
	mu             sync.Mutex
	limits         RateLimits
	perIP          map[string]*rateBucket
	partner        rateBucket
	throttled      int // since ResetCounts
	throttledTotal int // since New (ActionStats.Throttled)
}

type rateBucket struct {
	hits          []time.Time
	cooldownUntil time.Time
}

// SetRateLimits sets (or, with the zero value, turns off) the /v2 rate
// limits and forgets the requests counted so far. They are off by default
// unless Config.RateLimits says otherwise; DocumentedRateLimits are Zapier's.
func (s *Server) SetRateLimits(l RateLimits) {
	rs := &s.rate
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.limits = l.withDefaults()
	rs.perIP = nil
	rs.partner = rateBucket{}
}

// ThrottledCount returns how many requests the rate limits answered 429
// since New or the last ResetCounts. Injected faults never count here.
func (s *Server) ThrottledCount() int {
	s.rate.mu.Lock()
	defer s.rate.mu.Unlock()
	return s.rate.throttled
}

// throttled applies the rate limits to one /v2 request and answers 429 when
// it is over them. A request counts against the partner when it carries a
// token this server issued.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, partner bool) bool {
	now := s.now()
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	rs := &s.rate
	rs.mu.Lock()
	l := rs.limits
	var wait time.Duration
	var limit int
	if l.PerIP > 0 {
		if rs.perIP == nil {
			rs.perIP = map[string]*rateBucket{}
		}
		b := rs.perIP[ip]
		if b == nil {
			if len(rs.perIP) >= maxRateBuckets {
				rs.sweepLocked(now)
			}
			b = new(rateBucket)
			rs.perIP[ip] = b
		}
		if d := b.take(now, l.PerIP, l); d > wait {
			wait, limit = d, l.PerIP
		}
	}
	if l.PerPartner > 0 && partner {
		if d := rs.partner.take(now, l.PerPartner, l); d > wait {
			wait, limit = d, l.PerPartner
		}
	}
	if wait > 0 {
		rs.throttled++
		rs.throttledTotal++
	}
	rs.mu.Unlock()
	if wait == 0 {
		return false
	}
	secs := int(math.Ceil(wait.Seconds()))
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(wait).Unix(), 10))
	s.logf("fakezapier: /v2 request throttled for %ds", secs)
	writeAPIError(w, http.StatusTooManyRequests, "throttled", "Throttled",
		fmt.Sprintf("Request was throttled. Expected available in %d seconds.", secs), nil)
	return true
}

// sweepLocked drops the buckets that no longer constrain anything.
func (rs *rateState) sweepLocked(now time.Time) {
	for ip, b := range rs.perIP {
		if !now.Before(b.cooldownUntil) && (len(b.hits) == 0 || !b.hits[len(b.hits)-1].After(now.Add(-rs.limits.Window))) {
			delete(rs.perIP, ip)
		}
	}
}

// take counts one request; it returns the cooldown left when the request is
// over the limit (0 when it may proceed).
func (b *rateBucket) take(now time.Time, limit int, l RateLimits) time.Duration {
	if now.Before(b.cooldownUntil) {
		return b.cooldownUntil.Sub(now)
	}
	cut := 0
	for cut < len(b.hits) && !b.hits[cut].After(now.Add(-l.Window)) {
		cut++
	}
	b.hits = append(b.hits[:0], b.hits[cut:]...)
	if len(b.hits) >= limit {
		b.hits = b.hits[:0]
		b.cooldownUntil = now.Add(l.Cooldown)
		return l.Cooldown
	}
	b.hits = append(b.hits, now)
	return 0
}
