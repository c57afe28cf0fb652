package gateway

import (
	"context"
	"errors"
	"testing"
)

func TestRegistryWalksEveryStoreInPhaseOrderAndReportsFailures(t *testing.T) {
	var visited []string
	store := func(name string, err error) StoreFunc {
		return StoreFunc{Name: name, Fn: func(_ context.Context, s Scope) (StoreReport, error) {
			visited = append(visited, name)
			return StoreReport{Deleted: 1}, err
		}}
	}
	var r Registry
	r.Register(PhaseTokens, store("tokens", nil))
	r.Register(PhaseLocal, store("runs", errors.New("disk full")))
	r.Register(PhaseUpstream, store("connections", nil))
	r.Register(PhaseLocal, store("runs", nil)) // a reload registers again: replaced
	rep := r.Forget(context.Background(), Scope{Tenant: "acme", User: "alice"})
	if got := []string{"connections", "runs", "tokens"}; len(visited) != 3 || visited[0] != got[0] || visited[1] != got[1] || visited[2] != got[2] {
		t.Fatalf("visited %v, want %v", visited, got)
	}
	if !rep.Complete || len(rep.Stores) != 3 {
		t.Fatalf("report %+v", rep)
	}
	r.Register(PhaseLocal, store("runs", errors.New("disk full")))
	rep = r.Forget(context.Background(), Scope{Tenant: "acme"})
	if rep.Complete || rep.Stores[1].Failed != 1 || rep.Stores[1].Error != "disk full" {
		t.Fatalf("a failing store is not reported: %+v", rep)
	}
}

func TestScopeMatches(t *testing.T) {
	if !(Scope{Tenant: "a"}).Matches(Identity{Tenant: "a", User: "x"}) ||
		(Scope{Tenant: "a", User: "y"}).Matches(Identity{Tenant: "a", User: "x"}) ||
		(Scope{Tenant: "a"}).Matches(Identity{Tenant: "b", User: "x"}) {
		t.Fatal("scope matching is wrong")
	}
}
