package triggers

import (
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// identityForms are the ways an id can sit in storage reversibly.
func identityForms(id string) []string {
	b := []byte(id)
	forms := []string{id, hex.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		base32.StdEncoding.EncodeToString(b), base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b),
		keyPartEncoding.EncodeToString(b)}
	for i, f := range forms {
		forms[i] = strings.ToLower(f)
	}
	return forms
}

// assertNoRawIdentity fails if any key or value of s names one of ids in
// clear or in a reversible encoding.
func assertNoRawIdentity(t *testing.T, s *memStorage, ids ...string) {
	t.Helper()
	for _, k := range s.Keys() {
		v, _ := s.Get(k)
		hay := strings.ToLower(k + "\n" + string(v))
		for _, id := range ids {
			for _, f := range identityForms(id) {
				if strings.Contains(hay, f) {
					t.Errorf("storage key %s holds %q (as %q)", k, id, f)
				}
			}
		}
	}
}

// Ids long enough that their encodings cannot turn up by chance.
var atRestID = Identity{Tenant: "tenant-acme-corp", User: "user-alice-0042"}

func TestNoIdentityAtRest(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLeases = 1 })
	e.id = atRestID
	e.conn = e.fz.AddConnection(e.id.Tenant, e.id.User, "app-uuid", "Slack")
	v := e.subscribe("s1")
	e.inject(v.InboxID, 2)
	e.drain("s1") // delivered
	e.recv.setStatus(func(int) int { return http.StatusInternalServerError })
	ids := e.inject(v.InboxID, 1)
	e.drain("s1") // dead-lettered (max_leases 1)
	if _, err := e.mgr.Pause(context.Background(), e.id, "s1"); err != nil {
		t.Fatal(err)
	}
	dls, err := e.mgr.DeadLetters(context.Background())
	if err != nil || len(dls) != 1 || dls[0].ID != ids[0] || dls[0].Tenant != e.id.Tenant || dls[0].User != e.id.User ||
		!strings.Contains(string(dls[0].Body), e.id.User) {
		t.Fatalf("dead letters (opened): %+v %v", dls, err)
	}
	assertNoRawIdentity(t, e.store, e.id.Tenant, e.id.User)
	// The delivery loop still finds the owner: a reload opens the sealed
	// owners, and the subscription is listed for its user.
	e.mgr.reload(context.Background())
	if list, err := e.mgr.List(context.Background(), e.id); err != nil || len(list) != 1 || list[0].User != e.id.User {
		t.Fatalf("List: %+v %v", list, err)
	}
}

// Records of the previous version (owner in clear, tenant and user base32
// in the path) are moved and sealed when read, and by the reload.
func TestOlderRecordsAreMigrated(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DrainInterval = time.Hour })
	ctx := context.Background()
	e.id = atRestID
	e.conn = e.fz.AddConnection(e.id.Tenant, e.id.User, "app-uuid", "Slack")
	v := e.subscribe("s1")
	// Write it back as the previous version did, and a second one only
	// the previous version knows, and an old dead letter.
	rec, _ := json.Marshal(v.Record)
	newKey, _ := e.mgr.subKey(ctx, e.id, "s1")
	if err := e.store.Delete(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.store.Store(ctx, legacySubKey(e.id, "s1"), rec))
	r2 := v.Record
	r2.Name = "s2"
	rec2, _ := json.Marshal(r2)
	must(e.store.Store(ctx, legacySubKey(e.id, "s2"), rec2))
	oldDead, _ := json.Marshal(map[string]any{"id": "msg-1", "tenant": e.id.Tenant, "user": e.id.User, "subscription": "s1",
		"body":     json.RawMessage(`{"type":"trigger.event","tenant":"` + e.id.Tenant + `","user":"` + e.id.User + `"}`),
		"attempts": 3, "last_error": "HTTP 500", "created": time.Now()})
	must(e.store.Store(ctx, deadKey("msg-1"), oldDead))

	// Read by a lookup: moved.
	got, err := e.mgr.Get(ctx, e.id, "s1")
	if err != nil || got.InboxID != v.InboxID || got.User != e.id.User {
		t.Fatalf("Get of an older record: %+v %v", got, err)
	}
	// Read by the background reload (a fresh gateway starting): moved.
	other, err := NewManager(e.mgr.cfg)
	must(err)
	other.reload(ctx)
	other.mu.Lock()
	n := len(other.subs)
	other.mu.Unlock()
	if n != 2 {
		t.Fatalf("the reload found %d subscriptions, want 2", n)
	}
	dls, err := other.DeadLetters(ctx)
	if err != nil || len(dls) != 1 || dls[0].User != e.id.User || !strings.Contains(string(dls[0].Body), e.id.Tenant) {
		t.Fatalf("older dead letter: %+v %v", dls, err)
	}
	assertNoRawIdentity(t, e.store, e.id.Tenant, e.id.User)
	if list, err := e.mgr.List(ctx, e.id); err != nil || len(list) != 2 {
		t.Fatalf("List after migration: %+v %v", list, err)
	}
	// A sealed owner moved to another record does not open.
	k2, _ := e.mgr.subKey(ctx, e.id, "s2")
	data, _ := e.store.Get(k2)
	must(e.store.Store(ctx, newKey, data))
	if _, _, err := e.mgr.readSub(ctx, newKey); !errors.Is(err, errUnreadable) {
		t.Fatalf("a record moved to another place opened: %v", err)
	}
}

