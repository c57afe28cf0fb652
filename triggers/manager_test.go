package triggers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/internal/memstorage"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"go.uber.org/zap/zaptest"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/integration/fakezapier"
	"github.com/zapgate/caddy-zapier/webhooksig"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// memStorage is the shared in-memory storage of the tests.
type memStorage = memstorage.Storage

func newMemStorage() *memStorage { return memstorage.New() }

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// testNames is the names key of the tests' storage.
var testNames = gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil })

// delivery is one POST the partner's receiver got, verified with the
// reference Standard Webhooks library.
type delivery struct {
	ID   string
	Body map[string]any
}

type receiver struct {
	t      testing.TB
	url    string
	mu     sync.Mutex
	got    []delivery
	status func(n int) int // the answer to the n-th request (1-based)
	ch     chan delivery
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{t: t, status: func(int) int { return http.StatusNoContent }, ch: make(chan delivery, 1000)}
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("the reference library refused a delivery: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("delivery body: %v", err)
		}
		d := delivery{ID: r.Header.Get("webhook-id"), Body: v}
		rc.mu.Lock()
		rc.got = append(rc.got, d)
		status := rc.status(len(rc.got))
		rc.mu.Unlock()
		w.WriteHeader(status)
		if status < 300 {
			rc.ch <- d
		}
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL
	return rc
}

func (rc *receiver) setStatus(f func(n int) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status = f
}

func (rc *receiver) all() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

type env struct {
	t      testing.TB
	offset atomic.Int64 // the fake's clock offset, in ns
	fz     *fakezapier.Server
	mgr    *Manager
	store  *memStorage
	recv   *receiver
	id     Identity
	conn   string
}

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t}
	fz := fakezapier.New(fakezapier.Config{ClientID: "c", ClientSecret: "s",
		Now: func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }})
	srv := httptest.NewServer(fz)
	t.Cleanup(srv.Close)
	t.Cleanup(fz.Close)
	t.Cleanup(fz.CloseInboxStreams) // before srv.Close, which waits for open streams
	client, err := zapierapi.New(zapierapi.Config{ClientID: "c", ClientSecret: "s", TokenURL: srv.URL + "/oauth/token"})
	if err != nil {
		t.Fatal(err)
	}
	var tmu sync.Mutex
	tokens := map[Identity]string{}
	api := &InboxAPI{Client: client, BaseURL: srv.URL + DefaultPrefix,
		Call: func(ctx context.Context, id Identity, call func(context.Context, string) error) error {
			tmu.Lock()
			tok, ok := tokens[id]
			if !ok {
				tok = fz.IssueAccessToken(id.Tenant, id.User, "external")
				tokens[id] = tok
			}
			tmu.Unlock()
			return call(ctx, tok)
		}}
	recv := newReceiver(t)
	signer, err := webhooksig.NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStorage()
	cfg := Config{
		API: api, Sender: &Sender{URL: recv.url, Signer: signer, Timeout: 5 * time.Second}, Storage: store, Names: testNames,
		RetryBase: time.Millisecond, RetryMax: time.Millisecond,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }, // no waiting in tests
	}
	for _, f := range mutate {
		f(&cfg)
	}
	mgr, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Stop)
	e.fz, e.mgr, e.store, e.recv = fz, mgr, store, recv
	e.id = Identity{Tenant: "org", User: "alice"}
	e.conn = fz.AddConnection("org", "alice", "app-uuid", "Slack")
	return e
}

func (e *env) subscribe(name string) View {
	e.t.Helper()
	v, created, err := e.mgr.Ensure(context.Background(), e.id, name, Spec{App: "SlackCLIAPI", Trigger: "new_message",
		Inputs: json.RawMessage(`{"channel":"C1"}`), ConnectionID: e.conn})
	if err != nil || !created {
		e.t.Fatalf("Ensure: %v (created %v)", err, created)
	}
	return v
}

