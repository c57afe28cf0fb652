package mcpgateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// lockingKV is a memKV with storage locks, as Caddy storage has: two
// Tokens over one lockingKV are two gateways sharing storage.
type lockingKV struct {
	*memKV
	mu    sync.Mutex
	locks map[string]chan struct{}
}

func newLockingKV() *lockingKV {
	return &lockingKV{memKV: newMemKV(), locks: map[string]chan struct{}{}}
}

func (k *lockingKV) lockCh(name string) chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch, ok := k.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		k.locks[name] = ch
	}
	return ch
}

func (k *lockingKV) Lock(ctx context.Context, name string) error {
	select {
	case k.lockCh(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *lockingKV) Unlock(_ context.Context, name string) error {
	<-k.lockCh(name)
	return nil
}

// rotatingZapier issues a new refresh token with every refresh and
// refuses a used one, as Zapier does.
type rotatingZapier struct {
	mu        sync.Mutex
	valid     map[string]bool
	n         int
	refreshes int
}

func (z *rotatingZapier) refresh(_ context.Context, _ Identity, rec Record) (Record, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if !z.valid[rec.RefreshToken] {
		return Record{}, fmt.Errorf("invalid_grant: %w", ErrAuthorizationRequired)
	}
	delete(z.valid, rec.RefreshToken)
	z.n++
	z.refreshes++
	rec.AccessToken, rec.RefreshToken = fmt.Sprintf("at-%d", z.n), fmt.Sprintf("rt-%d", z.n)
	z.valid[rec.RefreshToken] = true
	rec.Expiry = time.Now().Add(time.Hour)
	return rec, nil
}

// Two gateways sharing storage, many calls on each meeting the same
// refused token: one refresh in all, and every call gets its result
// (without the storage lock the second gateway's refresh would be refused
// and the user sent to authorize again).
func TestTokensCoalesceRefreshAcrossGatewaysSharingStorage(t *testing.T) {
	ctx := context.Background()
	kv := newLockingKV()
	zapier := &rotatingZapier{valid: map[string]bool{"rt-0": true}}
	var gateways []*Tokens
	for range 2 {
		gateways = append(gateways, NewTokens(newStore(t, kv, "0123456789abcdef-secret"), zapier.refresh, time.Second, nil))
	}
	if err := gateways[0].Save(ctx, alice, &Record{App: "A", ServerURL: "https://mcp.example/a", AccessToken: "at-0",
		RefreshToken: "rt-0", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make(chan string, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := gateways[i%2].Refresh(ctx, alice, "A", "at-0")
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- rec.AccessToken
		}()
	}
	wg.Wait()
	close(got)
	for tok := range got {
		if tok != "at-1" {
			t.Errorf("a call got %q, want at-1", tok)
		}
	}
	if zapier.refreshes != 1 {
		t.Fatalf("%d refreshes, want 1", zapier.refreshes)
	}
	// The storage lock is free again.
	if n := len(kv.lockCh(gateways[0].Store().lockName(alice, "A"))); n != 0 {
		t.Fatalf("the storage lock is still held")
	}
}