func TestSubscriptionLimitPerUser(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSubscriptionsPerUser = 2 })
	ctx := context.Background()
	e.subscribe("s1")
	e.subscribe("s2")
	spec := Spec{App: "SlackCLIAPI", Trigger: "new_message", Inputs: json.RawMessage(`{"channel":"C1"}`), ConnectionID: e.conn}
	if _, _, err := e.mgr.Ensure(ctx, e.id, "s3", spec); !errors.Is(err, ErrSubscriptionLimit) {
		t.Fatalf("a third subscription: %v", err)
	}
	// The existing ones can still be ensured (and conflict as before).
	if _, created, err := e.mgr.Ensure(ctx, e.id, "s2", spec); err != nil || created {
		t.Fatalf("ensuring an existing one: %v %v", created, err)
	}
	// Another user has a budget of their own; one deleted frees a place.
	if _, _, err := e.mgr.Ensure(ctx, Identity{Tenant: "org", User: "bob"}, "s3", Spec{App: "SlackCLIAPI", Trigger: "t"}); err != nil {
		t.Fatalf("another user's: %v", err)
	}
	if err := e.mgr.Delete(ctx, e.id, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, created, err := e.mgr.Ensure(ctx, e.id, "s3", spec); err != nil || !created {
		t.Fatalf("after a delete: %v %v", created, err)
	}
}

// 200 concurrent notifications for unknown inboxes, with tokens the
// gateway minted, reload the subscriptions once (not 200 times); forged
// tokens reload nothing.
func TestUnknownNotificationsDoNotAmplify(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NotifyKey = []byte("notify-key"); c.DrainInterval = time.Hour })
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		e.subscribe(name)
	}
	var loads atomic.Int64
	e.store.OnLoad = func(key string) {
		if strings.HasPrefix(key, subsPrefix+"/") {
			loads.Add(1)
		}
	}
	ctx := context.Background()
	token := e.mgr.NotifyToken("czg-unknown")
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.mgr.Notify(ctx, "unknown-inbox-"+strings.Repeat("x", i%7), token) {
				t.Error("an unknown inbox was honoured")
			}
		}()
	}
	wg.Wait()
	if n := loads.Load(); n > 5 { // one reload reads the five records
		t.Fatalf("200 unknown notifications loaded %d subscription records; want one reload (5)", n)
	}
	loads.Store(0)
	forged := strings.Repeat("ab", 32)
	for range 50 {
		if e.mgr.Notify(ctx, "unknown-inbox", forged) || e.mgr.Notify(ctx, "unknown-inbox", "not-hex") {
			t.Fatal("a forged token was honoured")
		}
	}
	if n := loads.Load(); n != 0 {
		t.Fatalf("forged tokens loaded %d records", n)
	}
	if e.mgr.NotifyTokenForm(forged) != TokenMalformed || e.mgr.NotifyTokenForm(token) != TokenMinted ||
		e.mgr.NotifyTokenForm(strings.Repeat("0", 32)) != TokenLegacy {
		t.Fatal("token forms")
	}
}

