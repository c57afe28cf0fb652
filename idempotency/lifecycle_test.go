package idempotency

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestConcurrentDuplicatesRunOnce(t *testing.T) {
	const n = 50
	m := newMemStorage()
	onLock, locked := signal(4 * n)
	m.OnLock = onLock
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		proceeds int
		replays  []Response
		errs     []error
	)
	for range n {
		wg.Go(func() {
			out, err := s.Begin(ctx, "tenant-1", "same-key", []byte("same body"))
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			switch out.Kind {
			case Proceed:
				mu.Lock()
				proceeds++
				mu.Unlock()
				// Finish only once every Begin has taken the lock, and so
				// has found this one's pending record: the other 49 must
				// wait for the response, not find it already there.
				if err := events(locked, n); err != nil {
					t.Error(err)
				}
				if err := out.Finish(ctx, created); err != nil {
					t.Error(err)
				}
			case Replay:
				mu.Lock()
				replays = append(replays, out.Response)
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if proceeds != 1 || len(replays) != n-1 {
		t.Fatalf("%d Proceed and %d Replay, want 1 and %d", proceeds, len(replays), n-1)
	}
	for _, r := range replays {
		if !reflect.DeepEqual(r, created) {
			t.Fatalf("replayed %+v, want %+v", r, created)
		}
	}
	if h := m.Held(); h != 0 {
		t.Errorf("%d locks left held", h)
	}
}

func TestAbandonThenRetryProceeds(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()

	out := begin(t, s, "tenant-1", "k1", "body")
	if err := out.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if ks := m.Keys(); len(ks) != 0 {
		t.Fatalf("Abandon left %v", ks)
	}
	retry := begin(t, s, "tenant-1", "k1", "body")
	wantKind(t, retry, Proceed)
	if err := retry.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	// The first ticket's Abandon (again) must not delete the retry's record.
	if err := out.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	wantKind(t, begin(t, s, "tenant-1", "k1", "body"), Replay)
}

// A duplicate waiting on a request that is then abandoned takes the key over.
func TestWaiterProceedsAfterAbandon(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()
	first := begin(t, s, "tenant-1", "k1", "body")

	onLoad, loads := signal(1000)
	m.OnLoad = onLoad
	got := beginAsync(s, "tenant-1", "k1", "body")
	receive(t, loads, 2) // the locked read, then one poll: it is waiting

	if err := first.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := (<-got).out(t)
	wantKind(t, waiter, Proceed)
	if err := waiter.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
}

func TestAbandonedPendingIsTakenOver(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	ctx := context.Background()

	crashed := begin(t, s, "tenant-1", "k1", "body")
	clock.Advance(testPending)
	took := begin(t, s, "tenant-1", "k1", "body")
	wantKind(t, took, Proceed)

	// The stalled first request comes back: it may neither finish nor
	// delete the new owner's record.
	if err := crashed.Finish(ctx, Response{Status: 500}); !errors.Is(err, ErrLost) {
		t.Fatalf("stale Finish: err = %v, want ErrLost", err)
	}
	if err := crashed.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := took.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	out := begin(t, s, "tenant-1", "k1", "body")
	wantKind(t, out, Replay)
	if out.Response.Status != created.Status {
		t.Fatalf("replayed status %d, want the new owner's %d", out.Response.Status, created.Status)
	}
}

// A duplicate waiting on a request that crashed takes over once the pending
// record passes PendingTimeout.
func TestWaiterTakesOverAbandonedPending(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	begin(t, s, "tenant-1", "k1", "body") // never finished

	clock.Advance(testPending - time.Nanosecond)
	onLoad, loads := signal(1000)
	m.OnLoad = onLoad
	got := beginAsync(s, "tenant-1", "k1", "body")
	receive(t, loads, 2)
	select {
	case r := <-got:
		t.Fatalf("Begin returned %v, %v before PendingTimeout", r.Kind, r.err)
	default:
	}

	clock.Advance(time.Nanosecond)
	wantKind(t, (<-got).out(t), Proceed)
}

func TestExpiryAfterTTL(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	out := begin(t, s, "tenant-1", "k1", "body A")
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}

	clock.Advance(testTTL - time.Nanosecond)
	wantKind(t, begin(t, s, "tenant-1", "k1", "body A"), Replay)
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body B")); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("err = %v, want ErrKeyReused before the TTL", err)
	}

	clock.Advance(time.Nanosecond)
	wantKind(t, begin(t, s, "tenant-1", "k1", "body B"), Proceed)
}

func TestCancelWhileWaiting(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	begin(t, s, "tenant-1", "k1", "body")

	onLoad, loads := signal(1000)
	m.OnLoad = onLoad
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Begin(ctx, "tenant-1", "k1", []byte("body"))
		done <- err
	}()
	receive(t, loads, 2)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Begin did not return after cancel")
	}
	if h := m.Held(); h != 0 {
		t.Errorf("%d locks left held", h)
	}
}

func TestCancelWhileLocked(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	name := s.storageKey(recordID("tenant-1", "k1"))
	if err := m.Lock(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
