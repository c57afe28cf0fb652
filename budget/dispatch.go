package budget

import (
	"context"
	"time"
)

// Shared holds the partner window for every process of the partner.
type Shared interface {
	// Take grants units requests together if the window has room for them
	// (0), or says how long until it has (> 0).
	Take(ctx context.Context, l Limit, units int) (time.Duration, error)
	// Absorb records grants this process made while the store was away,
	// each given by how long ago it was made.
	Absorb(ctx context.Context, l Limit, ages []time.Duration) error
	// Peers announces this process and counts the live ones (itself
	// included), those heard from within ttl.
	Peers(ctx context.Context, ttl time.Duration) (int, error)
}

// Clock is time for the budget; tests replace it.
type Clock interface {
	Now() time.Time
	// At fires at t (at once when t has passed). An absolute time, so a
	// sleep computed before the clock moved still ends.
	At(t time.Time) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                  { return time.Now() }
func (realClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }

// dispatch grants queued requests in fair order as room appears. It is the
// only place that grants from the shared store, so the store sees one
// caller per process.
func (b *Budget) dispatch() {
	defer b.done.Done()
	for {
		b.mu.Lock()
		now := b.clock.Now()
		head, wake := b.due(now)
		if head == nil {
			b.mu.Unlock()
			if wake.IsZero() {
				select {
				case <-b.wake:
					continue
				case <-b.stop:
					return
				}
			}
			if !b.sleep(wake) {
				return
			}
			continue
		}
		if b.cfg.Shared != nil && b.sharedOK && !b.takeShared(head.units) { // unlocks and locks again
			b.mu.Unlock()
			continue
		}
		now = b.clock.Now()
		if b.queue.peek(now) != head { // the head left while the store answered: its slots are lost, conservatively
			b.mu.Unlock()
			continue
		}
		w := b.grant(now)
		b.mu.Unlock()
		b.cfg.Observer.Granted(now.Sub(w.enqueued))
	}
}

// due refuses, with b.mu held, the queued requests that waited MaxWait,
// then returns the head of the queue if the windows held here let it go at
// now; else (nil) when to look again, zero when nothing is queued.
func (b *Budget) due(now time.Time) (*waiter, time.Time) {
	b.shedExpired(now)
	if b.queue.n == 0 {
		return nil, time.Time{}
	}
	head := b.queue.peek(now)
	if t := b.nextLocal(now, head.units); t.After(now) {
		// Wake just past the soonest deadline: a request may wait exactly
		// MaxWait, not longer.
		if d := b.queue.earliestDeadline().Add(time.Nanosecond); d.Before(t) {
			t = d
		}
		return nil, t
	}
	return head, time.Time{}
}

// grant pops the head of the queue and grants it at now, with b.mu held.
func (b *Budget) grant(now time.Time) *waiter {
	w := b.queue.pop(now)
	b.takeLocal(now, w.units)
	w.ready <- nil
	return w
}

// takeShared asks the shared store for one grant, with b.mu held (released
// during the call). It reports whether the head of the queue may go now.
func (b *Budget) takeShared(units int) bool {
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.SharedTimeout)
	wait, err := b.cfg.Shared.Take(ctx, b.cfg.Partner, units)
	cancel()
	b.mu.Lock()
	now := b.clock.Now()
	switch {
	case err != nil:
		// Fall back to this process's share at once: the queued request
		// is served from it, not failed.
		b.sharedOK = false
		b.probeAt = now.Add(b.cfg.ProbeEvery)
		b.mu.Unlock()
		b.cfg.Observer.SharedAvailable(false, err)
		b.mu.Lock()
		return false
	case wait > 0:
		b.sharedBlockedUntil = later(b.sharedBlockedUntil, now.Add(wait))
		b.shedBefore(now, b.sharedBlockedUntil, ShedDeadline) // those that cannot wait that long
		return false
	}
	return true
}

// probe tries the shared store again, handing it the grants made without
// it, with b.mu held (released during the call).
func (b *Budget) probe(now time.Time) {
	var ages []time.Duration
	for _, t := range b.fallbackGrants {
		if age := now.Sub(t); age < b.cfg.Partner.Per+b.margin(b.cfg.Partner) {
			ages = append(ages, age)
		}
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.SharedTimeout)
	err := b.cfg.Shared.Absorb(ctx, b.cfg.Partner, ages)
	cancel()
	b.mu.Lock()
	if err != nil {
		b.probeAt = b.clock.Now().Add(b.cfg.ProbeEvery)
		return
	}
	b.sharedOK = true
	b.fallbackGrants = nil
	b.mu.Unlock()
	b.cfg.Observer.SharedAvailable(true, nil)
	b.mu.Lock()
}

// heartbeat keeps this process counted among the partner's, sizes its
// fallback share to the partner limit divided by the live processes, and
// while the shared store is away, tries it again every ProbeEvery.
func (b *Budget) heartbeat() {
	defer b.done.Done()
	var nextBeat time.Time
	for {
		now := b.clock.Now()
		b.mu.Lock()
		if !b.sharedOK && !now.Before(b.probeAt) {
			b.probe(now) // unlocks and locks again
		}
		b.mu.Unlock()
		if !now.Before(nextBeat) {
			b.countPeers()
			nextBeat = now.Add(b.cfg.HeartbeatEvery)
		}
		select {
		case <-b.clock.At(now.Add(min(b.cfg.HeartbeatEvery, b.cfg.ProbeEvery))):
		case <-b.stop:
			return
		}
	}
}

func (b *Budget) countPeers() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.SharedTimeout)
	n, err := b.cfg.Shared.Peers(ctx, 3*b.cfg.HeartbeatEvery)
	cancel()
	if err != nil || n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n != b.peers {
		b.peers = n
		share := Limit{Requests: max(1, b.cfg.Partner.Requests/n), Per: b.cfg.Partner.Per}
		b.partner = b.partner.resized(share, b.margin(b.cfg.Partner))
	}
}

// sleep waits until t, or less when woken; false when the budget is closing.
func (b *Budget) sleep(t time.Time) bool {
	select {
	case <-b.clock.At(t):
	case <-b.wake:
	case <-b.stop:
		return false
	}
	return true
}

// shedExpired refuses the queued requests that waited MaxWait.
func (b *Budget) shedExpired(now time.Time) {
	b.shedBefore(now, now, ShedDeadline)
}

// shedBefore refuses, with b.mu held, the queued requests whose deadline
// comes before the budget has room at until.
func (b *Budget) shedBefore(now, until time.Time, reason string) {
	if b.queue.n == 0 {
		return
	}
	shed := b.queue.removeIf(func(w *waiter) bool { return w.deadline.Before(until) })
	if len(shed) == 0 {
		return
	}
	retry := max(later(until, b.nextLocal(now, 1)).Sub(now), time.Second)
	for _, w := range shed {
		w.ready <- &ExhaustedError{RetryAfter: retry, Reason: reason}
	}
	b.mu.Unlock()
	for range shed {
		b.cfg.Observer.Shed(reason)
	}
	b.mu.Lock()
}