// An inbox registered by the previous version (a 32-hex token) still
// wakes its subscription, without reloads.
func TestLegacyNotifyTokenStillWakes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NotifyKey = []byte("notify-key"); c.DrainInterval = time.Hour })
	v := e.subscribe("s1")
	if !e.mgr.Notify(context.Background(), v.InboxID, e.mgr.legacyNotifyToken(v.InboxKey)) {
		t.Fatal("the previous version's token was refused")
	}
}

func TestForgetStores(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLeases = 1; c.DrainInterval = time.Hour })
	ctx := context.Background()
	bob := Identity{Tenant: "org", User: "bob"}
	spec := Spec{App: "SlackCLIAPI", Trigger: "t"}
	va := e.subscribe("s1")
	vb, _, err := e.mgr.Ensure(ctx, bob, "s1", spec)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := e.mgr.Ensure(ctx, Identity{Tenant: "other", User: "alice"}, "s1", spec)
	if err != nil {
		t.Fatal(err)
	}
	e.recv.setStatus(func(int) int { return http.StatusInternalServerError })
	e.inject(va.InboxID, 1)
	e.drain("s1") // alice's dead letter
	subs, dead := e.mgr.SubscriptionStore(), e.mgr.DeadLetterStore()

	// One user: alice's inbox goes at Zapier, bob's stays.
	rep, err := subs.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 1 || rep.Upstream != 1 {
		t.Fatalf("forget alice's subscriptions: %+v %v", rep, err)
	}
	if rep, err := dead.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"}); err != nil || rep.Deleted != 1 {
		t.Fatalf("forget alice's dead letters: %+v %v", rep, err)
	}
	if _, err := e.mgr.Get(ctx, e.id, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alice's subscription is still there: %v", err)
	}
	alive := map[string]bool{}
	for _, ib := range e.fz.Inboxes() {
		alive[ib.ID] = true
	}
	if alive[va.InboxID] || !alive[vb.InboxID] || !alive[other.InboxID] {
		t.Fatalf("inboxes at Zapier after forgetting alice: %v", alive)
	}
	// Idempotent.
	if rep, err := subs.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"}); err != nil || rep.Deleted != 0 {
		t.Fatalf("again: %+v %v", rep, err)
	}
	// The whole tenant, keeping what is at Zapier: bob's record goes, his
	// inbox stays; the other tenant is untouched.
	rep, err = subs.Forget(ctx, gateway.Scope{Tenant: "org", KeepUpstream: true})
	if err != nil || rep.Deleted != 1 || rep.Upstream != 0 {
		t.Fatalf("forget the tenant: %+v %v", rep, err)
	}
	if _, err := e.mgr.Get(ctx, bob, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob's subscription is still there: %v", err)
	}
	if _, err := e.mgr.Get(ctx, Identity{Tenant: "other", User: "alice"}, "s1"); err != nil {
		t.Fatalf("the other tenant's subscription: %v", err)
	}
	e.mgr.mu.Lock()
	n := len(e.mgr.subs)
	e.mgr.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d subscriptions still drained, want 1", n)
	}
}

// A failed inbox delete at Zapier keeps the record, is reported, and a
// second run finishes.
func TestForgetRetriesAFailedUpstreamDelete(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DrainInterval = time.Hour })
	ctx := context.Background()
	e.subscribe("s1")
	var fail atomic.Bool
	fail.Store(true)
	call := e.mgr.cfg.API.Call
	e.mgr.cfg.API.Call = func(ctx context.Context, id Identity, f func(context.Context, string) error) error {
		if fail.Load() {
			return errors.New("zapier is down")
		}
		return call(ctx, id, f)
	}
	scope := gateway.Scope{Tenant: e.id.Tenant, User: e.id.User}
	rep, err := e.mgr.SubscriptionStore().Forget(ctx, scope)
	if err == nil || rep.Failed != 1 || rep.Deleted != 0 {
		t.Fatalf("with Zapier down: %+v %v", rep, err)
	}
	if _, err := e.mgr.Get(ctx, e.id, "s1"); err != nil {
		t.Fatalf("the record went although its inbox stayed: %v", err)
	}
	fail.Store(false)
	if rep, err := e.mgr.SubscriptionStore().Forget(ctx, scope); err != nil || rep.Deleted != 1 || rep.Upstream != 1 {
		t.Fatalf("second run: %+v %v", rep, err)
	}
}
