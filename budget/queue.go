package budget

import (
	"container/list"
	"time"
)

// waiter is one queued request.
type waiter struct {
	ready    chan error // buffered: nil when granted, *ExhaustedError when refused
	units    int
	enqueued time.Time
	deadline time.Time
	tenant   *tenantQueue
	elem     *list.Element
}

type tenantQueue struct {
	name    string
	waiters list.List
}

// fairQueue serves tenants in turn (round robin), each tenant's requests in
// arrival order. Tenants with nothing queued take no memory.
type fairQueue struct {
	byName map[string]*tenantQueue
	ring   []*tenantQueue // tenants with queued requests, in serving order
	next   int            // index in ring of the tenant served next
	n      int            // queued requests
}

func (q *fairQueue) init() { q.byName = map[string]*tenantQueue{} }

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
		w.elem = tq.waiters.PushFront(w)
	} else {
		w.elem = tq.waiters.PushBack(w)
	}
	q.n++
}

// urgentPosition is position for a newcomer of tenant that goes ahead of
// its tenant's other requests.
func (q *fairQueue) urgentPosition(tenant string) int {
	// Served at its tenant's next turn: after at most one request of
	// every other waiting tenant.
	return 1 + len(q.ring) - boolInt(q.byName[tenant] != nil)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// peek returns the request pop would return, or nil.
func (q *fairQueue) peek() *waiter {
	if len(q.ring) == 0 {
		return nil
	}
	return q.ring[q.next%len(q.ring)].waiters.Front().Value.(*waiter)
}

// position is how many requests, a newcomer of tenant included, round-robin
// serving grants up to and including that newcomer.
func (q *fairQueue) position(tenant string) int {
	mine := 0
	if tq := q.byName[tenant]; tq != nil {
		mine = tq.waiters.Len()
	}
	pos := mine + 1
	for _, tq := range q.ring {
		if tq.name != tenant {
			pos += min(tq.waiters.Len(), mine+1)
		}
	}
	return pos
}

// pop removes and returns the next request in fair order, or nil.
func (q *fairQueue) pop() *waiter {
	if len(q.ring) == 0 {
		return nil
	}
	if q.next >= len(q.ring) {
		q.next = 0
	}
	tq := q.ring[q.next]
	w := tq.waiters.Front().Value.(*waiter)
	q.next++
	q.remove(w)
	return w
}

// remove takes w out of the queue; false if it was not queued.
func (q *fairQueue) remove(w *waiter) bool {
	tq := w.tenant
	if tq == nil {
		return false
	}
	tq.waiters.Remove(w.elem)
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
