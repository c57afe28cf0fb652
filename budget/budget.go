// Package budget spends Zapier's documented request allowance deliberately:
// at most PerIP requests per window from this process (Zapier's per-IP
// limit) and at most Partner requests per window across every process of the
// partner (Zapier's per-partner limit, optionally shared through Redis), so
// the gateway never draws the 429 that starts Zapier's 60-second cooldown.
//
// A request that finds no room waits in a queue that serves first the
// tenants granted the least in the last window (see fairQueue), so a tenant
// sending ten times another's load cannot push the other below its fair
// share, even when the other is not waiting at every instant. A request
// whose wait would pass MaxWait is refused at once with the time the budget
// would have had room for it, and one that waited MaxWait without its turn
// coming is refused then.
package budget

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Reasons a request was refused (ExhaustedError.Reason, Observer.Shed).
const (
	ShedQueueFull = "queue_full" // its wait would pass MaxWait
	ShedDeadline  = "deadline"   // it waited MaxWait without its turn coming
	ShedCooldown  = "cooldown"   // Zapier answered 429: nothing goes out until the cooldown ends
	ShedCanceled  = "canceled"   // the caller went away while queued
	ShedClosed    = "closed"     // the budget was closed (config unloaded)
)

// Partner window modes (Snapshot.PartnerMode).
const (
	ModeLocal    = "local"    // no shared store: this process's own count
	ModeShared   = "shared"   // drawn atomically from the shared store
	ModeFallback = "fallback" // shared store unreachable: this process's share
)

// ExhaustedError is returned when a request gets no budget within MaxWait.
type ExhaustedError struct {
	// RetryAfter is when the budget has room again, by its own estimate.
	RetryAfter time.Duration
	Reason     string
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("Zapier request budget exhausted (%s); room again in %s", e.Reason, e.RetryAfter.Round(time.Millisecond))
}

// Observer receives the budget's outcomes (for metrics). Calls are made
// without locks held and must not block.
type Observer interface {
	Granted(waited time.Duration)
	Shed(reason string)
	// SharedAvailable reports the shared store going away (false) or
	// coming back (true).
	SharedAvailable(ok bool, err error)
}

// Config configures a Budget.
type Config struct {
	// PerIP limits this process (Zapier counts per client address).
	PerIP Limit
	// Partner limits every process of the partner together. Without
	// Shared each process enforces it alone, which is right for one
	// process; with Shared it is drawn from one count.
	Partner Limit
	// MaxWait is the longest a request waits for room. 0 never waits.
	MaxWait time.Duration
	// Burst paces the local windows: at most Burst grants at once, then
	// one per Per/Requests. 0 (or the limit) does not pace.
	Burst int
	// Margin lengthens every window, so requests granted at the edge of a
	// window cannot reach Zapier inside the previous one after network
	// delay. Default (0): a fiftieth of the window, at least 250ms (the
	// spread between a request on a warm connection and one that must
	// connect first); negative: none.
	Margin time.Duration
	// Shared, when set, holds the partner window for every process.
	Shared Shared
	// SharedTimeout bounds one call to Shared. Default 250ms.
	SharedTimeout time.Duration
	// ProbeEvery is how often a process whose shared store failed tries it
	// again. Default 1s.
	ProbeEvery time.Duration
	// HeartbeatEvery is how often the process announces itself to the
	// shared store and learns how many processes share the partner limit
	// (its fallback share is Partner divided by that). Default a quarter
	// of the partner window, between 100ms and 5s.
	HeartbeatEvery time.Duration
	Clock          Clock
	Observer       Observer

	// manual leaves dispatch to the caller (due and grant): simulations
	// drive the budget on a fake clock without a goroutine.
	manual bool
}

