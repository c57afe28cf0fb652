package budget

import (
	"container/list"
	"time"
)

// waiter is one queued request.
type waiter struct {
	ready    chan error // buffered: nil when granted, *ExhaustedError when refused
	units    int
	urgent   bool
	enqueued time.Time
	deadline time.Time
	tenant   *tenantQueue
	elem     *list.Element
}

type tenantQueue struct {
	name    string
	waiters list.List
	urgent  int // queued urgent requests, at the front of waiters
}

// fairQueue orders waiting requests by what their tenants were granted in
// the last span (the longest window). First come urgent requests (the
// polls of a run already created: work already paid for) and the requests
// of tenants granted less than their share (the smallest limit divided by
// the tenants granted or waiting in the span), then the rest; within each,
// the tenant granted the fewest goes first, tenants that tie in turn (round
// robin), and each tenant's requests in arrival order, urgent ones first.
//
// Plain round robin shares only among tenants waiting at the same instant.
// A light tenant often is not (between its runs' polls, say), and when the
// budget sheds at admission or at the deadline it sheds whoever arrives: a
// light tenant loses requests it needed, a heavy one only its excess, and
// the heavy tenant ends with more of the window (measured at 5× load with
// polling runs: /v2 calls per tenant [104 89 67 51 48], Jain 0.914 over
// completed runs). Ordered by the window, a tenant below its share goes
// first whenever it comes, and only tenants above it wait.
//
// Tenants with nothing queued take no memory; the grants within the span
// are remembered (at most as many as the longest window allows).
type fairQueue struct {
	byName map[string]*tenantQueue
	ring   []*tenantQueue // tenants with queued requests, in serving order
	next   int            // index in ring of the tenant served next
	n      int            // queued requests

	span   time.Duration
	limit  int            // the smallest limit's requests (per span)
	grants []tenantGrant  // within the span, oldest first
	counts map[string]int // requests granted within the span, by tenant
}

type tenantGrant struct {
	at     time.Time
	tenant string
	units  int
}

func (q *fairQueue) init(span time.Duration, limit int) {
	q.byName = map[string]*tenantQueue{}
	q.counts = map[string]int{}
	q.span, q.limit = span, limit
}

// charge records units granted to tenant at now.
func (q *fairQueue) charge(tenant string, now time.Time, units int) {
	if q.span <= 0 {
		return
	}
	q.grants = append(q.grants, tenantGrant{at: now, tenant: tenant, units: units})
	q.counts[tenant] += units
}

// forget drops the grants that left the span ending now.
func (q *fairQueue) forget(now time.Time) {
	for len(q.grants) > 0 && !q.grants[0].at.Add(q.span).After(now) {
		g := q.grants[0]
		q.grants = q.grants[1:]
		if q.counts[g.tenant] -= g.units; q.counts[g.tenant] <= 0 {
			delete(q.counts, g.tenant)
		}
	}
	if len(q.grants) == 0 {
		q.grants = nil // let the backing array go
	}
}

// used is how many requests tenant was granted within the span (forget
// first).
func (q *fairQueue) used(tenant string) int { return q.counts[tenant] }

// push queues w at the back of its tenant's requests, or at the front when
// urgent.
func (q *fairQueue) push(tenant string, w *waiter, urgent bool) {
	tq := q.byName[tenant]
	if tq == nil {
		tq = &tenantQueue{name: tenant}
		q.byName[tenant] = tq
		// A newcomer is served after the tenants already waiting in this
		// round: just before the one served next.
		q.ring = append(q.ring, nil)
		copy(q.ring[q.next+1:], q.ring[q.next:])
		q.ring[q.next] = tq
		q.next++
		if q.next >= len(q.ring) {
			q.next = 0
		}
	}
	w.tenant = tq
	if urgent {
		tq.urgent++
		w.elem = tq.waiters.PushFront(w)
	} else {
		w.elem = tq.waiters.PushBack(w)
	}
	q.n++
}

