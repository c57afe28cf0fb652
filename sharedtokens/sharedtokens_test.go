package sharedtokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/redisserver"
	"github.com/zapgate/caddy-zapier/tokencache"
)

var testKey = bytes.Repeat([]byte{7}, KeySize)

// These tests run against a real redis-server on a unix socket (no port to
// share with anyone); redisserver fails them, saying how to install it, when
// it is missing.

func newTier(t *testing.T, srv *redisserver.Server, tweak func(*Config)) *Tier {
	t.Helper()
	cfg := Config{URL: srv.URL(), Key: testKey, Namespace: "client-a"}
	if tweak != nil {
		tweak(&cfg)
	}
	tier, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tier.Close() })
	return tier
}

// exchanger is a fake token exchange that counts its calls.
type exchanger struct {
	calls atomic.Int32
	delay time.Duration
	ttl   time.Duration
	err   error
	name  string
}

func (x *exchanger) fetch(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
	n := x.calls.Add(1)
	if x.delay > 0 {
		select {
		case <-time.After(x.delay):
		case <-ctx.Done():
			return tokencache.Token{}, ctx.Err()
		}
	}
	if x.err != nil {
		return tokencache.Token{}, x.err
	}
	ttl := x.ttl
	if ttl == 0 {
		ttl = time.Hour
	}
	return tokencache.Token{Value: fmt.Sprintf("token-%s%d-for-%s-%s", x.name, n, key.Tenant, key.User), Expiry: time.Now().Add(ttl)}, nil
}

var alice = tokencache.Key{Tenant: "tenant-acme", User: "user-alice"}

func TestColdGatewaysExchangeOnce(t *testing.T) {
	srv := redisserver.Start(t, 0)
	x := &exchanger{delay: 300 * time.Millisecond}
	const gateways = 5
	tiers := make([]*Tier, gateways)
	for i := range tiers {
		tiers[i] = newTier(t, srv, nil)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	values := make([]string, gateways)
	outcomes := make([]Outcome, gateways)
	for i, tier := range tiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, outcome, err := tier.Fetch(context.Background(), alice, x.fetch)
			if err != nil {
				t.Error(err)
			}
			values[i], outcomes[i] = tok.Value, outcome
		}()
	}
	close(start)
	wg.Wait()
	if n := x.calls.Load(); n != 1 {
		t.Fatalf("%d gateways cold at once made %d exchanges, want 1 (outcomes %v)", gateways, n, outcomes)
	}
	exchanged := 0
	for i := range values {
		if values[i] != values[0] {
			t.Errorf("gateway %d got another token than gateway 0", i)
		}
		switch outcomes[i] {
		case Exchanged:
			exchanged++
		case Waited, Shared:
		default:
			t.Errorf("gateway %d: outcome %v", i, outcomes[i])
		}
	}
	if exchanged != 1 {
		t.Errorf("outcomes %v: want exactly one exchanged", outcomes)
	}
}

// A gateway that found no token, then sees the lease free because another
// gateway just published and released it, must not exchange again.
func TestNoExchangeWhenATokenIsPublishedBetweenLoadAndLease(t *testing.T) {
	srv := redisserver.Start(t, 0)
	a, b := newTier(t, srv, nil), newTier(t, srv, nil)
	ctx := context.Background()
	e := b.entry(alice)
	snap, err := b.load(ctx, e)
	if err != nil || snap.found || snap.fence != 0 {
		t.Fatalf("cold load: %+v %v", snap, err)
	}
	if _, outcome, _ := a.Fetch(ctx, alice, (&exchanger{}).fetch); outcome != Exchanged {
		t.Fatalf("a: %v", outcome)
	}
	if fence, err := b.acquire(ctx, e, snap.fence); err != nil || fence != publishedMeanwhile {
		t.Fatalf("b took the lease after a published (fence %d, err %v)", fence, err)
	}
	x := &exchanger{}
	if _, outcome, _ := b.Fetch(ctx, alice, x.fetch); outcome != Shared || x.calls.Load() != 0 {
		t.Fatalf("b: outcome %v, %d exchanges", outcome, x.calls.Load())
	}
}

