package gateway

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func testNamespace() *Namespace {
	return NewNamespace(NamesKeyFunc(func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil }))
}

func TestNamesAreKeyedAndApart(t *testing.T) {
	ctx := context.Background()
	n := testNamespace()
	a, _ := n.Name(ctx, Identity{Tenant: "acme", User: "alice"})
	b, _ := n.Name(ctx, Identity{Tenant: "acme", User: "bob"})
	c, _ := n.Name(ctx, Identity{Tenant: "acmea", User: "lice"})
	tn, _ := n.TenantName(ctx, "acme")
	if a == b || a == c || !IsName(a) || IsName(tn) || strings.Contains(a, "acme") {
		t.Fatalf("names not apart or not keyed: %s %s %s %s", a, b, c, tn)
	}
	other := NewNamespace(NamesKeyFunc(func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{8}, 32), nil }))
	if a2, _ := other.Name(ctx, Identity{Tenant: "acme", User: "alice"}); a2 == a {
		t.Fatal("the name does not depend on the key")
	}
}

func TestSealedOwnerOpensOnlyForItsRecord(t *testing.T) {
	ctx := context.Background()
	n := testNamespace()
	id := Identity{Tenant: "acme", User: "alice"}
	sealed, err := n.SealOwner(ctx, id, []byte("rec-1"))
	if err != nil || strings.Contains(sealed, "alice") {
		t.Fatalf("seal: %q %v", sealed, err)
	}
	got, err := n.OpenOwner(ctx, sealed, []byte("rec-1"))
	if err != nil || got != id {
		t.Fatalf("open: %v %v", got, err)
	}
	if _, err := n.OpenOwner(ctx, sealed, []byte("rec-2")); err != ErrOwnerSealed {
		t.Fatalf("a sealed owner moved to another record opened: %v", err)
	}
	if _, err := n.OpenOwner(ctx, "not base64 !", nil); err != ErrOwnerSealed {
		t.Fatalf("garbage opened: %v", err)
	}
}