// urgentPosition is position for a newcomer of tenant that goes ahead of
// its tenant's other requests.
func (q *fairQueue) urgentPosition(tenant string, now time.Time) int {
	return q.rank(tenant, 0, true, now)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// peek returns the request pop would return, or nil.
func (q *fairQueue) peek(now time.Time) *waiter {
	if len(q.ring) == 0 {
		return nil
	}
	return q.ring[q.pick(now)].waiters.Front().Value.(*waiter)
}

// pick is the index in ring of the tenant served next: by class (see
// class), then the fewest grants within the span, ties in turn from next.
func (q *fairQueue) pick(now time.Time) int {
	if q.next >= len(q.ring) {
		q.next = 0
	}
	share := q.share(now)
	best, bestClass, bestUsed := q.next, 0, -1
	for k := range q.ring {
		i := (q.next + k) % len(q.ring)
		tq := q.ring[i]
		u := q.used(tq.name)
		c := class(tq.urgent > 0, u, share)
		if bestUsed < 0 || c < bestClass || c == bestClass && u < bestUsed {
			best, bestClass, bestUsed = i, c, u
		}
	}
	return best
}

// class orders requests before their tenants' use: 0 for an urgent
// request (it finishes work already paid for) and for a tenant granted
// less than its share in the span, 1 for the rest.
func class(urgent bool, used, share int) int {
	if urgent || used < share {
		return 0
	}
	return 1
}

// share is a tenant's fair part of the smallest limit in the span: the
// limit divided by the tenants granted or waiting in it.
func (q *fairQueue) share(now time.Time) int {
	q.forget(now)
	active := len(q.counts)
	for _, tq := range q.ring {
		if q.counts[tq.name] == 0 {
			active++
		}
	}
	return q.limit / max(1, active)
}

// position is how many requests, a newcomer of tenant included, fair
// serving grants up to and including that newcomer.
func (q *fairQueue) position(tenant string, now time.Time) int {
	mine := 0
	if tq := q.byName[tenant]; tq != nil {
		mine = tq.waiters.Len()
	}
	return q.rank(tenant, mine, false, now)
}

// rank is position for a newcomer of tenant (urgent or not) with ahead of
// its tenant's requests before it. Its tenant will have been granted
// used+ahead requests when its turn comes; another tenant's queued
// requests of a lower class go before it, and of the same class those its
// tenant reaches with no more grants (ties counted against the newcomer).
func (q *fairQueue) rank(tenant string, ahead int, urgent bool, now time.Time) int {
	share := q.share(now) // forgets
	mine := q.used(tenant) + ahead
	c := class(urgent, mine, share)
	pos := ahead + 1
	for _, tq := range q.ring {
		if tq.name == tenant {
			continue
		}
		u := q.used(tq.name)
		for _, g := range []struct {
			n     int
			class int
		}{{tq.urgent, 0}, {tq.waiters.Len() - tq.urgent, class(false, u, share)}} {
			switch {
			case g.class < c:
				pos += g.n
			case g.class == c:
				pos += min(g.n, max(0, mine-u+1))
			}
		}
	}
	return pos
}

// pop removes and returns the next request in fair order, or nil.
func (q *fairQueue) pop(now time.Time) *waiter {
	if len(q.ring) == 0 {
		return nil
	}
	i := q.pick(now)
	tq := q.ring[i]
	w := tq.waiters.Front().Value.(*waiter)
	q.next = i + 1
	q.remove(w)
	q.charge(tq.name, now, w.units)
	return w
}

// remove takes w out of the queue; false if it was not queued.
func (q *fairQueue) remove(w *waiter) bool {
	tq := w.tenant
	if tq == nil {
		return false
	}
	tq.waiters.Remove(w.elem)
	if w.urgent {
		tq.urgent--
	}
	w.tenant, w.elem = nil, nil
	q.n--
	if tq.waiters.Len() == 0 {
		delete(q.byName, tq.name)
		for i, t := range q.ring {
			if t == tq {
				q.ring = append(q.ring[:i], q.ring[i+1:]...)
				if i < q.next {
					q.next--
				}
				break
			}
		}
	}
	return true
}

// removeIf takes out and returns every queued request for which drop is true.
func (q *fairQueue) removeIf(drop func(*waiter) bool) []*waiter {
	var out []*waiter
	for _, tq := range append([]*tenantQueue(nil), q.ring...) {
		for e := tq.waiters.Front(); e != nil; {
			nextE := e.Next()
			if w := e.Value.(*waiter); drop(w) {
				q.remove(w)
				out = append(out, w)
			}
			e = nextE
		}
	}
	return out
}

func (q *fairQueue) drain() []*waiter {
	return q.removeIf(func(*waiter) bool { return true })
}

// earliestDeadline is the soonest deadline of a queued request (each
// tenant's oldest request has its tenant's soonest), or zero.
func (q *fairQueue) earliestDeadline() time.Time {
	var d time.Time
	for _, tq := range q.ring {
		if w := tq.waiters.Front().Value.(*waiter); d.IsZero() || w.deadline.Before(d) {
			d = w.deadline
		}
	}
	return d
}
