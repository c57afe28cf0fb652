package budget

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// The simulation drives a real Budget (admission, fair queue, windows,
// deadlines) on a fake clock, without its dispatch goroutine, against a
// model of what the gateway's POST run does with it (caddymodule's
// Actions.run and await): prepay the fresh action id and the create as 2
// units, then poll the created run (urgent requests) with backoff until it
// ends or the caller's wait is over; a poll the budget refuses is tried
// again after its Retry-After while the wait lasts. It is the bench's
// budget section (bench/budget.go) at the same scale: a Zapier minute is
// 6s, 60/6s per IP, 150/6s partner, max_wait 1s, burst 15, 50ms on every
// API call, a 1s action, wait 6s, polls 50ms doubling to 500ms.
type simConfig struct {
	Load    float64 // × the ideal run rate
	Weights []int
	Windows int // measured windows after one warm-up window
	Seed    uint64
}

type simResult struct {
	offered, completed, created, calls, pending []int
	shed                                        []map[string]int
	jain                                        float64
}

const (
	simWindow   = 6 * time.Second
	simLatency  = 50 * time.Millisecond
	simAction   = time.Second
	simWait     = 6 * time.Second
	simPoll     = 50 * time.Millisecond
	simMaxPoll  = 500 * time.Millisecond
	simMaxWait  = time.Second
	simIdealMin = 60.0 / 7 // runs per window without callbacks: 2 calls + 5 polls
)

type simEvent struct {
	at  time.Time
	seq int
	do  func()
}

type simEvents []simEvent

func (h simEvents) Len() int { return len(h) }
func (h simEvents) Less(i, j int) bool {
	return h[i].at.Before(h[j].at) || h[i].at.Equal(h[j].at) && h[i].seq < h[j].seq
}
func (h simEvents) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simEvents) Push(x any)   { *h = append(*h, x.(simEvent)) }
func (h *simEvents) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type sim struct {
	t      *testing.T
	clk    *fakeClock
	b      *Budget
	events simEvents
	seq    int
	// queued requests and what to do with their answer
	waiting map[*waiter]simWaiter
	seqW    int
}

type simWaiter struct {
	seq  int
	then func(error)
}

func (s *sim) at(t time.Time, do func()) {
	s.seq++
	heap.Push(&s.events, simEvent{at: t, seq: s.seq, do: do})
}

// dispatch grants and refuses what the dispatch goroutine would at now,
// and returns when it would look again (zero: when something arrives).
func (s *sim) dispatch() time.Time {
	now := s.clk.Now()
	for {
		s.b.mu.Lock()
		head, wake := s.b.due(now)
		if head != nil {
			s.b.grant(now)
		}
		s.b.mu.Unlock()
		s.answer()
		if head == nil {
			return wake
		}
	}
}

// answer runs the continuations of the waiters answered so far, in the
// order they were queued (a map's order is random).
func (s *sim) answer() {
	type done struct {
		w   *waiter
		err error
		simWaiter
	}
	var ready []done
	for w, sw := range s.waiting {
		select {
		case err := <-w.ready:
			ready = append(ready, done{w, err, sw})
		default:
		}
	}
	for _, d := range ready {
		delete(s.waiting, d.w)
	}
	for i := 1; i < len(ready); i++ {
		for j := i; j > 0 && ready[j].seq < ready[j-1].seq; j-- {
			ready[j], ready[j-1] = ready[j-1], ready[j]
		}
	}
	for _, d := range ready {
		d.then(d.err)
	}
}