// Snapshot is the budget's state, for status pages and metrics.
type Snapshot struct {
	PerIP       LimitState    `json:"per_ip"`
	Partner     LimitState    `json:"partner"`
	PartnerMode string        `json:"partner_mode"`
	Peers       int           `json:"sidecars"`
	Queued      int           `json:"queued"`
	Tenants     int           `json:"queued_tenants"`
	BlockedFor  time.Duration `json:"-"`
}

// LimitState is one limit and this process's use of it in the window that
// ends now.
type LimitState struct {
	Limit     string `json:"limit"`
	Used      int    `json:"used"`
	Remaining int    `json:"remaining"`
}

// Budget is a request budget. It is safe for concurrent use.
type Budget struct {
	cfg   Config
	clock Clock
	spent spentHook // spent.go

	mu      sync.Mutex
	perIP   *window // nil when off
	partner *window // local count, or the fallback share with Shared; nil when off
	queue   fairQueue
	closed  bool
	// With Shared:
	sharedOK           bool
	probeAt            time.Time
	sharedBlockedUntil time.Time
	peers              int
	fallbackGrants     []time.Time // made while the store was away, handed to it on return

	wake chan struct{}
	stop chan struct{}
	done sync.WaitGroup
}

// New starts a budget; Close stops it.
func New(cfg Config) (*Budget, error) {
	if cfg.PerIP.Off() && cfg.Partner.Off() {
		return nil, errors.New("budget: no limit set")
	}
	if cfg.MaxWait < 0 {
		return nil, errors.New("budget: max wait must not be negative")
	}
	if cfg.Shared != nil && cfg.Partner.Off() {
		return nil, errors.New("budget: a shared store needs a partner limit")
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.SharedTimeout <= 0 {
		cfg.SharedTimeout = 250 * time.Millisecond
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = time.Second
	}
	if cfg.HeartbeatEvery <= 0 && !cfg.Partner.Off() {
		cfg.HeartbeatEvery = min(max(cfg.Partner.Per/4, 100*time.Millisecond), 5*time.Second)
	}
	b := &Budget{cfg: cfg, clock: cfg.Clock, wake: make(chan struct{}, 1), stop: make(chan struct{}), peers: 1, sharedOK: true}
	if !cfg.PerIP.Off() {
		b.perIP = newWindow(cfg.PerIP, b.margin(cfg.PerIP), cfg.Burst)
	}
	if !cfg.Partner.Off() {
		b.partner = newWindow(cfg.Partner, b.margin(cfg.Partner), cfg.Burst)
	}
	b.queue.init(b.fairSpan(), b.maxUnits())
	if !cfg.manual {
		b.done.Add(1)
		go b.dispatch()
	}
	if cfg.Shared != nil {
		b.done.Add(1)
		go b.heartbeat()
	}
	return b, nil
}

func (b *Budget) margin(l Limit) time.Duration {
	if b.cfg.Margin < 0 {
		return 0
	}
	if b.cfg.Margin > 0 {
		return b.cfg.Margin
	}
	return max(l.Per/50, 250*time.Millisecond)
}

// fairSpan is how far back the queue looks at what each tenant was granted:
// the longest window.
func (b *Budget) fairSpan() time.Duration {
	var span time.Duration
	for _, w := range []*window{b.perIP, b.partner} {
		if w != nil {
			span = max(span, w.span)
		}
	}
	return span
}

// Close stops the budget; queued requests are refused.
func (b *Budget) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	shed := b.queue.drain()
	b.mu.Unlock()
	close(b.stop)
	b.done.Wait()
	for _, w := range shed {
		w.ready <- &ExhaustedError{RetryAfter: time.Second, Reason: ShedClosed}
		b.cfg.Observer.Shed(ShedClosed)
	}
}

// Request is what Acquire asks for.
type Request struct {
	Tenant string
	// Units is how many requests to Zapier are granted together (default
	// 1): a multi-call operation gets all its calls or none, so it never
	// spends part of the budget on calls that cannot finish it.
	Units int
	// Urgent requests go ahead of their tenant's others, and of the
	// other tenants' requests once those tenants had their share of the
	// window (for example the polls of a run already created, which
	// finish work already paid for).
	Urgent bool
}

