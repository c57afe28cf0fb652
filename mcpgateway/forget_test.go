package mcpgateway

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/memstorage"
)

func testNamespace() *gateway.Namespace {
	return gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil }))
}

// Forget of one user deletes that user's records (every app); of a tenant,
// every record whose sealed owner is of the tenant, and no other. A record
// from before sealed owners gets its owner on first use; one never used
// since is reported as unattributed.
func TestAuthorizationStoreForgets(t *testing.T) {
	ctx := context.Background()
	kv := memstorage.New()
	st, err := NewStore(kv, []byte("0123456789abcdef-secret"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	carol, dave := Identity{Tenant: "org", User: "carol"}, Identity{Tenant: "other", User: "dave"}
	tokens := NewTokens(st, nil, time.Second, nil)
	// carol's record is from before sealed owners.
	_ = tokens.Save(ctx, carol, &Record{App: "Slack", ServerURL: "https://x", AccessToken: "at"})
	st.Owners = testNamespace()
	for _, id := range []Identity{alice, bob, dave} {
		for _, app := range []string{"Slack", "Sheets"} {
			if err := tokens.Save(ctx, id, &Record{App: app, ServerURL: "https://x", AccessToken: "at"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, key := range kv.Keys() {
		if v, _ := kv.Get(key); strings.Contains(string(v), "alice") || strings.Contains(key, "alice") {
			t.Fatalf("an owner in clear: %s", key)
		}
	}
	var unattributed int
	store := AuthorizationStore{Tokens: tokens, Unattributed: func(n int) { unattributed += n }}

	rep, err := store.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 2 {
		t.Fatalf("forget alice: %+v %v", rep, err)
	}
	if recs, _ := st.List(ctx, alice); len(recs) != 0 {
		t.Fatalf("alice keeps %v", recs)
	}
	rep, err = store.Forget(ctx, gateway.Scope{Tenant: "org"})
	if err != nil || rep.Deleted != 2 || unattributed != 1 {
		t.Fatalf("forget org before carol's record was used: %+v %v, %d unattributed", rep, err, unattributed)
	}
	if _, err := tokens.Current(ctx, carol, "Slack"); err != nil { // first use: migrated
		t.Fatal(err)
	}
	unattributed = 0
	rep, err = store.Forget(ctx, gateway.Scope{Tenant: "org"})
	if err != nil || rep.Deleted != 1 || unattributed != 0 {
		t.Fatalf("forget org after carol's record was used: %+v %v, %d unattributed", rep, err, unattributed)
	}
	if recs, _ := st.List(ctx, dave); len(recs) != 2 {
		t.Fatalf("another tenant's records went: %v", recs)
	}
}

// Forgetting a user closes the user's aggregate sessions, upstream
// sessions and tool list; other users keep theirs.
func TestSessionStoreForgets(t *testing.T) {
	agg, _ := newAggregator(t)
	front := aggFront(t, agg)
	a := initialize(t, front.URL+"?user=alice")
	initialize(t, front.URL+"?user=alice")
	b := initialize(t, front.URL+"?user=bob")
	rep, err := SessionStore{Aggregator: agg}.Forget(context.Background(), gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 2 {
		t.Fatalf("forget alice: %+v %v", rep, err)
	}
	if st := agg.Stats(); st.Sessions != 1 || st.Users != 1 {
		t.Fatalf("after forgetting alice: %+v", st)
	}
	if resp, _ := post(t, front.URL+"?user=alice", a, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != 404 {
		t.Fatalf("alice's forgotten session: %d", resp.StatusCode)
	}
	if resp, _ := post(t, front.URL+"?user=bob", b, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != 200 {
		t.Fatalf("bob's session: %d", resp.StatusCode)
	}
	rep, _ = SessionStore{Aggregator: agg}.Forget(context.Background(), gateway.Scope{Tenant: "org"})
	if rep.Deleted != 1 || agg.Stats().Sessions != 0 {
		t.Fatalf("forget the tenant: %+v %+v", rep, agg.Stats())
	}
}
