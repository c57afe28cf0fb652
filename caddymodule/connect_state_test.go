package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/zapgate/caddy-zapier/connect"
)

// fuzzStateKeys and fuzzNow are fixed so committed seeds stay valid.
var (
	fuzzStateKeys = deriveStateKeys([]byte("caddy-zapier fuzz seed master key, 32+ bytes"))
	fuzzNow       = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

func testState() *connectState {
	return &connectState{
		ID: "0123456789abcdef0123456789abcdef", Subject: fuzzStateKeys.subjectHash("org", "alice"),
		App: "SlackCLIAPI", AppUUID: "81f613aa-c98a-4383-a5fc-195e68647217", ReturnTo: "/done",
		Flow: connectFlowRedirect, NonceHash: nonceHash("nonce"), Expires: fuzzNow.Add(10 * time.Minute).UnixMilli(),
	}
}

func TestStateEncodingRoundTripAndTampering(t *testing.T) {
	raw, err := encodeState(fuzzStateKeys, testState())
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeState(fuzzStateKeys, raw, fuzzNow)
	if err != nil || *st != *testState() {
		t.Fatalf("decode = %+v, %v", st, err)
	}
	// The state names the user only by a keyed hash.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[1])
	if strings.Contains(string(payload), "alice") || strings.Contains(string(payload), `"org"`) {
		t.Errorf("the state reveals the identity: %s", payload)
	}

	parts := strings.Split(raw, ".")
	forgedPayload := func(mutate func(*connectState)) string {
		st := testState()
		mutate(st)
		data, _ := json.Marshal(st)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(data) + "." + parts[2]
	}
	other := deriveStateKeys([]byte("another gateway's key, not shared storage"))
	signedElsewhere, _ := encodeState(other, testState())
	expired := testState()
	expired.Expires = fuzzNow.UnixMilli()
	expiredRaw, _ := encodeState(fuzzStateKeys, expired)
	noFlow := testState()
	noFlow.Flow = "sideways"
	noFlowRaw, _ := encodeState(fuzzStateKeys, noFlow)

	for name, tc := range map[string]struct{ raw, reason string }{
		"empty":             {"", "missing"},
		"garbage":           {"not a state", "malformed"},
		"version":           {"v2." + parts[1] + "." + parts[2], "malformed"},
		"extra part":        {raw + ".x", "malformed"},
		"other app":         {forgedPayload(func(s *connectState) { s.App = "Other" }), "bad signature"},
		"other return_to":   {forgedPayload(func(s *connectState) { s.ReturnTo = "https://evil.example" }), "bad signature"},
		"longer expiry":     {forgedPayload(func(s *connectState) { s.Expires += 1 }), "bad signature"},
		"truncated mac":     {raw[:len(raw)-3], "bad signature"},
		"padded mac":        {raw + "=", "malformed"},
		"signed elsewhere":  {signedElsewhere, "bad signature"},
		"expired":           {expiredRaw, "expired"},
		"unknown flow":      {noFlowRaw, "malformed"},
		"too long":          {raw + strings.Repeat("A", maxStateLen), "malformed"},
		"non-base64 mac":    {parts[0] + "." + parts[1] + ".!!!", "malformed"},
		"mac of nothing":    {"v1.." + fuzzStateKeys.sign(""), "malformed"},
		"swapped mac parts": {parts[0] + "." + parts[2] + "." + parts[1], "bad signature"},
	} {
		_, err := decodeState(fuzzStateKeys, tc.raw, fuzzNow)
		var serr *stateError
		if !errors.As(err, &serr) || serr.reason != tc.reason {
			t.Errorf("%s: err = %v, want reason %q", name, err, tc.reason)
		}
	}
}

// FuzzDecodeState: no input panics, and only a state signed with the key
// and still valid decodes, exactly as it was issued.
func FuzzDecodeState(f *testing.F) {
	valid, _ := encodeState(fuzzStateKeys, testState())
	f.Add(valid)
	f.Add("")
	f.Add("v1.e30.")
	f.Add("v1." + strings.Split(valid, ".")[1] + ".AAAA")
	f.Fuzz(func(t *testing.T, raw string) {
		st, err := decodeState(fuzzStateKeys, raw, fuzzNow)
		if err != nil {
			var serr *stateError
			if !errors.As(err, &serr) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		again, err := encodeState(fuzzStateKeys, st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeState(fuzzStateKeys, again, fuzzNow); err != nil {
			t.Fatalf("a decoded state does not survive re-encoding: %v", err)
		}
		if st.Expires <= fuzzNow.UnixMilli() || (st.Flow != connectFlowPopup && st.Flow != connectFlowRedirect) {
			t.Fatalf("accepted an invalid state %+v", st)
		}
	})
}

func fileStorage(t *testing.T) certmagic.Storage {
	return &certmagic.FileStorage{Path: t.TempDir()}
}

// flow issues a state on keeper k as (tenant, user) and returns the state
// and a request carrying its cookie, as the browser's next request would.
func issueFlow(t *testing.T, k *stateKeeper, tenant, user string) (string, *http.Request) {
	t.Helper()
	st := &connectState{App: "SlackCLIAPI", AppUUID: "81f613aa-c98a-4383-a5fc-195e68647217", Flow: connectFlowPopup}
	raw, nonce, err := k.issue(context.Background(), st, tenant, user)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	connect.SetFlowCookie(rec, httptest.NewRequest(http.MethodPost, "/token", nil), st.ID, nonce, k.ttl, false)
	req := httptest.NewRequest(http.MethodPost, "/complete", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	return raw, req
}

func refusal(err error) string {
	var serr *stateError
	if errors.As(err, &serr) {
		return serr.reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

func TestStateKeeperBindingsAndSingleUseAcrossGateways(t *testing.T) {
	ctx := context.Background()
	storage := fileStorage(t)
	// Two gateways sharing one storage.
	a := newStateKeeper(ctx, storage, 10*time.Minute)
	b := newStateKeeper(ctx, storage, 10*time.Minute)

	raw, req := issueFlow(t, a, "org", "alice")
	st, err := b.open(ctx, req, raw, connectFlowPopup, "org", "alice")
	if err != nil {
		t.Fatalf("the other gateway cannot verify the state: %v", err)
	}
	if got := refusal(b.spend(ctx, st)); got != "" {
		t.Fatalf("spend = %q", got)
	}
	if got := refusal(a.spend(ctx, st)); got != "already used" {
		t.Errorf("replay on the first gateway: %q, want already used", got)
	}

	raw, req = issueFlow(t, a, "org", "alice")
	for name, tc := range map[string]struct {
		req          *http.Request
		flow         connectFlow
		tenant, user string
		want         string
	}{
		"other user":      {req, connectFlowPopup, "org", "mallory", "issued to another user"},
		"other tenant":    {req, connectFlowPopup, "org2", "alice", "issued to another user"},
		"split identity":  {req, connectFlowPopup, "orga", "lice", "issued to another user"},
		"no cookie":       {httptest.NewRequest(http.MethodPost, "/complete", nil), connectFlowPopup, "org", "alice", "not started in this browser"},
		"other flow":      {req, connectFlowRedirect, "org", "alice", "issued for the popup flow"},
		"another flow's":  {withCookie(req, connect.FlowCookieName, strings.Repeat("0", 32)+"~x"), connectFlowPopup, "org", "alice", "not started in this browser"},
		"the right owner": {req, connectFlowPopup, "org", "alice", ""},
	} {
		_, err := a.open(ctx, tc.req, raw, tc.flow, tc.tenant, tc.user)
		if got := refusal(err); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}

	// A wrong nonce in the right cookie.
	st, _ = decodeState(mustKeys(t, a), raw, time.Now())
	forged := httptest.NewRequest(http.MethodPost, "/complete", nil)
	forged.AddCookie(&http.Cookie{Name: connect.FlowCookieName, Value: st.ID + "~guessed"})
	if _, err := a.open(ctx, forged, raw, connectFlowPopup, "org", "alice"); refusal(err) != "not started in this browser" {
		t.Errorf("wrong nonce: %v", err)
	}

	// A gateway with other storage has another key.
	c := newStateKeeper(ctx, fileStorage(t), 10*time.Minute)
	if _, err := c.open(ctx, req, raw, connectFlowPopup, "org", "alice"); refusal(err) != "bad signature" {
		t.Errorf("foreign gateway: %v", err)
	}
}

func withCookie(r *http.Request, name, value string) *http.Request {
	r2 := r.Clone(context.Background())
	r2.Header.Del("Cookie")
	r2.AddCookie(&http.Cookie{Name: name, Value: value})
	return r2
}

func mustKeys(t *testing.T, k *stateKeeper) stateKeys {
	t.Helper()
	keys, err := k.stateKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestStateKeyCreatedOnceUnderConcurrency(t *testing.T) {
	storage := fileStorage(t)
	const n = 4
	keys := make([]stateKeys, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := newStateKeeper(context.Background(), storage, time.Minute)
			keys[i], _ = k.stateKeys(context.Background())
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if string(keys[i].mac) != string(keys[0].mac) || len(keys[i].mac) == 0 {
			t.Fatalf("gateway %d derived another key", i)
		}
	}
	// A corrupt stored key is an error, not a silently new key.
	if err := storage.Store(context.Background(), stateKeyStorageKey, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, err := newStateKeeper(context.Background(), storage, time.Minute).stateKeys(context.Background()); err == nil {
		t.Error("a malformed stored key was accepted")
	}
}

func TestConcurrentSpendsSucceedOnce(t *testing.T) {
	ctx := context.Background()
	storage := fileStorage(t)
	raw, req := issueFlow(t, newStateKeeper(ctx, storage, time.Minute), "org", "alice")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := newStateKeeper(ctx, storage, time.Minute)
			st, err := k.open(ctx, req, raw, connectFlowPopup, "org", "alice")
			if err == nil {
				err = k.spend(ctx, st)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch refusal(err) {
		case "":
			ok++
		case "already used":
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d spends succeeded, want exactly 1", ok)
	}
}

func TestExpiredStatesAndSweep(t *testing.T) {
	ctx := context.Background()
	storage := fileStorage(t)
	now := time.Now()
	k := newStateKeeper(ctx, storage, time.Minute)
	k.now = func() time.Time { return now }
	k.sweeper.lastSweep.Store(now.UnixNano()) // sweeps run here, not in the background
	raw, req := issueFlow(t, k, "org", "alice")
	st, err := k.open(ctx, req, raw, connectFlowPopup, "org", "alice")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := k.open(ctx, req, raw, connectFlowPopup, "org", "alice"); refusal(err) != "expired" {
		t.Errorf("after the TTL: %v, want expired", err)
	}

	// Spent records stay until their state expires, then a sweep drops them.
	now = now.Add(-time.Minute)
	if err := k.spend(ctx, st); err != nil {
		t.Fatal(err)
	}
	k.sweep(ctx)
	if !storage.Exists(ctx, usedStatesPrefix+"/"+st.ID) {
		t.Fatal("a live spent state was swept")
	}
	now = now.Add(2 * time.Minute)
	k.sweep(ctx)
	if storage.Exists(ctx, usedStatesPrefix+"/"+st.ID) {
		t.Error("an expired spent state was kept")
	}
}
