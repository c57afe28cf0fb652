package jwks

import (
	"context"
	"slices"
	"testing"
	"time"
)

// Sync picks up what another manager sharing the storage did, without the
// storage lock, and leaves a missing document alone.
func TestSyncPicksUpAnotherManagersRotationWithoutTheLock(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStorage()
	cfg := Config{Issuer: "https://iss", Overlap: time.Hour}
	a, err := NewManager(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewManager(store, cfg)
	if err := a.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := a.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}

	notified := 0
	b.OnChange(func() { notified++ })
	// Another gateway holds the storage lock: Sync does not wait for it.
	if err := store.Lock(ctx, "zapier/keys.json"); err != nil {
		t.Fatal(err)
	}
	changed, err := b.Sync(ctx)
	if err != nil || !changed || notified != 1 {
		t.Fatalf("Sync: changed %v, err %v, notified %d", changed, err, notified)
	}
	if body, _ := a.JWKS(); !slices.Equal(kidsOf(b.Keys()), kidsOf(a.Keys())) || string(body) != string(first(b.JWKS())) {
		t.Fatalf("b publishes %v, a %v", kidsOf(b.Keys()), kidsOf(a.Keys()))
	}
	if !slices.Contains(kidsOf(b.Keys()), next.KID) {
		t.Fatalf("b does not publish the next key %s", next.KID)
	}
	if changed, err := b.Sync(ctx); err != nil || changed {
		t.Fatalf("second Sync: changed %v, err %v", changed, err)
	}

	// A missing document is Maintain's business: Sync keeps what it has.
	empty, _ := NewManager(NewMemoryStorage(), cfg)
	if changed, err := empty.Sync(ctx); err != nil || changed || len(empty.Keys()) != 0 {
		t.Fatalf("Sync of empty storage: changed %v, err %v, keys %v", changed, err, empty.Keys())
	}
}

func kidsOf(infos []KeyInfo) []string {
	kids := make([]string, len(infos))
	for i, k := range infos {
		kids[i] = k.KID
	}
	return kids
}

func first(body []byte, _ string) []byte { return body }
