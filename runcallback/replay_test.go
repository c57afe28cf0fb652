package runcallback

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/zapgate/caddy-zapier/internal/memstorage"
)

// A token without sub names no run, so it could complete any: refused
// when RequireSubject is set.
func TestVerifyRefusesMissingSubject(t *testing.T) {
	f := newFixture(t, VerifierConfig{RequireSubject: true})
	c := f.claims()
	delete(c, "sub")
	tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c)
	if _, err := f.v.Verify(context.Background(), tok); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("token without sub: %v, want ErrInvalidSignature", err)
	}
	if _, err := f.v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", f.claims())); err != nil {
		t.Fatalf("token with sub: %v", err)
	}
}

func newReplayCache(t *testing.T, st ReplayStorage, clock *fakeClock) *ReplayCache {
	t.Helper()
	return &ReplayCache{Storage: st, Now: clock.Now}
}

// A token is accepted once; again it is refused, by this cache and by
// another sharing the storage (another sidecar), until it expires.
func TestReplayCacheRefusesATokenSeenBefore(t *testing.T) {
	testKeys(t)
	clock := newClock()
	st := memstorage.New()
	here, there := newReplayCache(t, st, clock), newReplayCache(t, st, clock)
	ctx := context.Background()
	f := &fixture{clock: clock}
	tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", f.claims())
	claims := Claims{ID: "cb_1", Subject: "arun_abc123", Expiry: clock.Now().Add(5 * time.Minute)}

	if err := here.Spend(ctx, claims, tok); err != nil {
		t.Fatal(err)
	}
	if err := here.Spend(ctx, claims, tok); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay here: %v", err)
	}
	if err := there.Spend(ctx, claims, tok); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay on another sidecar: %v", err)
	}
	// A different token (another jti) is its own.
	other := claims
	other.ID = "cb_2"
	if err := there.Spend(ctx, other, tok); err != nil {
		t.Fatalf("another jti: %v", err)
	}
	// Past its expiry (and the skew) nothing remembers it, and Sweep
	// deletes its record.
	clock.Advance(5*time.Minute + DefaultLeeway + time.Second)
	here.Sweep(ctx)
	if keys := st.Keys(); len(keys) != 0 {
		t.Fatalf("records after expiry: %v", keys)
	}
}

// Without sub allowed, the same token (no jti: named by its hash) cannot
// complete two runs: the second use is a replay.
func TestReplayCacheSameTokenForTwoRuns(t *testing.T) {
	testKeys(t)
	clock := newClock()
	f := newFixture(t, VerifierConfig{})
	f.clock = clock
	c := f.claims()
	delete(c, "sub")
	delete(c, "jti")
	tok := sign(t, jwt.SigningMethodES256, ecKey256, "ec-256", c)
	claims, err := f.v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !BindsRun(claims, "arun_1") || !BindsRun(claims, "arun_2") {
		t.Fatal("a token without sub should bind any run (that is the hole the cache closes)")
	}
	cache := newReplayCache(t, memstorage.New(), clock)
	if err := cache.Spend(context.Background(), claims, tok); err != nil {
		t.Fatal(err)
	}
	if err := cache.Spend(context.Background(), claims, tok); !errors.Is(err, ErrReplayed) {
		t.Fatalf("same token for a second run: %v", err)
	}
	if TokenName(claims, tok) == TokenName(Claims{ID: tok}, "x") {
		t.Fatal("a jti equal to a token names the same record as the token's hash")
	}
}

// Unspend forgets a token, for a retry after the result could not be stored.
func TestReplayCacheUnspend(t *testing.T) {
	clock := newClock()
	cache := newReplayCache(t, memstorage.New(), clock)
	ctx := context.Background()
	claims := Claims{ID: "cb_1", Expiry: clock.Now().Add(time.Minute)}
	if err := cache.Spend(ctx, claims, "t"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Unspend(ctx, claims, "t"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Spend(ctx, claims, "t"); err != nil {
		t.Fatalf("after Unspend: %v", err)
	}
}

// Memory is bounded; storage still refuses what memory forgot.
func TestReplayCacheMemoryIsBounded(t *testing.T) {
	clock := newClock()
	cache := &ReplayCache{Storage: memstorage.New(), Now: clock.Now, Max: 8}
	ctx := context.Background()
	for i := range 20 {
		c := Claims{ID: fmt.Sprint("cb_", i), Expiry: clock.Now().Add(time.Duration(i+1) * time.Minute)}
		if err := cache.Spend(ctx, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := cache.Len(); n > 8 {
		t.Fatalf("%d names in memory, bound 8", n)
	}
	if err := cache.Spend(ctx, Claims{ID: "cb_0", Expiry: clock.Now().Add(time.Minute)}, ""); !errors.Is(err, ErrReplayed) {
		t.Fatalf("a token memory dropped: %v", err)
	}
}