// Acquire takes room for one request to Zapier on behalf of tenant; see
// AcquireRequest.
func (b *Budget) Acquire(ctx context.Context, tenant string) error {
	return b.AcquireRequest(ctx, Request{Tenant: tenant})
}

// AcquireRequest takes room for req.Units requests to Zapier on behalf of
// req.Tenant, waiting (fairly across tenants) at most MaxWait. It returns
// nil when the requests may go, an *ExhaustedError when they may not, or
// ctx's error when the caller went away while queued (its place is freed).
func (b *Budget) AcquireRequest(ctx context.Context, req Request) error {
	return b.reportSpent(req, b.acquire(ctx, req))
}

func (b *Budget) acquire(ctx context.Context, req Request) error {
	w, err := b.admit(req)
	if w == nil {
		return err
	}
	b.kick()

	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
	}
	b.mu.Lock()
	queued := b.queue.remove(w)
	b.mu.Unlock()
	if queued {
		b.kick() // the head may have changed
		b.cfg.Observer.Shed(ShedCanceled)
		return ctx.Err()
	}
	if err := <-w.ready; err != nil { // answered while we were leaving
		return err
	}
	return ctx.Err()
}

// admit grants req now if it may go at once (nil, nil), refuses it
// (nil, err), or queues it (the waiter, nil) for dispatch.
func (b *Budget) admit(req Request) (*waiter, error) {
	units := max(req.Units, 1)
	b.mu.Lock()
	// The clock is read under the lock: a grant logged earlier than one
	// logged before it would leave the window early, and let one request
	// too many through.
	now := b.clock.Now()
	if limit := b.maxUnits(); units > limit {
		b.mu.Unlock()
		return nil, fmt.Errorf("budget: %d requests at once exceed the limit of %d", units, limit)
	}
	if b.closed {
		b.mu.Unlock()
		return nil, &ExhaustedError{RetryAfter: time.Second, Reason: ShedClosed}
	}
	if b.queue.n == 0 && b.cfg.Shared == nil && !b.nextLocal(now, units).After(now) {
		b.takeLocal(now, units)
		b.queue.charge(req.Tenant, now, units)
		b.mu.Unlock()
		b.cfg.Observer.Granted(0)
		return nil, nil
	}
	position := b.queue.position(req.Tenant, now)
	if req.Urgent {
		position = b.queue.urgentPosition(req.Tenant, now)
	}
	if eta := b.eta(now, position-1+units); eta.Sub(now) > b.cfg.MaxWait {
		b.mu.Unlock()
		b.cfg.Observer.Shed(ShedQueueFull)
		return nil, &ExhaustedError{RetryAfter: eta.Sub(now), Reason: ShedQueueFull}
	}
	deadline := now.Add(b.cfg.MaxWait)
	if b.cfg.Shared != nil {
		deadline = deadline.Add(b.cfg.SharedTimeout) // the store's answer is not the caller's wait
	}
	w := &waiter{ready: make(chan error, 1), enqueued: now, deadline: deadline, units: units, urgent: req.Urgent}
	b.queue.push(req.Tenant, w, req.Urgent)
	b.mu.Unlock()
	return w, nil
}

// Exhaust records that Zapier answered 429: nothing is granted before
// until, and queued requests that cannot wait that long are refused now.
func (b *Budget) Exhaust(until time.Time) {
	now := b.clock.Now()
	b.mu.Lock()
	for _, w := range []*window{b.perIP, b.partner} {
		if w != nil && until.After(w.blockedUntil) {
			w.blockedUntil = until
		}
	}
	if until.After(b.sharedBlockedUntil) {
		b.sharedBlockedUntil = until
	}
	b.shedBefore(now, until, ShedCooldown)
	b.mu.Unlock()
	b.kick()
}

