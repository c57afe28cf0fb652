package connect

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
)

// fuzzStateKeys and fuzzNow are fixed so committed seeds stay valid.
var (
	fuzzStateKeys = deriveStateKeys([]byte("caddy-zapier fuzz seed master key, 32+ bytes"))
	fuzzNow       = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

func testState() *State {
	return &State{
		ID: "0123456789abcdef0123456789abcdef", Subject: fuzzStateKeys.subjectHash("org", "alice"),
		App: "SlackCLIAPI", AppUUID: "81f613aa-c98a-4383-a5fc-195e68647217", ReturnTo: "/done",
		Flow: FlowRedirect, NonceHash: nonceHash("nonce"), Expires: fuzzNow.Add(10 * time.Minute).UnixMilli(),
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
	forgedPayload := func(mutate func(*State)) string {
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
		"other app":         {forgedPayload(func(s *State) { s.App = "Other" }), "bad signature"},
		"other return_to":   {forgedPayload(func(s *State) { s.ReturnTo = "https://evil.example" }), "bad signature"},
		"longer expiry":     {forgedPayload(func(s *State) { s.Expires += 1 }), "bad signature"},
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
		var serr *StateError
		if !errors.As(err, &serr) || serr.Reason != tc.reason {
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
			var serr *StateError
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
		if st.Expires <= fuzzNow.UnixMilli() || (st.Flow != FlowPopup && st.Flow != FlowRedirect && st.Flow != FlowMCP) {
			t.Fatalf("accepted an invalid state %+v", st)
		}
	})
}

func fileStorage(t *testing.T) certmagic.Storage {
	return &certmagic.FileStorage{Path: t.TempDir()}
}

// flow issues a state on keeper k as (tenant, user) and returns the state
// and a request carrying its cookie, as the browser's next request would.
func issueFlow(t *testing.T, k *StateKeeper, tenant, user string) (string, *http.Request) {
	t.Helper()
	st := &State{App: "SlackCLIAPI", AppUUID: "81f613aa-c98a-4383-a5fc-195e68647217", Flow: FlowPopup}
	raw, nonce, err := k.Issue(context.Background(), st, tenant, user)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	SetFlowCookie(rec, httptest.NewRequest(http.MethodPost, "/token", nil), st.ID, nonce, k.ttl, false)
	req := httptest.NewRequest(http.MethodPost, "/complete", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	return raw, req
}

func refusal(err error) string {
	var serr *StateError
	if errors.As(err, &serr) {
		return serr.Reason
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
	a := NewStateKeeper(storage, 10*time.Minute)
	b := NewStateKeeper(storage, 10*time.Minute)

	raw, req := issueFlow(t, a, "org", "alice")
	st, err := b.Open(ctx, req, raw, FlowPopup, "org", "alice")
	if err != nil {
		t.Fatalf("the other gateway cannot verify the state: %v", err)
	}
	if got := refusal(b.Spend(ctx, st)); got != "" {
		t.Fatalf("spend = %q", got)
	}
	if got := refusal(a.Spend(ctx, st)); got != "already used" {
		t.Errorf("replay on the first gateway: %q, want already used", got)
	}

	raw, req = issueFlow(t, a, "org", "alice")
	for name, tc := range map[string]struct {
		req          *http.Request
		flow         Flow
		tenant, user string
		want         string
	}{
		"other user":      {req, FlowPopup, "org", "mallory", "issued to another user"},
		"other tenant":    {req, FlowPopup, "org2", "alice", "issued to another user"},
		"split identity":  {req, FlowPopup, "orga", "lice", "issued to another user"},
		"no cookie":       {httptest.NewRequest(http.MethodPost, "/complete", nil), FlowPopup, "org", "alice", "not started in this browser"},
		"other flow":      {req, FlowRedirect, "org", "alice", "issued for the popup flow"},
		"another flow's":  {withCookie(req, FlowCookieName, strings.Repeat("0", 32)+"~x"), FlowPopup, "org", "alice", "not started in this browser"},
		"the right owner": {req, FlowPopup, "org", "alice", ""},
	} {
		_, err := a.Open(ctx, tc.req, raw, tc.flow, tc.tenant, tc.user)
		if got := refusal(err); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}

	// A wrong nonce in the right cookie.
	st, _ = decodeState(mustKeys(t, a), raw, time.Now())
	forged := httptest.NewRequest(http.MethodPost, "/complete", nil)
	forged.AddCookie(&http.Cookie{Name: FlowCookieName, Value: st.ID + "~guessed"})
	if _, err := a.Open(ctx, forged, raw, FlowPopup, "org", "alice"); refusal(err) != "not started in this browser" {
		t.Errorf("wrong nonce: %v", err)
	}

	// A gateway with other storage has another key.
	c := NewStateKeeper(fileStorage(t), 10*time.Minute)
	if _, err := c.Open(ctx, req, raw, FlowPopup, "org", "alice"); refusal(err) != "bad signature" {
		t.Errorf("foreign gateway: %v", err)
	}
}

func withCookie(r *http.Request, name, value string) *http.Request {
	r2 := r.Clone(context.Background())
	r2.Header.Del("Cookie")
	r2.AddCookie(&http.Cookie{Name: name, Value: value})
	return r2
}

func mustKeys(t *testing.T, k *StateKeeper) StateKeys {
	t.Helper()
	keys, err := k.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestStateKeyCreatedOnceUnderConcurrency(t *testing.T) {
	storage := fileStorage(t)
	const n = 4
	keys := make([]StateKeys, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := NewStateKeeper(storage, time.Minute)
			keys[i], _ = k.Keys(context.Background())
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if string(keys[i].mac) != string(keys[0].mac) || len(keys[i].mac) == 0 {
			t.Fatalf("gateway %d derived another key", i)
		}
	}
	// A corrupt stored key is an error, not a silently new key.
	if err := storage.Store(context.Background(), StateKeyStorageKey, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStateKeeper(storage, time.Minute).Keys(context.Background()); err == nil {
		t.Error("a malformed stored key was accepted")
	}
}

func TestConcurrentSpendsSucceedOnce(t *testing.T) {
	ctx := context.Background()
	storage := fileStorage(t)
	raw, req := issueFlow(t, NewStateKeeper(storage, time.Minute), "org", "alice")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := NewStateKeeper(storage, time.Minute)
			st, err := k.Open(ctx, req, raw, FlowPopup, "org", "alice")
			if err == nil {
				err = k.Spend(ctx, st)
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
	k := NewStateKeeper(storage, time.Minute)
	k.now = func() time.Time { return now }
	raw, req := issueFlow(t, k, "org", "alice")
	st, err := k.Open(ctx, req, raw, FlowPopup, "org", "alice")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := k.Open(ctx, req, raw, FlowPopup, "org", "alice"); refusal(err) != "expired" {
		t.Errorf("after the TTL: %v, want expired", err)
	}

	// Spent records stay until their state expires, then a sweep drops them.
	now = now.Add(-time.Minute)
	if err := k.Spend(ctx, st); err != nil {
		t.Fatal(err)
	}
	k.Sweep(ctx)
	if !storage.Exists(ctx, usedStatesPrefix+"/"+st.ID) {
		t.Fatal("a live spent state was swept")
	}
	now = now.Add(2 * time.Minute)
	k.Sweep(ctx)
	if storage.Exists(ctx, usedStatesPrefix+"/"+st.ID) {
		t.Error("an expired spent state was kept")
	}
}

// An MCP authorize state is refused by the Connect flows and the reverse.
func TestMCPStateIsItsOwnFlow(t *testing.T) {
	ctx := context.Background()
	k := NewStateKeeper(fileStorage(t), 10*time.Minute)
	st := &State{App: "SlackCLIAPI", AppUUID: "SlackCLIAPI", Flow: FlowMCP, ReturnTo: "/done"}
	raw, nonce, err := k.Issue(ctx, st, "org", "alice")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	SetFlowCookie(rec, httptest.NewRequest(http.MethodGet, "/authorize", nil), st.ID, nonce, k.ttl, false)
	req := httptest.NewRequest(http.MethodGet, "/callback", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	for _, flow := range []Flow{FlowRedirect, FlowPopup} {
		if _, err := k.Open(ctx, req, raw, flow, "org", "alice"); refusal(err) != "issued for the mcp flow" {
			t.Errorf("%s flow: %v", flow, err)
		}
	}
	if _, err := k.Open(ctx, req, raw, FlowMCP, "org", "alice"); err != nil {
		t.Fatalf("mcp flow: %v", err)
	}
	raw2, req2 := issueFlow(t, k, "org", "alice")
	if _, err := k.Open(ctx, req2, raw2, FlowMCP, "org", "alice"); refusal(err) != "issued for the popup flow" {
		t.Errorf("popup state on the mcp flow: %v", err)
	}
}
