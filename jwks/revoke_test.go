package jwks

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRevokeRemovesTheKeyAtOnce: unlike an immediate rotation, a revoked key
// leaves the JWKS in the same call, a fresh key signs, and another manager
// sharing the storage drops it on its next Sync and reports the revocation.
func TestRevokeRemovesTheKeyAtOnce(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	store := NewMemoryStorage()
	m := loaded(t, store, clock, Config{Overlap: time.Hour})
	other := loaded(t, store, clock, Config{Overlap: time.Hour})
	var seen [][]string
	other.OnRevoke(func(kids []string) { seen = append(seen, kids) })
	leaked := signingKID(t, m)

	signer, err := m.Revoke(ctx, leaked)
	if err != nil {
		t.Fatal(err)
	}
	if signer.KID == leaked || signer.State != StateActive {
		t.Fatalf("Revoke returned %+v", signer)
	}
	if kids := publishedKIDs(t, m); slices.Contains(kids, leaked) || len(kids) != 1 {
		t.Fatalf("JWKS after revoke: %v (revoked %s)", kids, leaked)
	}
	if got := signingKID(t, m); got != signer.KID {
		t.Fatalf("signs with %s, want %s", got, signer.KID)
	}
	if got := m.Revoked(); len(got) != 1 || got[0] != leaked {
		t.Fatalf("Revoked() = %v", got)
	}

	// The other manager still publishes it until it re-reads storage.
	if !slices.Contains(publishedKIDs(t, other), leaked) {
		t.Fatal("other manager dropped the key without reading storage")
	}
	if _, err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if kids := publishedKIDs(t, other); slices.Contains(kids, leaked) {
		t.Fatalf("other manager still publishes %s after Sync: %v", leaked, kids)
	}
	if len(seen) != 1 || !slices.Equal(seen[0], []string{leaked}) {
		t.Fatalf("OnRevoke calls %v", seen)
	}
	// Nothing new to report on the next Sync, nor after a Maintain.
	if _, err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	maintain(t, other)
	if len(seen) != 1 {
		t.Fatalf("OnRevoke called again: %v", seen)
	}

	// A revoked kid never comes back, not even from a stale writer.
	if _, err := m.Revoke(ctx, leaked); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("second Revoke err = %v, want ErrUnknownKey", err)
	}
	if _, err := m.Revoke(ctx, "no-such-kid"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Revoke unknown err = %v", err)
	}
}

// TestRevokeAPendingOrRetiredKey: revoking a key that does not sign leaves
// the signer alone; revoking the signer promotes a pending key.
func TestRevokeAPendingOrRetiredKey(t *testing.T) {
	ctx, clock := context.Background(), newClock()
	m := loaded(t, NewMemoryStorage(), clock, Config{Overlap: time.Hour})
	a := signingKID(t, m)
	next, err := m.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	// Revoking the active key makes the pending one sign now.
	signer, err := m.Revoke(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if signer.KID != next.KID || signingKID(t, m) != next.KID {
		t.Fatalf("signer %s, want the pending %s", signer.KID, next.KID)
	}
	// Schedule another and revoke it while pending: the signer stays.
	pending, err := m.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	signer, err = m.Revoke(ctx, pending.KID)
	if err != nil {
		t.Fatal(err)
	}
	if signer.KID != next.KID || slices.Contains(publishedKIDs(t, m), pending.KID) {
		t.Fatalf("after revoking the pending key: signer %s, JWKS %v", signer.KID, publishedKIDs(t, m))
	}
	// A retired key goes without touching the signer.
	if _, err := m.Rotate(ctx, true); err != nil {
		t.Fatal(err)
	}
	retired := next.KID
	cur := signingKID(t, m)
	if _, err := m.Revoke(ctx, retired); err != nil {
		t.Fatal(err)
	}
	if signingKID(t, m) != cur || slices.Contains(publishedKIDs(t, m), retired) {
		t.Fatalf("revoking a retired key: signer %s (was %s), JWKS %v", signingKID(t, m), cur, publishedKIDs(t, m))
	}
}

// TestRevokedKeysAreDroppedFromAStaleDocument: a document that lists a
// revoked kid among its keys (written by an old gateway) publishes without it.
func TestRevokedKeysAreDroppedFromAStaleDocument(t *testing.T) {
	keys := []*signingKey{}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 2 {
		k, err := generateKey("ES256", now, now.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	data, err := encodeDocument(keys, []revokedKey{{KID: keys[0].kid, RevokedAt: now}})
	if err != nil {
		t.Fatal(err)
	}
	got, revoked, err := decodeDocument(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].kid != keys[1].kid || len(revoked) != 1 {
		t.Fatalf("decoded %d keys, %d revoked", len(got), len(revoked))
	}
}