func (e *env) inject(inboxID string, n int) []string {
	var ids []string
	for i := range n {
		id := e.fz.InjectTriggerEvent(inboxID, map[string]any{"n": i})
		if id == "" {
			e.t.Fatal("the fake refused the event")
		}
		ids = append(ids, id)
	}
	return ids
}

func (e *env) drain(name string) {
	e.t.Helper()
	if err := e.mgr.Drain(context.Background(), e.id, name); err != nil {
		e.t.Fatalf("Drain: %v", err)
	}
}

func TestEnsureIsIdempotentAndConflicts(t *testing.T) {
	e := newEnv(t)
	v := e.subscribe("slack-new")
	if v.InboxID == "" || v.Status != "active" || !strings.HasPrefix(v.InboxKey, "czg-") || !strings.HasSuffix(v.InboxKey, "-slack-new") {
		t.Fatalf("view: %+v", v)
	}
	ib := e.fz.Inboxes()
	if len(ib) != 1 || ib[0].Key != v.InboxKey || ib[0].Subscription.ConnectionID == nil || *ib[0].Subscription.ConnectionID != e.conn {
		t.Fatalf("inboxes at the fake: %+v", ib)
	}
	ctx := context.Background()
	same := Spec{App: "SlackCLIAPI", Trigger: "new_message", Inputs: json.RawMessage(`{ "channel" : "C1" }`), ConnectionID: e.conn}
	if _, created, err := e.mgr.Ensure(ctx, e.id, "slack-new", same); err != nil || created {
		t.Fatalf("second Ensure: created %v, %v", created, err)
	}
	other := same
	other.Trigger = "new_reaction"
	if _, _, err := e.mgr.Ensure(ctx, e.id, "slack-new", other); !errors.Is(err, ErrSubscriptionConflict) {
		t.Fatalf("conflicting Ensure: %v", err)
	}
	if _, _, err := e.mgr.Ensure(ctx, e.id, "bad name/..", same); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
	list, err := e.mgr.List(ctx, e.id)
	if err != nil || len(list) != 1 || list[0].Name != "slack-new" {
		t.Fatalf("List: %+v %v", list, err)
	}
	if l, _ := e.mgr.List(ctx, Identity{Tenant: "org", User: "bob"}); len(l) != 0 {
		t.Fatalf("bob sees %+v", l)
	}
	if len(e.fz.Inboxes()) != 1 {
		t.Fatal("a second inbox was made")
	}
}

func TestDeliverHealthyPartnerExactlyOnce(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeaseLimit = 3 })
	v := e.subscribe("s1")
	ids := e.inject(v.InboxID, 7)
	e.drain("s1")
	got := e.recv.all()
	if len(got) != len(ids) {
		t.Fatalf("delivered %d, want %d", len(got), len(ids))
	}
	for i, d := range got {
		if d.ID != ids[i] || d.Body["message_id"] != ids[i] {
			t.Errorf("delivery %d: webhook-id %q message_id %v, want %q (in order)", i, d.ID, d.Body["message_id"], ids[i])
		}
		for k, want := range map[string]any{"type": "trigger.event", "subscription": "s1", "tenant": "org", "user": "alice",
			"app": "SlackCLIAPI", "trigger": "new_message", "possible_duplicate": false} {
			if d.Body[k] != want {
				t.Errorf("delivery %d: %s = %v, want %v", i, k, d.Body[k], want)
			}
		}
		if p, _ := d.Body["payload"].(map[string]any); p["n"] != float64(i) {
			t.Errorf("delivery %d: payload %v", i, d.Body["payload"])
		}
	}
	for _, m := range e.fz.InboxMessages(v.InboxID) {
		if m.Status != "acked" || m.Acks != 1 || m.LeaseCount != 1 {
			t.Errorf("message %s: %+v", m.ID, m)
		}
	}
	view, _ := e.mgr.Get(context.Background(), e.id, "s1")
	if view.Counts.Delivered != 7 || view.Counts.FailedAttempts != 0 {
		t.Fatalf("counts: %+v", view.Counts)
	}
}