func TestSharedTokenIsReusedByAnotherGateway(t *testing.T) {
	srv := redisserver.Start(t, 0)
	x := &exchanger{}
	a, b := newTier(t, srv, nil), newTier(t, srv, nil)
	first, outcome, err := a.Fetch(context.Background(), alice, x.fetch)
	if err != nil || outcome != Exchanged {
		t.Fatalf("first fetch: %v %v", outcome, err)
	}
	second, outcome, err := b.Fetch(context.Background(), alice, x.fetch)
	if err != nil || outcome != Shared || second.Value != first.Value || !second.Expiry.Equal(first.Expiry) {
		t.Fatalf("second gateway: outcome %v, same token %v, same expiry %v, err %v",
			outcome, second.Value == first.Value, second.Expiry.Equal(first.Expiry), err)
	}
	if x.calls.Load() != 1 {
		t.Fatalf("%d exchanges, want 1", x.calls.Load())
	}

	// Another namespace (other credentials) never sees it.
	other := newTier(t, srv, func(c *Config) { c.Namespace = "client-b" })
	if tok, outcome, _ := other.Fetch(context.Background(), alice, x.fetch); outcome != Exchanged || tok.Value == first.Value {
		t.Fatalf("another namespace: outcome %v, same token %v", outcome, tok.Value == first.Value)
	}
}

func TestRedisHoldsNoIdentityAndNoToken(t *testing.T) {
	srv := redisserver.Start(t, 0)
	x := &exchanger{}
	tier := newTier(t, srv, nil)
	tok, _, err := tier.Fetch(context.Background(), alice, x.fetch)
	if err != nil {
		t.Fatal(err)
	}
	raw := srv.Client()
	ctx := context.Background()
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 { // the token and its fence counter; the lease is gone
		t.Errorf("keys %v, want a token and a fence", keys)
	}
	secrets := []string{alice.Tenant, alice.User, tok.Value, "acme", "alice"}
	for _, k := range keys {
		dump, err := raw.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(k, s) || strings.Contains(dump, s) {
				t.Errorf("Redis key %q (or its value) contains %q", k, s)
			}
		}
	}
	e := tier.entry(alice)
	sealed, err := raw.HGet(ctx, e.tok, fieldData).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if sealed[0] != sealVersion || len(sealed) != 1+12+16+len(tok.Value)+16 {
		t.Errorf("sealed value of %d bytes, want version|nonce|ciphertext|tag", len(sealed))
	}

	// Tampering is detected.
	sealed, _ = raw.HGet(ctx, e.tok, fieldData).Bytes()
	sealed[len(sealed)-1] ^= 1
	raw.HSet(ctx, e.tok, fieldData, sealed)
	if _, outcome, _ := tier.Fetch(ctx, alice, x.fetch); outcome != Exchanged {
		t.Errorf("tampered value: outcome %v, want exchanged", outcome)
	}

	// A gateway with another key cannot read it, says so, and exchanges.
	var reported []error
	var mu sync.Mutex
	wrong := newTier(t, srv, func(c *Config) {
		c.Key = bytes.Repeat([]byte{8}, KeySize)
		c.OnError = func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }
	})
	wrong.ns, wrong.keys.identityKey = tier.ns, tier.keys.identityKey // same names, other sealing key
	if _, outcome, _ := wrong.Fetch(ctx, alice, x.fetch); outcome != Exchanged {
		t.Errorf("a gateway with another key: outcome %v, want exchanged", outcome)
	}
	mu.Lock()
	if len(reported) != 1 || !errors.Is(reported[0], errUndecryptable) {
		t.Errorf("reported %v, want the undecryptable error", reported)
	}
	mu.Unlock()

}

func TestSealedValueIsBoundToItsIdentity(t *testing.T) {
	k := newKeyring(testKey)
	s := stored{Token: tokencache.Token{Value: "secret-token", Expiry: time.Unix(2000000000, 5)}, Obtained: time.Unix(1999990000, 7)}
	at := binding{namespace: "ns-1", id: "id-1", fence: 7}
	sealed, err := k.seal(at, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.open(at, sealed)
	if err != nil || got.Token.Value != s.Token.Value || !got.Token.Expiry.Equal(s.Token.Expiry) || !got.Obtained.Equal(s.Obtained) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, other := range []binding{
		{namespace: "ns-1", id: "id-2", fence: 7}, // another identity
		{namespace: "ns-2", id: "id-1", fence: 7}, // another configuration on the same Redis and key
		{namespace: "ns-1", id: "id-1", fence: 8}, // an old value replayed under a newer fence
		{namespace: "ns-1", id: "id-1", fence: 6},
		{namespace: "ns-1id-1", id: "", fence: 7}, // the parts are length-prefixed
	} {
		if _, err := k.open(other, sealed); err == nil {
			t.Errorf("a value sealed for %+v opened under %+v", at, other)
		}
	}
	again, _ := k.seal(at, s)
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one token are identical: the nonce is not random")
	}
	if k.identity(alice) == k.identity(tokencache.Key{Tenant: alice.Tenant + alice.User[:1], User: alice.User[1:]}) {
		t.Fatal("identity HMAC is ambiguous")
	}
}

