package budget

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limit is at most Requests requests in any span of Per.
type Limit struct {
	Requests int
	Per      time.Duration
}

// Off reports whether the limit is not set (no limit).
func (l Limit) Off() bool { return l.Requests <= 0 || l.Per <= 0 }

func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return fmt.Sprintf("%d/%s", l.Requests, l.Per)
}

// ParseLimit parses "<requests>/<duration>" such as "60/1m" or "20/2s".
// parseDuration reads the duration (for example caddy.ParseDuration, which
// also knows "d"); nil uses time.ParseDuration.
func ParseLimit(s string, parseDuration func(string) (time.Duration, error)) (Limit, error) {
	if parseDuration == nil {
		parseDuration = time.ParseDuration
	}
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Limit{}, fmt.Errorf("limit %q: want <requests>/<duration>, such as 60/1m", s)
	}
	requests, err := strconv.Atoi(n)
	if err != nil || requests <= 0 {
		return Limit{}, fmt.Errorf("limit %q: requests must be a positive integer", s)
	}
	d, err := parseDuration(per)
	if err != nil {
		return Limit{}, fmt.Errorf("limit %q: %v", s, err)
	}
	if d <= 0 {
		return Limit{}, errors.New("limit " + strconv.Quote(s) + ": duration must be positive")
	}
	return Limit{Requests: requests, Per: d}, nil
}

// window is a sliding log of the grants of one limit: a grant is allowed
// when fewer than Requests grants happened in the last Per (plus a safety
// margin). A sliding log is stricter than any fixed window of the same
// length, so it stays inside Zapier's limit however Zapier counts.
//
// Grants are also paced (GCRA) when burst is below the limit: after burst
// grants at once, one per Per/Requests. Unpaced, a saturated window refills
// in bursts as the previous window's grants expire, and each burst goes to
// the tenants that happen to be queued at that instant; paced, a tenant
// that arrives finds its turn within a short wait.
type window struct {
	limit        Limit
	span         time.Duration // limit.Per plus the safety margin
	times        []time.Time   // ring of the last grants, oldest at head
	head, n      int
	blockedUntil time.Time // after a 429: nothing before this

	interval time.Duration // Per/Requests
	burst    int           // the limit: no pacing
	tat      time.Time     // GCRA theoretical arrival time of the next grant
}

func newWindow(l Limit, margin time.Duration, burst int) *window {
	if burst <= 0 || burst > l.Requests {
		burst = l.Requests
	}
	return &window{limit: l, span: l.Per + margin, times: make([]time.Time, l.Requests),
		interval: l.Per / time.Duration(l.Requests), burst: burst}
}

// next is the earliest time at or after now when units more grants fit
// (units is at most the limit).
func (w *window) next(now time.Time, units int) time.Time {
	t := now
	if over := w.n + units - len(w.times); over > 0 {
		// The over-th oldest grant must leave the window first.
		if free := w.times[(w.head+over-1)%len(w.times)].Add(w.span); free.After(t) {
			t = free
		}
	}
	if w.blockedUntil.After(t) {
		t = w.blockedUntil
	}
	if w.burst < w.limit.Requests {
		if paced := w.tat.Add(time.Duration(units-w.burst) * w.interval); paced.After(t) {
			t = paced
		}
	}
	return t
}

// take records a grant at t (t must not be before earlier grants).
func (w *window) take(t time.Time) {
	w.tat = later(w.tat, t).Add(w.interval)
	if w.n == len(w.times) {
		w.times[w.head] = t
		w.head = (w.head + 1) % len(w.times)
		return
	}
	w.times[(w.head+w.n)%len(w.times)] = t
	w.n++
}

// used counts the grants inside the span ending at now.
func (w *window) used(now time.Time) int {
	c := 0
	for i := range w.n {
		if w.times[(w.head+i)%len(w.times)].Add(w.span).After(now) {
			c++
		}
	}
	return c
}

// since lists the grants inside the span ending at now, oldest first.
func (w *window) since(now time.Time) []time.Time {
	var out []time.Time
	for i := range w.n {
		if t := w.times[(w.head+i)%len(w.times)]; t.Add(w.span).After(now) {
			out = append(out, t)
		}
	}
	return out
}

// resized returns a window for l holding this one's most recent grants.
func (w *window) resized(l Limit, margin time.Duration) *window {
	burst := w.burst
	if burst >= w.limit.Requests {
		burst = 0 // unpaced stays unpaced
	}
	nw := newWindow(l, margin, min(burst, l.Requests))
	nw.blockedUntil, nw.tat = w.blockedUntil, w.tat
	skip := max(0, w.n-len(nw.times))
	for i := skip; i < w.n; i++ {
		nw.take(w.times[(w.head+i)%len(w.times)])
	}
	return nw
}

func (w *window) clone() *window {
	c := *w
	c.times = append([]time.Time(nil), w.times...)
	return &c
}
