package budget

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustNew(t *testing.T, cfg Config) *Budget {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func exhausted(t *testing.T, err error, reason string) *ExhaustedError {
	t.Helper()
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Reason != reason {
		t.Fatalf("got %v, want an ExhaustedError (%s)", err, reason)
	}
	return ee
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]Limit{"60/1m": {60, time.Minute}, " 20/2s ": {20, 2 * time.Second}, "150/1m0s": {150, time.Minute}} {
		got, err := ParseLimit(in, nil)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "60", "60/", "/1m", "0/1m", "-1/1m", "x/1m", "60/x", "60/0s", "60/-1s", "1.5/1m"} {
		if _, err := ParseLimit(in, nil); err == nil {
			t.Errorf("ParseLimit(%q) accepted", in)
		}
	}
}

func TestGrantsWithinLimitThenRefusesWithRoomTime(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{3, time.Second}, Margin: 100 * time.Millisecond, Clock: clk})
	for i := range 3 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		clk.Advance(100 * time.Millisecond)
	}
	// Grants at 0, 100, 200ms; the window is 1.1s: room again at 1.1s.
	ee := exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
	if want := 800 * time.Millisecond; ee.RetryAfter != want {
		t.Fatalf("RetryAfter = %v, want %v", ee.RetryAfter, want)
	}
	clk.Advance(800 * time.Millisecond)
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if s := b.Snapshot(); s.PerIP.Used != 3 || s.PerIP.Remaining != 0 || s.PerIP.Limit != "3/1s" {
		t.Fatalf("snapshot %+v", s.PerIP)
	}
}

// acquireAsync runs Acquire in a goroutine and sends its tenant and result.
type result struct {
	tenant string
	err    error
}

func acquireAsync(ctx context.Context, b *Budget, tenant string, out chan<- result) {
	go func() { out <- result{tenant, b.Acquire(ctx, tenant)} }()
}

func queued(b *Budget, n int) func() bool {
	return func() bool { return b.Snapshot().Queued == n }
}

func TestQueuedRequestGrantedWhenRoomAppears(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: 5 * time.Second, Clock: clk})
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 1)
	acquireAsync(context.Background(), b, "t", out)
	waitFor(t, "one queued", queued(b, 1))
	select {
	case r := <-out:
		t.Fatalf("granted before room: %v", r.err)
	default:
	}
	clk.Advance(time.Second)
	if r := <-out; r.err != nil {
		t.Fatal(r.err)
	}
}

func TestTenantsServedInTurn(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: time.Minute, Clock: clk})
	if err := b.Acquire(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 20)
	// The heavy tenant queues 8 before the light one shows up with 2.
	for i := range 8 {
		acquireAsync(context.Background(), b, "heavy", out)
		waitFor(t, "heavy queued", queued(b, i+1))
	}
	for i := range 2 {
		acquireAsync(context.Background(), b, "light", out)
		waitFor(t, "light queued", queued(b, 9+i))
	}
	var order []string
	for range 10 {
		clk.Advance(time.Second)
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		order = append(order, r.tenant)
	}
	// The light tenant's two requests go within the first four grants,
	// not after the heavy tenant's eight.
	lightSeen := 0
	for _, tenant := range order[:4] {
		if tenant == "light" {
			lightSeen++
		}
	}
	if lightSeen != 2 {
		t.Fatalf("grant order %v: the light tenant waited behind the heavy one", order)
	}
}

func TestAdmissionIsPerTenantFair(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: 4 * time.Second, Clock: clk})
	if err := b.Acquire(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 10)
	for i := range 4 {
		acquireAsync(context.Background(), b, "heavy", out)
		waitFor(t, "heavy queued", queued(b, i+1))
	}
	// A fifth heavy request would wait 5s: refused now.
	exhausted(t, b.Acquire(context.Background(), "heavy"), ShedQueueFull)
	// A light tenant's first request goes after one heavy one: admitted.
	acquireAsync(context.Background(), b, "light", out)
	waitFor(t, "light queued", queued(b, 5))
}

func TestCanceledWaiterFreesItsPlace(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: 10 * time.Second, Clock: clk})
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan result, 1)
	acquireAsync(ctx, b, "t", first)
	waitFor(t, "first queued", queued(b, 1))
	second := make(chan result, 1)
	acquireAsync(context.Background(), b, "t", second)
	waitFor(t, "second queued", queued(b, 2))
	cancel()
	if r := <-first; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled waiter got %v", r.err)
	}
	waitFor(t, "place freed", queued(b, 1))
	clk.Advance(time.Second)
	if r := <-second; r.err != nil {
		t.Fatalf("the next waiter did not get the freed place: %v", r.err)
	}
}