// A lease holder that stalls past its lease must not overwrite the token of
// the gateway that took over: its fence is older.
// Two configurations (other client id or issuer: another namespace) share a
// Redis and its key: a sealed token copied from one's key to the other's
// does not open, and neither does an old value put back over a newer one.
func TestSealedValueDoesNotCrossNamespacesOrFences(t *testing.T) {
	srv := redisserver.Start(t, 0)
	ctx, raw := context.Background(), srv.Client()
	a := newTier(t, srv, func(c *Config) { c.Namespace = "client-a" })
	b := newTier(t, srv, func(c *Config) { c.Namespace = "client-b" })
	xa, xb := &exchanger{}, &exchanger{}
	tokA, _, err := a.Fetch(ctx, alice, xa.fetch)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Fetch(ctx, alice, xb.fetch); err != nil {
		t.Fatal(err)
	}
	ea, eb := a.entry(alice), b.entry(alice)
	// Copy a's sealed value and fence over b's.
	vals, err := raw.HGetAll(ctx, ea.tok).Result()
	if err != nil {
		t.Fatal(err)
	}
	raw.HSet(ctx, eb.tok, fieldData, vals[fieldData], fieldFence, vals[fieldFence], fieldFingerprint, vals[fieldFingerprint])
	if snap, _ := b.load(ctx, eb); snap.found {
		t.Fatalf("b opened a's token %q", snap.Token.Value)
	}

	// Replay: keep a's first value, let a publish a newer one, put the old back with the new fence.
	old := vals[fieldData]
	a.Forget(ctx, alice, tokA.Value)
	if _, _, err := a.Fetch(ctx, alice, xa.fetch); err != nil {
		t.Fatal(err)
	}
	raw.HSet(ctx, ea.tok, fieldData, old)
	if snap, _ := a.load(ctx, ea); snap.found {
		t.Fatalf("an old value replayed under the newer fence opened: %q", snap.Token.Value)
	}
}

func TestFencingRejectsAStalledLeaseHolder(t *testing.T) {
	srv := redisserver.Start(t, 0)
	release := make(chan struct{})
	stalled := func(ctx context.Context, key tokencache.Key) (tokencache.Token, error) {
		<-release
		return tokencache.Token{Value: "stale-token", Expiry: time.Now().Add(time.Hour)}, nil
	}
	a := newTier(t, srv, func(c *Config) { c.LeaseTTL = 100 * time.Millisecond })
	b := newTier(t, srv, func(c *Config) { c.Wait = 10 * time.Second })

	aDone := make(chan tokencache.Token)
	go func() {
		tok, _, _ := a.Fetch(context.Background(), alice, stalled)
		aDone <- tok
	}()
	// b waits for a's lease to lapse, takes over and publishes.
	x := &exchanger{name: "b"}
	eventually(t, func() bool { return srv.Client().Exists(context.Background(), a.entry(alice).lease).Val() == 1 })
	tok, outcome, err := b.Fetch(context.Background(), alice, x.fetch)
	if err != nil || outcome != Exchanged {
		t.Fatalf("b: %v %v", outcome, err)
	}
	close(release)
	if stale := <-aDone; stale.Value != "stale-token" {
		t.Fatalf("a's caller got %q, want its own token", stale.Value)
	}

	c := newTier(t, srv, nil)
	got, outcome, _ := c.Fetch(context.Background(), alice, (&exchanger{name: "c"}).fetch)
	if outcome != Shared || got.Value != tok.Value {
		t.Fatalf("after the stalled holder published: outcome %v, token %q, want b's %q", outcome, got.Value, tok.Value)
	}
}