func TestPartnerFailsThenRecovers(t *testing.T) {
	e := newEnv(t) // 3 attempts per lease
	v := e.subscribe("s1")
	ids := e.inject(v.InboxID, 3)
	e.recv.setStatus(func(n int) int {
		if n <= 4 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	e.drain("s1") // 3 failed attempts: the lease is released
	if msgs := e.fz.InboxMessages(v.InboxID); msgs[0].Status != "available" || msgs[1].Status != "available" {
		t.Fatalf("after a failed lease: %+v", msgs)
	}
	e.drain("s1") // probe: one more failure, then success, then the rest
	got := e.recv.all()
	var firstIDs []string
	for _, d := range got {
		if d.Body["message_id"] == ids[0] {
			firstIDs = append(firstIDs, d.ID)
			if d.ID != ids[0] {
				t.Errorf("webhook-id %q changed across retries (want %q)", d.ID, ids[0])
			}
		}
	}
	if len(firstIDs) != 5 {
		t.Fatalf("first message POSTed %d times, want 5 (4 failures, 1 success)", len(firstIDs))
	}
	if last := got[len(got)-1]; last.Body["possible_duplicate"] != true {
		t.Errorf("a message leased twice should be flagged possible_duplicate: %v", last.Body)
	}
	for _, m := range e.fz.InboxMessages(v.InboxID) {
		if m.Status != "acked" || m.Acks != 1 {
			t.Errorf("message %s lost or acked twice: %+v", m.ID, m)
		}
	}
	view, _ := e.mgr.Get(context.Background(), e.id, "s1")
	if view.Counts.Delivered != 3 || view.Counts.FailedAttempts != 4 || view.Counts.DeadLettered != 0 {
		t.Fatalf("counts: %+v", view.Counts)
	}
}

func TestPartnerNeverRecoversDeadLetterAndReplay(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLeases = 2 })
	v := e.subscribe("s1")
	ids := e.inject(v.InboxID, 1)
	e.recv.setStatus(func(int) int { return http.StatusInternalServerError })
	e.drain("s1") // lease 1: released
	e.drain("s1") // lease 2: dead letter, acked at Zapier
	if msgs := e.fz.InboxMessages(v.InboxID); msgs[0].Status != "acked" {
		t.Fatalf("a dead-lettered message should be acked at Zapier: %+v", msgs)
	}
	dls, err := e.mgr.DeadLetters(context.Background())
	if err != nil || len(dls) != 1 || dls[0].ID != ids[0] || dls[0].Attempts != 6 || dls[0].Subscription != "s1" {
		t.Fatalf("dead letters: %+v %v", dls, err)
	}
	if err := e.mgr.Replay(context.Background(), ids[0]); err == nil {
		t.Fatal("replay to a failing partner succeeded")
	}
	e.recv.setStatus(func(int) int { return http.StatusOK })
	if err := e.mgr.Replay(context.Background(), ids[0]); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	got := e.recv.all()
	if last := got[len(got)-1]; last.ID != ids[0] || last.Body["message_id"] != ids[0] {
		t.Fatalf("replayed delivery: %+v", last)
	}
	if dls, _ := e.mgr.DeadLetters(context.Background()); len(dls) != 0 {
		t.Fatalf("dead letters after replay: %+v", dls)
	}
	if err := e.mgr.Replay(context.Background(), ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second replay: %v", err)
	}
}