// Snapshot reports the budget's state now.
func (b *Budget) Snapshot() Snapshot {
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Snapshot{Queued: b.queue.n, Tenants: len(b.queue.ring), Peers: b.peers, PartnerMode: ModeLocal}
	state := func(w *window) LimitState {
		if w == nil {
			return LimitState{Limit: "off"}
		}
		used := w.used(now)
		return LimitState{Limit: w.limit.String(), Used: used, Remaining: max(0, w.limit.Requests-used)}
	}
	s.PerIP, s.Partner = state(b.perIP), state(b.partner)
	if b.cfg.Shared != nil {
		s.PartnerMode = ModeShared
		s.Partner.Limit = b.cfg.Partner.String() // the window held locally is only the fallback share
		if !b.sharedOK {
			s.PartnerMode = ModeFallback
		}
	}
	if t := b.nextLocal(now, 1); t.After(now) {
		s.BlockedFor = t.Sub(now)
	}
	return s
}

func (b *Budget) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// maxUnits is the most requests one Acquire may take: the smallest limit.
// b.mu must be held.
func (b *Budget) maxUnits() int {
	n := 0
	for _, l := range []Limit{b.cfg.PerIP, b.cfg.Partner} {
		if !l.Off() && (n == 0 || l.Requests < n) {
			n = l.Requests
		}
	}
	if b.cfg.Shared != nil { // the fallback share may be smaller
		n = min(n, max(1, b.cfg.Partner.Requests/max(1, b.peers)))
	}
	return n
}

// nextLocal is when the windows held here have room for units more grants.
func (b *Budget) nextLocal(now time.Time, units int) time.Time {
	t := now
	if b.perIP != nil {
		t = later(t, b.perIP.next(now, units))
	}
	if b.partner != nil && (b.cfg.Shared == nil || !b.sharedOK) {
		t = later(t, b.partner.next(now, min(units, len(b.partner.times))))
	}
	if b.cfg.Shared != nil && b.sharedOK {
		t = later(t, b.sharedBlockedUntil)
	}
	return t
}

func (b *Budget) takeLocal(now time.Time, units int) {
	for range units {
		b.takeOne(now)
	}
}

func (b *Budget) takeOne(now time.Time) {
	if b.perIP != nil {
		b.perIP.take(now)
	}
	if b.partner != nil {
		b.partner.take(now)
	}
	if b.cfg.Shared != nil && !b.sharedOK {
		b.fallbackGrants = append(b.fallbackGrants, now)
		if n := b.cfg.Partner.Requests; len(b.fallbackGrants) > n {
			b.fallbackGrants = b.fallbackGrants[len(b.fallbackGrants)-n:]
		}
	}
}

// eta projects when the position-th request from now would be granted,
// if nothing else arrived. It stops early once past MaxWait.
func (b *Budget) eta(now time.Time, position int) time.Time {
	var ip, partner *window
	if b.perIP != nil {
		ip = b.perIP.clone()
	}
	// With a healthy shared store the partner count is not known here:
	// estimate from the per-IP window and the store's last answer.
	if b.partner != nil && (b.cfg.Shared == nil || !b.sharedOK) {
		partner = b.partner.clone()
	}
	t := now
	for range position {
		t = now
		if ip != nil {
			t = later(t, ip.next(now, 1))
		}
		if partner != nil {
			t = later(t, partner.next(now, 1))
		}
		if b.cfg.Shared != nil && b.sharedOK {
			t = later(t, b.sharedBlockedUntil)
		}
		if t.Sub(now) > b.cfg.MaxWait {
			return t
		}
		if ip != nil {
			ip.take(t)
		}
		if partner != nil {
			partner.take(t)
		}
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type nopObserver struct{}

func (nopObserver) Granted(time.Duration)       {}
func (nopObserver) Shed(string)                 {}
func (nopObserver) SharedAvailable(bool, error) {}
