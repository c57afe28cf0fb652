package jwks

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// signingKID mints a token and returns the kid in its header.
func signingKID(t *testing.T, m *Manager) string {
	t.Helper()
	tok, err := m.Mint("t", "u")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	decodeSegment(t, strings.Split(tok, ".")[0], &h)
	return h.Kid
}

func publishedKIDs(t *testing.T, m *Manager) []string {
	t.Helper()
	body, _ := m.JWKS()
	var set struct{ Keys []struct{ Kid string } }
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

func states(m *Manager) map[string]KeyState {
	s := map[string]KeyState{}
	for _, k := range m.Keys() {
		s[k.KID] = k.State
	}
	return s
}

func maintain(t *testing.T, m *Manager) bool {
	t.Helper()
	changed, err := m.Maintain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

func TestRotationLifecycle(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	const overlap = time.Hour
	m := loaded(t, NewMemoryStorage(), clock, Config{Overlap: overlap})
	t0 := clock.Now()
	a := signingKID(t, m)

	next, err := m.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	b := next.KID
	if next.State != StateNext || !next.ActivatesAt.Equal(t0.Add(overlap)) || b == a {
		t.Fatalf("Rotate = %+v", next)
	}
	// Published before it signs.
	if kids := publishedKIDs(t, m); len(kids) != 2 || kids[0] != a || kids[1] != b {
		t.Fatalf("JWKS kids %v, want [%s %s]", kids, a, b)
	}
	clock.Advance(overlap - time.Second)
	if got := signingKID(t, m); got != a {
		t.Fatalf("signs with %s before activation", got)
	}
	lastA, _ := m.Mint("t", "u")

	clock.Advance(time.Second) // b activates; no Maintain needed
	if got := signingKID(t, m); got != b {
		t.Fatalf("signs with %s after activation, want %s", got, b)
	}
	infos := m.Keys()
	if infos[0].State != StateRetired || !infos[0].RetiresAt.Equal(t0.Add(overlap)) ||
		!infos[0].DeletesAt.Equal(t0.Add(2*overlap)) || infos[1].State != StateActive || !infos[1].RetiresAt.IsZero() {
		t.Fatalf("Keys() after activation: %+v", infos)
	}

	// The last token signed by a still verifies until it expires and beyond.
	clock.Advance(overlap - time.Second)
	if maintain(t, m) {
		t.Fatal("Maintain changed the set before DeletesAt")
	}
	body, _ := m.JWKS()
	verify(t, body, lastA, want{alg: "ES256", userClaim: "sub", tenantClaim: "org_id", user: "u", tenant: "t", ttl: 5 * time.Minute, now: t0.Add(overlap - time.Second)})

	clock.Advance(time.Second) // DeletesAt
	if kids := publishedKIDs(t, m); len(kids) != 2 {
		t.Fatal("key removed without Maintain")
	}
	if !maintain(t, m) {
		t.Fatal("Maintain did not delete the retired key")
	}
	if kids := publishedKIDs(t, m); len(kids) != 1 || kids[0] != b {
		t.Fatalf("after deletion JWKS kids %v", kids)
	}
}

// TestNoGapAcrossRotations drives scheduled rotation over several periods and
// checks, at every step, that every unexpired token verifies against the
// current JWKS and that a key signs only after being published an Overlap.
func TestNoGapAcrossRotations(t *testing.T) {
	clock := newClock()
	const (
		overlap  = time.Hour
		rotation = 3 * time.Hour
		ttl      = 5 * time.Minute
		step     = 4 * time.Minute
	)
	m := loaded(t, NewMemoryStorage(), clock, Config{Overlap: overlap, Rotation: rotation, TTL: ttl})
	firstSeen := map[string]time.Time{}
	type minted struct {
		tok string
		at  time.Time
	}
	var live []minted
	signers := map[string]bool{}
	end := clock.Now().Add(5 * rotation)
	for now := clock.Now(); now.Before(end); now = clock.Now() {
		maintain(t, m)
		for _, kid := range publishedKIDs(t, m) {
			if _, ok := firstSeen[kid]; !ok {
				firstSeen[kid] = now
			}
		}
		kid := signingKID(t, m)
		signers[kid] = true
		if len(signers) > 1 && now.Sub(firstSeen[kid]) < overlap {
			t.Fatalf("%v: %s signs %v after being published", now, kid, now.Sub(firstSeen[kid]))
		}
		tok, _ := m.Mint("t", "u")
		live = append(live, minted{tok, now})
		body, _ := m.JWKS()
		kept := live[:0]
		for _, l := range live {
			if now.Sub(l.at) < ttl {
				verify(t, body, l.tok, want{alg: "ES256", userClaim: "sub", tenantClaim: "org_id", user: "u", tenant: "t", ttl: ttl, now: l.at})
				kept = append(kept, l)
			}
		}
		live = kept
		if n := len(m.Keys()); n > 3 {
			t.Fatalf("%d keys published", n)
		}
		clock.Advance(step)
	}
	if len(signers) < 5 {
		t.Errorf("only %d keys signed over 5 rotation periods", len(signers))
	}
}

func TestScheduledRotation(t *testing.T) {
	clock := newClock()
	const overlap, rotation = time.Hour, 10 * time.Hour
	m := loaded(t, NewMemoryStorage(), clock, Config{Overlap: overlap, Rotation: rotation})
	t0 := clock.Now()

	clock.Advance(rotation - overlap - time.Second)
	if maintain(t, m) || len(m.Keys()) != 1 {
		t.Fatal("rotation scheduled too early")
	}
	clock.Advance(time.Second)
	if !maintain(t, m) {
		t.Fatal("rotation not scheduled")
	}
	ks := m.Keys()
	if len(ks) != 2 || ks[1].State != StateNext || !ks[1].ActivatesAt.Equal(t0.Add(rotation)) {
		t.Fatalf("Keys() = %+v", ks)
	}
	if maintain(t, m) || len(m.Keys()) != 2 {
		t.Fatal("second pass scheduled another key")
	}

	// A gateway that was down past the due date still publishes an Overlap ahead.
	clock2 := newClock()
	m2 := loaded(t, NewMemoryStorage(), clock2, Config{Overlap: overlap, Rotation: rotation})
	clock2.Advance(2 * rotation)
	maintain(t, m2)
	if ks := m2.Keys(); len(ks) != 2 || !ks[1].ActivatesAt.Equal(clock2.Now().Add(overlap)) {
		t.Fatalf("late rotation: %+v", ks)
	}

	// Rotation 0 never schedules.
	clock3 := newClock()
	m3 := loaded(t, NewMemoryStorage(), clock3, Config{Overlap: overlap})
	clock3.Advance(1000 * time.Hour)
	if maintain(t, m3) {
		t.Fatal("rotation scheduled with Rotation 0")
	}
}

func TestRotateIdempotentAcrossManagers(t *testing.T) {
	for range 10 {
		store, clock := NewMemoryStorage(), newClock()
		m1 := loaded(t, store, clock, Config{Overlap: time.Hour})
		m2 := loaded(t, store, clock, Config{Overlap: time.Hour})
		var infos [4]KeyInfo
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, m := range []*Manager{m1, m2, m1, m2} {
			wg.Go(func() {
				<-start
				info, err := m.Rotate(context.Background(), false)
				if err != nil {
					t.Error(err)
				}
				infos[i] = info
			})
		}
		close(start)
		wg.Wait()
		for _, info := range infos[1:] {
			if info.KID != infos[0].KID {
				t.Fatalf("concurrent Rotate created different keys: %+v", infos)
			}
		}
		if err := m1.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(m1.Keys()); n != 2 {
			t.Fatalf("%d keys stored, want 2", n)
		}
	}
}

func TestImmediateRotation(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	const overlap = time.Hour
	m := loaded(t, NewMemoryStorage(), clock, Config{Overlap: overlap})
	clock.Advance(time.Minute)
	a := signingKID(t, m)

	info, err := m.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	if info.State != StateActive || !info.ActivatesAt.Equal(now) || info.KID == a {
		t.Fatalf("Rotate(true) = %+v", info)
	}
	if got := signingKID(t, m); got != info.KID {
		t.Fatalf("signs with %s, want %s", got, info.KID)
	}
	ks := m.Keys()
	if ks[0].KID != a || ks[0].State != StateRetired || !ks[0].RetiresAt.Equal(now) || !ks[0].DeletesAt.Equal(now.Add(overlap)) {
		t.Fatalf("old key: %+v", ks[0])
	}

	// With a next key scheduled, immediate rotation promotes it.
	next, _ := m.Rotate(ctx, false)
	clock.Advance(time.Second)
	promoted, err := m.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if promoted.KID != next.KID || promoted.State != StateActive || len(m.Keys()) != 3 {
		t.Fatalf("promoted %+v from %+v; keys %+v", promoted, next, m.Keys())
	}
	if got := signingKID(t, m); got != next.KID {
		t.Fatalf("signs with %s after promotion", got)
	}

	// Even at the very instant the current key activated, the new key wins.
	c := clock.Now()
	again, _ := m.Rotate(ctx, true)
	if !again.ActivatesAt.Equal(c) || signingKID(t, m) != again.KID {
		t.Fatal("tie at the same instant not won by the newer key")
	}
	if st := states(m); st[promoted.KID] != StateRetired || st[again.KID] != StateActive {
		t.Fatalf("states %v", st)
	}
}

func TestAlgChange(t *testing.T) {
	store, clock := NewMemoryStorage(), newClock()
	const overlap = time.Hour
	es := loaded(t, store, clock, Config{Overlap: overlap})
	old := signingKID(t, es)

	rs := loaded(t, store, clock, Config{Overlap: overlap, Alg: "RS256"})
	if signingKID(t, rs) != old {
		t.Fatal("alg switched without a published next key")
	}
	if !maintain(t, rs) {
		t.Fatal("no key scheduled for the new alg")
	}
	ks := rs.Keys()
	if len(ks) != 2 || ks[1].Alg != "RS256" || ks[1].State != StateNext || !ks[1].ActivatesAt.Equal(clock.Now().Add(overlap)) {
		t.Fatalf("Keys() = %+v", ks)
	}
	if maintain(t, rs) {
		t.Fatal("second pass changed the set")
	}
	clock.Advance(overlap)
	tok, err := rs.Mint("t", "u")
	if err != nil {
		t.Fatal(err)
	}
	// The ES256 gateway picks the new set up and would verify it too.
	if err := es.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	body, _ := es.JWKS()
	verify(t, body, tok, want{alg: "RS256", userClaim: "sub", tenantClaim: "org_id", user: "u", tenant: "t", ttl: 5 * time.Minute, now: clock.Now()})
	checkPublicOnly(t, body)
}

func TestETag(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	store := NewMemoryStorage()
	m := loaded(t, store, clock, Config{Overlap: time.Hour})
	var changes atomic.Int32
	m.OnChange(func() { changes.Add(1) })

	body, etag := m.JWKS()
	if !regexp.MustCompile(`^"[A-Za-z0-9_-]{16,}"$`).MatchString(etag) {
		t.Fatalf("etag %s is not a quoted strong etag", etag)
	}
	same := func(wantSame bool, what string) {
		t.Helper()
		b, e := m.JWKS()
		if (string(b) == string(body)) != wantSame || (e == etag) != wantSame {
			t.Fatalf("%s: body same %v, etag same %v, want %v", what, string(b) == string(body), e == etag, wantSame)
		}
		body, etag = b, e
	}
	_ = m.Load(ctx)
	same(true, "reload")
	maintain(t, m)
	same(true, "no-op Maintain")
	if changes.Load() != 0 {
		t.Fatal("OnChange called without a change")
	}
	if _, err := m.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	same(false, "rotation")
	clock.Advance(time.Hour) // next becomes active: states change, the body does not
	same(true, "activation")
	clock.Advance(time.Hour)
	maintain(t, m)
	same(false, "deletion")
	if changes.Load() != 2 {
		t.Fatalf("OnChange called %d times, want 2", changes.Load())
	}
	other := loaded(t, store, clock, Config{Overlap: time.Hour})
	if _, e := other.JWKS(); e != etag {
		t.Fatal("same set, different etag on another gateway")
	}
}

func TestConcurrentMintDuringRotation(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	store := NewMemoryStorage()
	const overlap = time.Hour
	m := loaded(t, store, clock, Config{Overlap: overlap, Rotation: overlap})
	peer := loaded(t, store, clock, Config{Overlap: overlap, Rotation: overlap})

	// Total clock movement stays below Overlap, so no key may disappear and
	// every token must be verifiable against the final JWKS.
	done := make(chan struct{})
	var churn sync.WaitGroup
	churn.Go(func() {
		defer close(done)
		for i := range 60 {
			clock.Advance(30 * time.Second)
			var err error
			switch i % 4 {
			case 0:
				_, err = m.Maintain(ctx)
			case 1:
				_, err = peer.Rotate(ctx, false)
			case 2:
				_, err = m.Rotate(ctx, true)
			case 3:
				err = peer.Load(ctx)
			}
			if err != nil {
				t.Error(err)
			}
		}
	})
	var mu sync.Mutex
	var tokens []string
	var minters sync.WaitGroup
	for range 8 {
		minters.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					if n > 0 {
						return
					}
				default:
				}
				mgr := m
				if n%2 == 1 {
					mgr = peer
				}
				tok, err := mgr.Mint("tenant", "user")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = mgr.JWKS()
				_ = mgr.Keys()
				mu.Lock()
				tokens = append(tokens, tok)
				mu.Unlock()
			}
		})
	}
	minters.Wait()
	churn.Wait()
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	body, _ := m.JWKS()
	kids := map[string]bool{}
	for _, k := range publishedKIDs(t, m) {
		kids[k] = true
	}
	for i, tok := range tokens {
		var h struct{ Kid string }
		decodeSegment(t, strings.Split(tok, ".")[0], &h)
		if !kids[h.Kid] {
			t.Fatalf("token signed by unpublished key %s", h.Kid)
		}
		if i%97 == 0 { // full independent verification on a sample
			var c struct{ Iat int64 }
			decodeSegment(t, strings.Split(tok, ".")[1], &c)
			verify(t, body, tok, want{alg: "ES256", userClaim: "sub", tenantClaim: "org_id", user: "user", tenant: "tenant", ttl: 5 * time.Minute, now: time.Unix(c.Iat, 0)})
		}
	}
	t.Logf("%d tokens, %d keys", len(tokens), len(kids))
}

func TestRun(t *testing.T) {
	clock := newClock()
	store := NewMemoryStorage()
	m := loaded(t, store, clock, Config{Overlap: time.Hour, Rotation: time.Hour})
	changed := make(chan struct{}, 1)
	m.OnChange(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		m.Run(ctx, 5*time.Millisecond)
		close(stopped)
	}()
	select { // rotation is due at once (Rotation == Overlap)
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not schedule the rotation")
	}
	cancel()
	<-stopped

	// Errors reach OnError.
	_ = store.Store(context.Background(), "zapier/keys.json", []byte("{"))
	errs := make(chan error, 1)
	m2 := newManager(t, store, clock, Config{Overlap: time.Hour, OnError: func(err error) {
		select {
		case errs <- err:
		default:
		}
	}})
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go m2.Run(ctx, time.Millisecond)
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("OnError got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnError not called")
	}
}