func TestWaiterFallsBackWhenTheHolderPublishesNothing(t *testing.T) {
	srv := redisserver.Start(t, 0)
	tier := newTier(t, srv, func(c *Config) { c.Wait = 300 * time.Millisecond })
	// A lease held by a gateway that died before publishing.
	srv.Client().Set(context.Background(), tier.entry(alice).lease, "999", time.Minute)
	x := &exchanger{}
	tok, outcome, err := tier.Fetch(context.Background(), alice, x.fetch)
	if err != nil || outcome != FallbackTimeout || tok.Value == "" || x.calls.Load() != 1 {
		t.Fatalf("outcome %v, err %v, %d exchanges", outcome, err, x.calls.Load())
	}
}

func TestFailedExchangeReleasesTheLease(t *testing.T) {
	srv := redisserver.Start(t, 0)
	a, b := newTier(t, srv, nil), newTier(t, srv, nil)
	failing := &exchanger{err: errors.New("zapier said no")}
	if _, outcome, err := a.Fetch(context.Background(), alice, failing.fetch); err == nil || outcome != Exchanged {
		t.Fatalf("a: outcome %v, err %v", outcome, err)
	}
	if srv.Client().Exists(context.Background(), a.entry(alice).lease).Val() != 0 {
		t.Fatal("the lease outlived the failed exchange")
	}
	if _, outcome, err := b.Fetch(context.Background(), alice, (&exchanger{}).fetch); err != nil || outcome != Exchanged {
		t.Fatalf("b: outcome %v, err %v, want its own exchange at once", outcome, err)
	}
}

func TestTokenNearExpiryIsNotShared(t *testing.T) {
	srv := redisserver.Start(t, 0)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	a := newTier(t, srv, func(c *Config) { c.Now = now })
	b := newTier(t, srv, func(c *Config) { c.Now = now })
	x := &exchanger{ttl: time.Hour}
	first, _, _ := a.Fetch(context.Background(), alice, x.fetch)

	clock.Add(int64(time.Hour - 2*DefaultMinFresh)) // still fresh
	if tok, outcome, _ := b.Fetch(context.Background(), alice, x.fetch); outcome != Shared || tok.Value != first.Value {
		t.Fatalf("fresh token: outcome %v", outcome)
	}
	clock.Add(int64(DefaultMinFresh + time.Second)) // within MinFresh of expiry: b is refreshing ahead
	if tok, outcome, _ := b.Fetch(context.Background(), alice, x.fetch); outcome != Exchanged || tok.Value == first.Value {
		t.Fatalf("token about to expire: outcome %v, same token %v", outcome, tok.Value == first.Value)
	}
}

func TestForgetDropsOnlyThatToken(t *testing.T) {
	srv := redisserver.Start(t, 0)
	tier := newTier(t, srv, nil)
	x := &exchanger{}
	ctx := context.Background()
	tok, _, _ := tier.Fetch(ctx, alice, x.fetch)
	tier.Forget(ctx, alice, "some-older-token")
	if _, outcome, _ := tier.Fetch(ctx, alice, x.fetch); outcome != Shared {
		t.Fatalf("after forgetting another token: outcome %v", outcome)
	}
	tier.Forget(ctx, alice, tok.Value)
	fresh, outcome, _ := tier.Fetch(ctx, alice, x.fetch)
	if outcome != Exchanged || fresh.Value == tok.Value {
		t.Fatalf("after forgetting the token: outcome %v", outcome)
	}
	tier.Evict(ctx, alice)
	if _, outcome, _ := tier.Fetch(ctx, alice, x.fetch); outcome != Exchanged {
		t.Fatalf("after evicting: outcome %v", outcome)
	}
}

func TestPurgeRemovesThisNamespaceOnly(t *testing.T) {
	srv := redisserver.Start(t, 0)
	ctx := context.Background()
	tier := newTier(t, srv, func(c *Config) { c.Prefix = "odd*[prefix]:" })
	other := newTier(t, srv, func(c *Config) { c.Prefix = "odd*[prefix]:"; c.Namespace = "client-b" })
	x := &exchanger{}
	for _, user := range []string{"u1", "u2", "u3"} {
		_, _, _ = tier.Fetch(ctx, tokencache.Key{Tenant: "t", User: user}, x.fetch)
	}
	_, _, _ = other.Fetch(ctx, alice, x.fetch)
	n, err := tier.Purge(ctx)
	if err != nil || n != 3 {
		t.Fatalf("purged %d, %v; want 3", n, err)
	}
	if _, outcome, _ := other.Fetch(ctx, alice, x.fetch); outcome != Shared {
		t.Fatalf("the other namespace's token was purged: outcome %v", outcome)
	}
	if _, outcome, _ := tier.Fetch(ctx, tokencache.Key{Tenant: "t", User: "u1"}, x.fetch); outcome != Exchanged {
		t.Fatalf("a purged token was served: outcome %v", outcome)
	}
}