func TestWaiterRefusedAtDeadline(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: 2 * time.Second, Clock: clk})
	if err := b.Acquire(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 3)
	acquireAsync(context.Background(), b, "a", out)
	waitFor(t, "a1", queued(b, 1))
	acquireAsync(context.Background(), b, "a", out) // due at 2s
	waitFor(t, "a2", queued(b, 2))
	acquireAsync(context.Background(), b, "b", out) // takes a turn before a2
	waitFor(t, "b1", queued(b, 3))
	got := map[string]int{}
	for range 2 {
		clk.Advance(time.Second)
		r := <-out
		if r.err != nil {
			t.Fatalf("%s: %v", r.tenant, r.err)
		}
		got[r.tenant]++
	}
	// a2's 2s are up before its turn: refused, with a computed Retry-After.
	clk.Advance(time.Second)
	r := <-out
	ee := exhausted(t, r.err, ShedDeadline)
	if r.tenant != "a" || ee.RetryAfter < time.Second {
		t.Fatalf("refused %s with %v", r.tenant, ee.RetryAfter)
	}
	if got["a"] != 1 || got["b"] != 1 {
		t.Fatalf("grants %v", got)
	}
}

func TestExhaustRefusesThoseThatCannotWait(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: 5 * time.Second, Clock: clk})
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 1)
	acquireAsync(context.Background(), b, "t", out)
	waitFor(t, "queued", queued(b, 1))
	b.Exhaust(clk.Now().Add(60 * time.Second))
	ee := exhausted(t, (<-out).err, ShedCooldown)
	if ee.RetryAfter != 60*time.Second {
		t.Fatalf("RetryAfter %v", ee.RetryAfter)
	}
	ee = exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
	if ee.RetryAfter != 60*time.Second {
		t.Fatalf("new request RetryAfter %v", ee.RetryAfter)
	}
}

func TestBothLimitsApply(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{5, time.Second}, Partner: Limit{2, time.Second}, Margin: -1, Clock: clk})
	for range 2 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
	}
	exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
}