func TestPausedByZapierTellsThePartnerOnce(t *testing.T) {
	e := newEnv(t)
	v := e.subscribe("s1")
	e.inject(v.InboxID, 1)
	e.fz.PauseInbox(v.InboxID, "authentication")
	e.drain("s1") // the queued message is still delivered, and the pause reported
	e.drain("s1") // paused and drained: 409, no second event
	var events, paused int
	for _, d := range e.recv.all() {
		switch d.Body["type"] {
		case "trigger.event":
			events++
		case "trigger.paused":
			paused++
			if d.Body["reason"] != "authentication" || d.Body["reconnect"] != true || d.Body["subscription"] != "s1" {
				t.Errorf("trigger.paused: %v", d.Body)
			}
		}
	}
	if events != 1 || paused != 1 {
		t.Fatalf("%d events and %d pause notices, want 1 and 1", events, paused)
	}
	view, _ := e.mgr.Get(context.Background(), e.id, "s1")
	if view.Status != "paused" || view.PausedReason != "authentication" || view.PausedBy != "zapier" {
		t.Fatalf("view: %+v", view.Record)
	}
}

func TestPauseResumeDelete(t *testing.T) {
	e := newEnv(t)
	v := e.subscribe("s1")
	ctx := context.Background()
	pv, err := e.mgr.Pause(ctx, e.id, "s1")
	if err != nil || pv.Status != "paused" || pv.PausedBy != "user" {
		t.Fatalf("Pause: %+v %v", pv, err)
	}
	if ib := e.fz.Inboxes()[0]; ib.Status != "paused" || ib.PausedReason != "user" {
		t.Fatalf("at the fake: %+v", ib)
	}
	e.drain("s1") // a user's own pause is not reported to the partner
	if n := len(e.recv.all()); n != 0 {
		t.Fatalf("%d deliveries for a user's pause", n)
	}
	rv, err := e.mgr.Resume(ctx, e.id, "s1")
	if err != nil || rv.Status != "active" {
		t.Fatalf("Resume: %+v %v", rv, err)
	}
	if err := e.mgr.Delete(ctx, e.id, "s1"); err != nil {
		t.Fatal(err)
	}
	if len(e.fz.Inboxes()) != 0 {
		t.Fatal("the inbox survived Delete")
	}
	if _, err := e.mgr.Get(ctx, e.id, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if e.mgr.Notify(ctx, v.InboxID, "") {
		t.Fatal("a deleted inbox's notification was honoured")
	}
}

func TestNotifyWakesTheDeliveryLoop(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DrainInterval = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.mgr.Start(ctx)
	v := e.subscribe("s1") // Ensure drains once: nothing yet
	if e.mgr.Notify(ctx, "00000000-0000-4000-8000-000000000000", "") {
		t.Fatal("an unknown inbox id was honoured")
	}
	ids := e.inject(v.InboxID, 2)
	if !e.mgr.Notify(ctx, v.InboxID, "") {
		t.Fatal("a known inbox id was ignored")
	}
	for _, want := range ids {
		select {
		case d := <-e.recv.ch:
			if d.ID != want {
				t.Fatalf("delivered %s, want %s", d.ID, want)
			}
		case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
			t.Fatal("no delivery after the notification")
		}
	}
}

func TestNotifyFindsSubscriptionsOfAnotherGateway(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DrainInterval = time.Hour })
	v := e.subscribe("s1")
	// A second manager sharing the storage, as a second sidecar.
	other, err := NewManager(e.mgr.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other.Start(ctx)
	defer other.Stop()
	ids := e.inject(v.InboxID, 1)
	if !other.Notify(ctx, v.InboxID, "") {
		t.Fatal("the second gateway does not know the subscription")
	}
	select {
	case d := <-e.recv.ch:
		if d.ID != ids[0] {
			t.Fatalf("delivered %s", d.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery")
	}
}

// A gateway that dies after the partner accepted a message but before the
// ack: Zapier's lease runs out and another gateway delivers the message
// again, under the same webhook-id and flagged possible_duplicate.
func TestCrashMidDeliveryIsRedeliveredByAnother(t *testing.T) {
	e := newEnv(t)
	v := e.subscribe("s1")
	ids := e.inject(v.InboxID, 1)

	// Gateway A: once the partner has the message, A "dies": every later
	// call it makes to Zapier (the ack) fails.
	var dead atomic.Bool
	e.recv.setStatus(func(int) int { dead.Store(true); return http.StatusOK })
	cfgA := e.mgr.cfg
	apiA := *cfgA.API
	apiA.Call = func(ctx context.Context, id Identity, call func(context.Context, string) error) error {
		if dead.Load() {
			return errors.New("gateway A is gone")
		}
		return e.mgr.cfg.API.Call(ctx, id, call)
	}
	cfgA.API = &apiA
	a, err := NewManager(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Drain(context.Background(), e.id, "s1") // its next lease fails too: it is gone
	if msgs := e.fz.InboxMessages(v.InboxID); msgs[0].Status != "leased" {
		t.Fatalf("after the crash: %+v", msgs)
	}
	// The lease runs out at Zapier; gateway B (e.mgr) drains.
	e.offset.Add(int64(time.Duration(a.leaseSeconds(a.cfg.LeaseLimit)+1) * time.Second))
	e.drain("s1")
	got := e.recv.all()
	if len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[0] {
		t.Fatalf("deliveries: %+v", got)
	}
	if got[0].Body["possible_duplicate"] != false || got[1].Body["possible_duplicate"] != true {
		t.Fatalf("possible_duplicate: %v then %v", got[0].Body["possible_duplicate"], got[1].Body["possible_duplicate"])
	}
	if msgs := e.fz.InboxMessages(v.InboxID); msgs[0].Status != "acked" || msgs[0].Acks != 1 {
		t.Fatalf("after redelivery: %+v", msgs)
	}
}

// Two gateways draining one subscription at once never deliver a message
// twice: the storage lock lets one drain, the other leaves it the work.
func TestConcurrentDrainsDeliverOnce(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeaseLimit = 2; c.LockWait = time.Millisecond })
	v := e.subscribe("s1")
	e.inject(v.InboxID, 20)
	other, err := NewManager(e.mgr.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, m := range []*Manager{e.mgr, other, e.mgr, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.Drain(context.Background(), e.id, "s1")
		}()
	}
	wg.Wait()
	e.drain("s1") // whatever a skipped drain left
	seen := map[string]int{}
	for _, d := range e.recv.all() {
		seen[d.ID]++
	}
	if len(seen) != 20 {
		t.Fatalf("%d distinct messages delivered, want 20", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %s delivered %d times", id, n)
		}
	}
}

func TestNotifyTokenGuardsWakeUps(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.NotificationURL = "https://app.example.com/zapier/triggers/notify?x=1"
		c.NotifyKey = []byte("notify-key")
	})
	v := e.subscribe("s1")
	u, err := url.Parse(e.fz.Inboxes()[0].NotificationURL)
	if err != nil {
		t.Fatal(err)
	}
	token := u.Query().Get("inbox_token")
	if token == "" || u.Query().Get("x") != "1" || u.Host != "app.example.com" {
		t.Fatalf("registered notification URL: %s", u)
	}
	ctx := context.Background()
	if e.mgr.Notify(ctx, v.InboxID, "") || e.mgr.Notify(ctx, v.InboxID, strings.Repeat("0", len(token))) {
		t.Fatal("a notification without the inbox's token was honoured")
	}
	if !e.mgr.Notify(ctx, v.InboxID, token) {
		t.Fatal("the inbox's own token was refused")
	}
}

