package budget

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
	"github.com/zapgate/caddy-zapier/sharedtokens"
)

// Two processes drawing from one real Redis never grant more than the
// partner limit in any window, by Redis's own clock.
func TestRedisSharedNeverOverGrants(t *testing.T) {
	srv := redisserver.Start(t, 0)
	client := srv.Client()
	limit := Limit{Requests: 5, Per: 300 * time.Millisecond}
	stores := []*RedisShared{NewRedisShared(client, "t1:"), NewRedisShared(client, "t1:")}

	var mu sync.Mutex
	var grants []time.Time
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			store := stores[i%2]
			for range 40 {
				wait, err := store.Take(context.Background(), limit, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if wait == 0 {
					mu.Lock()
					grants = append(grants, time.Now())
					mu.Unlock()
				} else {
					time.Sleep(min(wait, 20*time.Millisecond))
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(grants, func(i, j int) bool { return grants[i].Before(grants[j]) })
	if len(grants) < limit.Requests {
		t.Fatalf("only %d grants", len(grants))
	}
	// Local times are taken after Redis granted, so they can only be later
	// and spread further apart by scheduling; a window shortened by a
	// scheduling margin still holds at most the limit.
	const slack = 50 * time.Millisecond
	for i := limit.Requests; i < len(grants); i++ {
		if d := grants[i].Sub(grants[i-limit.Requests]); d < limit.Per-slack {
			t.Fatalf("grants %d and %d only %v apart: more than %d in a window", i-limit.Requests, i, d, limit.Requests)
		}
	}

	if err := stores[0].Absorb(context.Background(), limit, []time.Duration{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if wait, err := stores[1].Take(context.Background(), limit, 1); err != nil || wait == 0 {
		t.Fatalf("after absorbing a full window: wait %v, err %v", wait, err)
	}
	// Units are taken together or not at all.
	pair := Limit{Requests: 3, Per: time.Minute}
	two := NewRedisShared(client, "t3:")
	if wait, err := two.Take(context.Background(), pair, 2); err != nil || wait != 0 {
		t.Fatalf("first pair: %v %v", wait, err)
	}
	if wait, err := two.Take(context.Background(), pair, 2); err != nil || wait == 0 {
		t.Fatalf("second pair under 3: %v %v", wait, err)
	}
	if wait, err := two.Take(context.Background(), pair, 1); err != nil || wait != 0 {
		t.Fatalf("the one left was spent by a refused pair: %v %v", wait, err)
	}
	n, err := stores[0].Peers(context.Background(), time.Second)
	if err != nil || n != 1 {
		t.Fatalf("peers %d, %v", n, err)
	}
	if n, _ := stores[1].Peers(context.Background(), time.Second); n != 2 {
		t.Fatalf("peers %d after the second announced itself", n)
	}
}

// A budget on Redis keeps granting from its share while Redis is paused,
// and goes back to Redis when it returns.
func TestBudgetSurvivesRedisOutage(t *testing.T) {
	srv := redisserver.Start(t, 0)
	client, err := sharedtokens.NewClient(srv.URL(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	obs := &countingObserver{}
	b := mustNew(t, Config{PerIP: Limit{1000, time.Minute}, Partner: Limit{1000, time.Minute}, MaxWait: time.Second,
		Shared: NewRedisShared(client, "t2:"), SharedTimeout: 100 * time.Millisecond, ProbeEvery: 50 * time.Millisecond, Observer: obs})
	for range 5 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
	}
	srv.Pause()
	for i := range 5 {
		if err := b.Acquire(context.Background(), "t"); err != nil {
			t.Fatalf("request %d failed while Redis was away: %v", i, err)
		}
	}
	if s := b.Snapshot(); s.PartnerMode != ModeFallback {
		t.Fatalf("mode %q while Redis is paused", s.PartnerMode)
	}
	srv.Resume()
	waitFor(t, "Redis back in use", func() bool { return b.Snapshot().PartnerMode == ModeShared })
	if err := b.Acquire(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	if obs.downs.Load() != 1 || obs.ups.Load() != 1 {
		t.Fatalf("availability changes: %d down, %d up", obs.downs.Load(), obs.ups.Load())
	}
}