func TestCloseRefusesQueued(t *testing.T) {
	clk := newFakeClock()
	b, err := New(Config{PerIP: Limit{1, time.Second}, MaxWait: time.Minute, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Acquire(context.Background(), "t")
	out := make(chan result, 1)
	acquireAsync(context.Background(), b, "t", out)
	waitFor(t, "queued", queued(b, 1))
	b.Close()
	exhausted(t, (<-out).err, ShedClosed)
	exhausted(t, b.Acquire(context.Background(), "t"), ShedClosed)
}

func TestConfigRefused(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no limit":         {},
		"negative wait":    {PerIP: Limit{1, time.Second}, MaxWait: -1},
		"shared, no limit": {PerIP: Limit{1, time.Second}, Shared: &memShared{}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// memShared is a Shared in memory whose availability a test switches.
type memShared struct {
	mu       sync.Mutex
	clock    Clock
	grants   []time.Time
	down     atomic.Bool
	absorbed int
	peers    int
}

var errDown = errors.New("store down")

func (m *memShared) Take(_ context.Context, l Limit, units int) (time.Duration, error) {
	if m.down.Load() {
		return 0, errDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	kept := m.grants[:0]
	for _, g := range m.grants {
		if g.Add(l.Per).After(now) {
			kept = append(kept, g)
		}
	}
	m.grants = kept
	if over := len(m.grants) + units - l.Requests; over > 0 {
		return m.grants[over-1].Add(l.Per).Sub(now), nil
	}
	for range units {
		m.grants = append(m.grants, now)
	}
	return 0, nil
}

func (m *memShared) Absorb(_ context.Context, _ Limit, ages []time.Duration) error {
	if m.down.Load() {
		return errDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range ages {
		m.grants = append(m.grants, m.clock.Now().Add(-a))
	}
	m.absorbed += len(ages)
	return nil
}

func (m *memShared) Peers(context.Context, time.Duration) (int, error) {
	if m.down.Load() {
		return 0, errDown
	}
	return max(m.peers, 1), nil
}

type countingObserver struct {
	granted, shed atomic.Int64
	downs, ups    atomic.Int64
}

func (o *countingObserver) Granted(time.Duration) { o.granted.Add(1) }
func (o *countingObserver) Shed(string)           { o.shed.Add(1) }
func (o *countingObserver) SharedAvailable(ok bool, _ error) {
	if ok {
		o.ups.Add(1)
	} else {
		o.downs.Add(1)
	}
}

func TestSharedPartnerWindowAcrossProcesses(t *testing.T) {
	clk := newFakeClock()
	store := &memShared{clock: clk, peers: 2}
	cfg := Config{PerIP: Limit{10, time.Second}, Partner: Limit{4, time.Second}, Margin: -1, MaxWait: 0, Shared: store, Clock: clk}
	one, two := mustNew(t, cfg), mustNew(t, cfg)
	granted := 0
	for i := range 8 {
		b := one
		if i%2 == 1 {
			b = two
		}
		if err := b.Acquire(context.Background(), "t"); err == nil {
			granted++
		}
	}
	if granted != 4 {
		t.Fatalf("two processes were granted %d of a shared 4", granted)
	}
}

func TestSharedStoreDownFallsBackToShareAndRecovers(t *testing.T) {
	clk := newFakeClock()
	store := &memShared{clock: clk, peers: 2}
	obs := &countingObserver{}
	b := mustNew(t, Config{PerIP: Limit{100, time.Second}, Partner: Limit{10, time.Second}, Margin: -1,
		MaxWait: 0, Shared: store, Clock: clk, Observer: obs, ProbeEvery: 100 * time.Millisecond})
	waitFor(t, "the heartbeat to count two processes", func() bool { return b.Snapshot().Peers == 2 })

	store.down.Store(true)
	// Every request within this process's share (10/2) is granted while
	// the store is down: the fallback fails none of them.
	for i := range 5 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatalf("request %d failed during the fallback: %v", i, err)
		}
	}
	if s := b.Snapshot(); s.PartnerMode != ModeFallback {
		t.Fatalf("mode %q", s.PartnerMode)
	}
	exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
	if obs.downs.Load() != 1 {
		t.Fatalf("downs %d", obs.downs.Load())
	}

	store.down.Store(false)
	clk.Advance(200 * time.Millisecond) // past ProbeEvery: the heartbeat probes
	waitFor(t, "recovery", func() bool { return b.Snapshot().PartnerMode == ModeShared })
	// The store now holds the 5 fallback grants, so the partner limit
	// counts them too.
	store.mu.Lock()
	absorbed := store.absorbed
	store.mu.Unlock()
	if absorbed != 5 {
		t.Fatalf("the store absorbed %d fallback grants, want 5", absorbed)
	}
	if obs.ups.Load() != 1 {
		t.Fatalf("ups %d", obs.ups.Load())
	}
}

func TestUnitsAreGrantedTogetherOrNotAtAll(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{3, time.Second}, Margin: -1, Clock: clk})
	if err := b.AcquireRequest(context.Background(), Request{Tenant: "t", Units: 2}); err != nil {
		t.Fatal(err)
	}
	// One left: two at once do not fit, and none is spent trying.
	exhausted(t, b.AcquireRequest(context.Background(), Request{Tenant: "t", Units: 2}), ShedQueueFull)
	if s := b.Snapshot(); s.PerIP.Used != 2 {
		t.Fatalf("used %d after a refused pair", s.PerIP.Used)
	}
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	if err := b.AcquireRequest(context.Background(), Request{Tenant: "t", Units: 4}); err == nil {
		t.Fatal("4 at once under a limit of 3 accepted")
	}
}

func TestUrgentGoesAheadOfItsTenant(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{1, time.Second}, Margin: -1, MaxWait: time.Minute, Clock: clk})
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	out := make(chan result, 3)
	go func() { out <- result{"new", b.Acquire(context.Background(), "t")} }()
	waitFor(t, "new queued", queued(b, 1))
	go func() { out <- result{"new2", b.Acquire(context.Background(), "t")} }()
	waitFor(t, "new2 queued", queued(b, 2))
	go func() {
		out <- result{"urgent", b.AcquireRequest(context.Background(), Request{Tenant: "t", Urgent: true})}
	}()
	waitFor(t, "urgent queued", queued(b, 3))
	clk.Advance(time.Second)
	if r := <-out; r.tenant != "urgent" || r.err != nil {
		t.Fatalf("first grant went to %s (%v)", r.tenant, r.err)
	}
}

func TestBurstPacesTheRest(t *testing.T) {
	clk := newFakeClock()
	b := mustNew(t, Config{PerIP: Limit{10, 10 * time.Second}, Burst: 3, Margin: -1, Clock: clk})
	for i := range 3 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatalf("burst grant %d: %v", i, err)
		}
	}
	// Then one per second (10 per 10s), not the 7 left at once.
	ee := exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
	if ee.RetryAfter != time.Second {
		t.Fatalf("paced RetryAfter %v, want 1s", ee.RetryAfter)
	}
	clk.Advance(time.Second)
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	exhausted(t, b.Acquire(context.Background(), "t"), ShedQueueFull)
}

// OnSpent hears of every grant with its tenant and units, and of no refusal.
func TestOnSpentHearsGrants(t *testing.T) {
	b, err := New(Config{PerIP: Limit{Requests: 3, Per: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := map[string]int{}
	b.OnSpent(func(tenant string, units int) { got[tenant] += units })
	if err := b.AcquireRequest(context.Background(), Request{Tenant: "a", Units: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Acquire(context.Background(), "a"); err == nil {
		t.Fatal("a fourth request in a window of 3 was granted")
	}
	if got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("spent %v", got)
	}
}