func TestInboxGoneAtZapierIsShownAndRecreated(t *testing.T) {
	e := newEnv(t)
	v := e.subscribe("s1")
	tok := e.fz.IssueAccessToken("org", "alice", "external")
	req, _ := http.NewRequest(http.MethodDelete, strings.TrimSuffix(e.mgr.cfg.API.BaseURL, "/")+"/inboxes/"+v.InboxID, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("deleting at the fake: %v %v", resp, err)
	}
	resp.Body.Close()
	e.drain("s1")
	got, _ := e.mgr.Get(context.Background(), e.id, "s1")
	if got.Status != StatusGone {
		t.Fatalf("status after the inbox vanished: %q", got.Status)
	}
	again, created, err := e.mgr.Ensure(context.Background(), e.id, "s1", Spec{App: "SlackCLIAPI", Trigger: "new_message",
		Inputs: json.RawMessage(`{"channel":"C1"}`), ConnectionID: e.conn})
	if err != nil || !created || again.InboxID == v.InboxID || again.Status != StatusActive {
		t.Fatalf("re-Ensure: %+v created=%v %v", again.Record, created, err)
	}
}

func TestEventsStreamWakesTheLoop(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Stream = true; c.DrainInterval = time.Hour; c.StreamIdle = 5 * time.Second })
	e.fz.SetInboxHeartbeat(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.mgr.Start(ctx)
	v := e.subscribe("s1")
	deadline := time.Now().Add(30 * time.Second) // a hang guard, not a timing assertion
	for open, _ := e.fz.InboxStreams(); open != 1; open, _ = e.fz.InboxStreams() {
		if time.Now().After(deadline) {
			t.Fatal("no events stream was opened")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// No notification, no safety drain: only the stream's frame wakes it.
	ids := e.inject(v.InboxID, 2)
	for _, want := range ids {
		select {
		case d := <-e.recv.ch:
			if d.ID != want {
				t.Fatalf("delivered %s, want %s", d.ID, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the stream frame did not lead to a delivery")
		}
	}
	// Deleting the subscription closes its stream.
	if err := e.mgr.Delete(ctx, e.id, "s1"); err != nil {
		t.Fatal(err)
	}
	for open, _ := e.fz.InboxStreams(); open != 0; open, _ = e.fz.InboxStreams() {
		if time.Now().After(deadline) {
			t.Fatal("the stream stayed open after Delete")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chanObserver hands every delivery outcome to a channel.
type chanObserver chan string

func (c chanObserver) Delivery(outcome string, _ time.Duration) { c <- outcome }
func (chanObserver) Ack(string)                                 {}
func (chanObserver) Lease(string)                               {}

func TestPublishDeliversOrDeadLetters(t *testing.T) {
	outcomes := make(chanObserver, 100)
	e := newEnv(t, func(c *Config) { c.Observer = outcomes })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.mgr.Start(ctx)
	e.mgr.Publish("evt_1", e.id, []byte(`{"type":"connection.created"}`))
	if o := <-outcomes; o != "delivered" {
		t.Fatalf("first publication: %s", o)
	}
	if d := e.recv.all(); len(d) != 1 || d[0].ID != "evt_1" || d[0].Body["type"] != "connection.created" {
		t.Fatalf("published: %+v", d)
	}
	e.recv.setStatus(func(int) int { return http.StatusBadGateway })
	e.mgr.Publish("evt_2", e.id, []byte(`{"type":"connection.deleted"}`))
	for range e.mgr.cfg.Attempts {
		if o := <-outcomes; o != "failed" {
			t.Fatalf("outcome %s, want failed", o)
		}
	}
	e.mgr.Stop() // waits for the dead letter to be recorded
	dls, err := e.mgr.DeadLetters(context.Background())
	if err != nil || len(dls) != 1 || dls[0].ID != "evt_2" || dls[0].User != "alice" || dls[0].Attempts != e.mgr.cfg.Attempts {
		t.Fatalf("dead letters: %+v %v", dls, err)
	}
	e.mgr.Publish("evt_3", e.id, []byte(`{}`)) // after Stop: nothing
	if n := len(e.recv.all()); n != 1+e.mgr.cfg.Attempts {
		t.Fatalf("%d POSTs", n)
	}
}

// deadStorage is one gateway's view of the shared storage; once dead is
// set the gateway is gone (SIGKILLed): nothing it does reaches the storage
// any more, and a storage lock it holds stays held, as a lock file does
// that another process's certmagic goroutine keeps fresh.
type deadStorage struct {
	Storage
	dead *atomic.Bool
}

var errGone = errors.New("this gateway is gone")

func (s deadStorage) Store(ctx context.Context, key string, v []byte) error {
	if s.dead.Load() {
		return errGone
	}
	return s.Storage.Store(ctx, key, v)
}

func (s deadStorage) Delete(ctx context.Context, key string) error {
	if s.dead.Load() {
		return errGone
	}
	return s.Storage.Delete(ctx, key)
}

func (s deadStorage) Lock(ctx context.Context, name string) error {
	if s.dead.Load() {
		return errGone
	}
	return s.Storage.Lock(ctx, name)
}

func (s deadStorage) Unlock(ctx context.Context, name string) error {
	if s.dead.Load() {
		return errGone
	}
	return s.Storage.Unlock(ctx, name)
}

// A gateway killed while the partner holds its POST leaves its drain lock
// behind; once Zapier's lease and the drain lock's run out, another
// gateway takes the subscription over and delivers the message again. The
// storage lock itself must not be what keeps the others out: a dead
// holder's storage lock may never go stale.
func TestGatewayKilledHoldingTheDrainLockIsTakenOver(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LockWait = 50 * time.Millisecond; c.Attempts = 1 })
	e.mgr.cfg.Now = func() time.Time { return time.Now().Add(time.Duration(e.offset.Load())) }
	e.mgr.cfg.Logger = zaptest.NewLogger(t)
	v := e.subscribe("s1")
	ids := e.inject(v.InboxID, 1)

	// Gateway A's partner holds its POST until the test ends.
	held, hold := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-hold
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hold) })
	var dead atomic.Bool
	cfgA := e.mgr.cfg
	cfgA.Storage = deadStorage{Storage: e.store, dead: &dead}
	sender := *cfgA.Sender
	sender.URL, sender.Timeout = srv.URL, time.Minute
	cfgA.Sender = &sender
	a, err := NewManager(cfgA)
	if err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() {
		defer close(doneA)
		_ = a.Drain(ctxA, e.id, "s1")
	}()
	t.Cleanup(func() { cancelA(); <-doneA })
	select {
	case <-held:
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatal("gateway A did not deliver")
	}
	dead.Store(true) // A is killed mid-POST

	// While A's drain lock is fresh, B leaves the subscription alone.
	e.drain("s1")
	if got := e.recv.all(); len(got) != 0 {
		t.Fatalf("delivered while A's drain lock was fresh: %+v", got)
	}
	// Zapier's lease (and A's drain lock) run out; B (e.mgr) drains.
	e.offset.Add(int64(time.Duration(a.leaseSeconds(a.cfg.LeaseLimit)+1) * time.Second))
	e.drain("s1")
	got := e.recv.all()
	if len(got) != 1 || got[0].ID != ids[0] || got[0].Body["possible_duplicate"] != true {
		t.Fatalf("deliveries after A died: %+v", got)
	}
	if msgs := e.fz.InboxMessages(v.InboxID); msgs[0].Status != "acked" || msgs[0].LeaseCount != 2 {
		t.Fatalf("after redelivery: %+v", msgs)
	}
}

// deliveredObserver is a DeliveryObserver: it counts the events delivered
// per identity (usage counts them per tenant and user).
type deliveredObserver struct {
	nopObserver
	mu  sync.Mutex
	per map[Identity]int
}

func (o *deliveredObserver) Delivered(id Identity) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.per[id]++
}

func TestDeliveryObserverHearsEachDeliveredEvent(t *testing.T) {
	o := &deliveredObserver{per: map[Identity]int{}}
	e := newEnv(t, func(c *Config) { c.Observer = o })
	v := e.subscribe("s1")
	e.inject(v.InboxID, 3)
	e.drain("s1")
	if got := len(e.recv.all()); got != 3 {
		t.Fatalf("delivered %d", got)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.per[e.id] != 3 || len(o.per) != 1 {
		t.Fatalf("observed %v, want 3 for %v", o.per, e.id)
	}
}