func runSim(t *testing.T, cfg simConfig) simResult {
	clk := newFakeClock()
	b, err := New(Config{
		PerIP: Limit{60, simWindow}, Partner: Limit{150, simWindow}, MaxWait: simMaxWait,
		Burst: 15, Clock: clk, manual: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := &sim{t: t, clk: clk, b: b, waiting: map[*waiter]simWaiter{}}
	n := len(cfg.Weights)
	res := simResult{offered: make([]int, n), completed: make([]int, n), created: make([]int, n),
		calls: make([]int, n), pending: make([]int, n), shed: make([]map[string]int, n)}
	for i := range res.shed {
		res.shed[i] = map[string]int{}
	}
	start := clk.Now()
	measureFrom := start.Add(simWindow)
	end := start.Add(time.Duration(cfg.Windows+1) * simWindow)

	// Arrivals: Poisson at Load × the ideal rate, tenants by smooth
	// weighted round robin (as bench/budget.go arrivals).
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	rate := cfg.Load * simIdealMin / simWindow.Seconds()
	current := make([]int, n)
	total := 0
	for _, w := range cfg.Weights {
		total += w
	}
	for x := 0.0; ; {
		x += rng.ExpFloat64() / rate
		at := start.Add(time.Duration(x * float64(time.Second)))
		if !at.Before(end) {
			break
		}
		best := 0
		for i, w := range cfg.Weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		tenant, measured := best, !at.Before(measureFrom)
		s.at(at, func() { s.postRun(&res, tenant, measured) })
	}

	for {
		wake := s.dispatch()
		next := time.Time{}
		if len(s.events) > 0 {
			next = s.events[0].at
		}
		if !wake.IsZero() && (next.IsZero() || wake.Before(next)) {
			next = wake
		}
		if next.IsZero() {
			break
		}
		if d := next.Sub(clk.Now()); d > 0 {
			clk.Advance(d)
		}
		s.dispatch()
		for len(s.events) > 0 && !s.events[0].at.After(clk.Now()) {
			e := heap.Pop(&s.events).(simEvent)
			e.do()
			s.dispatch()
		}
	}
	fair := make([]float64, n)
	for i, c := range res.completed {
		fair[i] = float64(c)
	}
	res.jain = jainIndex(fair)
	return res
}

// postRun models caddymodule's Actions.run without callbacks.
func (s *sim) postRun(res *simResult, tenant int, measured bool) {
	name := fmt.Sprintf("tenant%d", tenant)
	if measured {
		res.offered[tenant]++
	}
	deadline := s.clk.Now().Add(simWait)
	s.acquireSeq(Request{Tenant: name, Units: 2}, func(err error) {
		if err != nil {
			res.shed[tenant]["run:"+reason(err)]++
			return
		}
		res.calls[tenant] += 2
		res.created[tenant]++
		created := s.clk.Now().Add(2 * simLatency)
		doneAt := created.Add(simAction)
		pause := simPoll
		var await func()
		await = func() {
			now := s.clk.Now()
			left := deadline.Sub(now)
			if left <= 0 {
				res.pending[tenant]++
				res.shed[tenant]["poll:wait over"]++
				return
			}
			s.b.mu.Lock()
			if t := s.b.nextLocal(now, 1); t.After(now) {
				pause = max(pause, t.Sub(now))
			}
			s.b.mu.Unlock()
			sleep := min(pause, left)
			pause = min(2*pause, simMaxPoll)
			s.at(now.Add(sleep), func() {
				s.acquireSeq(Request{Tenant: name, Urgent: true}, func(err error) {
					if err != nil {
						res.shed[tenant]["poll:"+reason(err)]++
						var ee *ExhaustedError
						if errors.As(err, &ee) && s.clk.Now().Add(ee.RetryAfter).Before(deadline) {
							pause = max(pause, ee.RetryAfter)
							await()
							return
						}
						res.pending[tenant]++
						return
					}
					res.calls[tenant]++
					answered := s.clk.Now().Add(simLatency)
					s.at(answered, func() {
						if !answered.Before(doneAt) {
							if measured {
								res.completed[tenant]++
							}
							return
						}
						await()
					})
				})
			})
		}
		s.at(created, await)
	})
}

// acquireSeq asks the budget as AcquireRequest would, answering then
// (granted at once or refused) or when dispatch grants or refuses it.
func (s *sim) acquireSeq(req Request, then func(error)) {
	w, err := s.b.admit(req)
	if w == nil {
		then(err)
		return
	}
	s.seqW++
	s.waiting[w] = simWaiter{s.seqW, then}
}

func reason(err error) string {
	if ee, ok := err.(*ExhaustedError); ok {
		return ee.Reason
	}
	return err.Error()
}

func jainIndex(x []float64) float64 {
	var sum, sq float64
	for _, v := range x {
		sum += v
		sq += v * v
	}
	if sq == 0 {
		return 1
	}
	return sum * sum / (float64(len(x)) * sq)
}

// TestPollingRunsSharedFairly is the bench's polling mode at 5× load: the
// tenants' completed runs must be shared fairly (Jain ≥ 0.95) although
// their offered loads are 8:4:2:1:1.
func TestPollingRunsSharedFairly(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		r := runSim(t, simConfig{Load: 5, Weights: []int{8, 4, 2, 1, 1}, Windows: 20, Seed: seed})
		total := 0
		for _, c := range r.completed {
			total += c
		}
		t.Logf("seed %d: offered %v completed %v (%.1f/window) created %v pending %v calls %v Jain %.3f",
			seed, r.offered, r.completed, float64(total)/20, r.created, r.pending, r.calls, r.jain)
		for i, m := range r.shed {
			t.Logf("  tenant %d shed %v", i, m)
		}
		if r.jain < 0.95 {
			t.Errorf("seed %d: Jain %.3f over completed runs %v, want ≥ 0.95", seed, r.jain, r.completed)
		}
	}
}