// availability records OnAvailability calls.
type availability struct {
	mu     sync.Mutex
	events []bool
}

func (a *availability) record(up bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, up)
}

func (a *availability) seen() []bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]bool(nil), a.events...)
}

func TestRedisDownFallsBackAndRecovers(t *testing.T) {
	srv := redisserver.Start(t, 0)
	avail := new(availability)
	tier := newTier(t, srv, func(c *Config) { c.Backoff = 100 * time.Millisecond; c.OnAvailability = avail.record })
	x := &exchanger{}
	ctx := context.Background()

	srv.Kill()
	for i := range 3 {
		tok, outcome, err := tier.Fetch(ctx, tokencache.Key{Tenant: "t", User: fmt.Sprint(i)}, x.fetch)
		if err != nil || tok.Value == "" || outcome != FallbackUnavailable {
			t.Fatalf("Redis down, fetch %d: outcome %v, err %v", i, outcome, err)
		}
	}
	if got := avail.seen(); len(got) != 1 || got[0] {
		t.Fatalf("availability events %v, want one 'down'", got)
	}

	srv.Restart()
	recovered := false
	eventually(t, func() bool {
		_, outcome, err := tier.Fetch(ctx, alice, x.fetch)
		if err != nil {
			t.Fatal(err)
		}
		recovered = outcome == Exchanged || outcome == Shared
		return recovered
	})
	if got := avail.seen(); len(got) != 2 || !got[1] {
		t.Fatalf("availability events %v, want down then up", got)
	}
	other := newTier(t, srv, nil)
	if _, outcome, _ := other.Fetch(ctx, alice, x.fetch); outcome != Shared {
		t.Fatalf("after recovery the token is not shared: outcome %v", outcome)
	}
}

func TestSlowRedisFallsBack(t *testing.T) {
	srv := redisserver.Start(t, 0)
	tier := newTier(t, srv, func(c *Config) { c.Timeout = 100 * time.Millisecond; c.Backoff = 50 * time.Millisecond })
	x := &exchanger{}
	ctx := context.Background()
	srv.Pause()
	tok, outcome, err := tier.Fetch(ctx, alice, x.fetch)
	if err != nil || tok.Value == "" || outcome != FallbackUnavailable {
		t.Fatalf("Redis stuck: outcome %v, err %v", outcome, err)
	}
	srv.Resume()
	eventually(t, func() bool {
		_, outcome, _ := tier.Fetch(ctx, alice, x.fetch)
		return outcome == Exchanged || outcome == Shared
	})
}

func TestNewRefusesBadConfigWithoutLeakingIt(t *testing.T) {
	if _, err := New(Config{URL: "redis://127.0.0.1:6379", Key: testKey[:16]}); err == nil {
		t.Error("a 16-byte key was accepted")
	}
	_, err := New(Config{URL: "redis://:hunter2-password@[::1", Key: testKey})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("malformed URL: %v", err)
	}
	if _, err := New(Config{URL: "http://127.0.0.1", Key: testKey}); err == nil {
		t.Error("an http URL was accepted")
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A tier closed by a config reload while a fetch runs falls back quietly:
// Redis did nothing wrong.
func TestClosedTierFallsBackWithoutBlamingRedis(t *testing.T) {
	srv := redisserver.Start(t, 0)
	avail := new(availability)
	tier := newTier(t, srv, func(c *Config) { c.OnAvailability = avail.record })
	_ = tier.Close()
	tok, outcome, err := tier.Fetch(context.Background(), alice, (&exchanger{}).fetch)
	if err != nil || tok.Value == "" || outcome != FallbackUnavailable {
		t.Fatalf("outcome %v, err %v", outcome, err)
	}
	if got := avail.seen(); len(got) != 0 || !tier.Available() {
		t.Fatalf("availability events %v, available %v", got, tier.Available())
	}
}
