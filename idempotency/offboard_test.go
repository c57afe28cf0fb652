package idempotency

import (
	"bytes"
	"context"
	"testing"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Offboarding finds a user's records by keyed name and a tenant's by
// sealed owner, and nothing of anyone else.
func TestUserStoreForgetsAUserAndATenant(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, newMemStorage(), newFakeClock())
	names := gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{1}, 32), nil }))
	aad := []byte("test owner")
	store := UserStore{Store: s, Names: names, OwnerAAD: aad}
	as := func(tenant, user, key string) {
		id := gateway.Identity{Tenant: tenant, User: user}
		name, _ := names.Name(ctx, id)
		sealed, _ := names.SealOwner(ctx, id, aad)
		out, err := s.BeginAs(ctx, Caller{Scope: name, Subject: name, Sealed: sealed}, key, []byte("b"))
		if err != nil {
			t.Fatal(err)
		}
		if err := out.Finish(ctx, created); err != nil {
			t.Fatal(err)
		}
	}
	as("acme", "alice", "k1")
	as("acme", "alice", "k2")
	as("acme", "bob", "k1")
	as("other", "alice", "k1")
	rep, err := store.Forget(ctx, gateway.Scope{Tenant: "acme", User: "alice"})
	if err != nil || rep.Deleted != 2 {
		t.Fatalf("one user: %+v %v", rep, err)
	}
	rep, err = store.Forget(ctx, gateway.Scope{Tenant: "acme"})
	if err != nil || rep.Deleted != 1 {
		t.Fatalf("the tenant: %+v %v", rep, err)
	}
	if n, _, _ := s.ForgetWhere(ctx, func(string, string) bool { return true }); n != 1 {
		t.Fatalf("another tenant's records: %d left, want 1", n)
	}
}
