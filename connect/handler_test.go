package connect

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const testSlackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"

// fakeZapier is Zapier's token endpoint and /v2/authentications for one
// user: the authentications it lists, and every call it got.
type fakeZapier struct {
	mu      sync.Mutex
	auths   []map[string]any
	calls   []string
	deleted []string
	// resources are those connect tokens were asked for.
	resources []string
	// refuseDelete answers DELETE with this status instead (0: 204).
	refuseDelete int
}

func (z *fakeZapier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.calls = append(z.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/oauth/token":
		_ = r.ParseForm()
		z.resources = append(z.resources, r.Form.Get("resource"))
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "ct." + path.Base(r.Form.Get("resource")),
			"issued_token_type": zapierapi.DefaultConnectTokenType, "token_type": "Bearer", "expires_in": 300})
	case r.URL.Path == "/v2/authentications" && r.Method == http.MethodGet:
		var data []map[string]any
		for _, a := range z.auths {
			if a["app"] == r.URL.Query().Get("app") {
				data = append(data, a)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "links": map[string]any{"next": nil}})
	case strings.HasPrefix(r.URL.Path, "/v2/authentications/") && r.Method == http.MethodDelete:
		if z.refuseDelete != 0 {
			w.WriteHeader(z.refuseDelete)
			_, _ = w.Write([]byte(`{"errors":[]}`))
			return
		}
		z.deleted = append(z.deleted, strings.TrimPrefix(r.URL.Path, "/v2/authentications/"))
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func (z *fakeZapier) list(id string, expired bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.auths = append(z.auths, map[string]any{"id": id, "app": testSlackUUID, "is_expired": expired, "title": "Slack " + id})
}

func (z *fakeZapier) callLog() []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.calls...)
}

// fakeTokens hands out one access token per identity and counts evictions.
type fakeTokens struct {
	mu      sync.Mutex
	evicted int
}

func (t *fakeTokens) Token(_ context.Context, id gateway.Identity) (string, error) {
	return "access-" + id.User, nil
}

func (t *fakeTokens) Evict(gateway.Identity, string) {
	t.mu.Lock()
	t.evicted++
	t.mu.Unlock()
}

type testEnv struct {
	h        *Handler
	zapier   *fakeZapier
	storage  certmagic.Storage
	outcomes map[string]int
	events   []string
	mu       sync.Mutex
}

const testRemote = "127.0.0.1:5555"

func newTestEnv(t *testing.T, tweak func(*HandlerConfig)) *testEnv {
	t.Helper()
	e := &testEnv{zapier: &fakeZapier{}, outcomes: map[string]int{}}
	srv := httptest.NewServer(e.zapier)
	t.Cleanup(srv.Close)
	client, err := zapierapi.New(zapierapi.Config{TokenURL: srv.URL + "/oauth/token", ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	e.storage = &certmagic.FileStorage{Path: t.TempDir()}
	cfg := HandlerConfig{
		Policy: &gateway.Policy{Identity: &rules},
		Caller: &gateway.Caller{Tokens: &fakeTokens{}, Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{}), Client: client, APIURL: srv.URL},
		Exchange: func(ctx context.Context, _ gateway.Identity, call func(context.Context) (zapierapi.Token, error)) (zapierapi.Token, error) {
			return call(ctx)
		},
		Apps: func(_ context.Context, _ gateway.Identity, name string) (gateway.App, error) {
			if name == "SlackCLIAPI" || name == testSlackUUID {
				return gateway.App{Key: "SlackCLIAPI", UUID: testSlackUUID}, nil
			}
			return gateway.App{}, &gateway.Error{Status: http.StatusNotFound, Code: "app_not_found", Message: "no app " + name}
		},
		Store:         NewStore(e.storage),
		States:        NewStateKeeper(e.storage, DefaultStateTTL),
		ConnectURL:    "https://connect.example/",
		CallbackURL:   "https://app.example/zapier/connect/callback",
		ReturnOrigins: []string{"https://app.example"},
		StateTTL:      DefaultStateTTL,
		Completed: func(flow Flow, outcome Outcome) {
			e.mu.Lock()
			e.outcomes[string(flow)+"/"+string(outcome)]++
			e.mu.Unlock()
		},
		Storage: e.storage,
		Emit: func(name string, data func() map[string]any) {
			e.mu.Lock()
			e.events = append(e.events, name+" "+data()["app"].(string))
			e.mu.Unlock()
		},
		Changed: func(typ, tenant, user string, rec Record) {
			e.mu.Lock()
			e.events = append(e.events, typ+" "+tenant+"/"+user+" "+rec.ConnectionID)
			e.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e.h = NewHandler(cfg)
	return e
}

// do serves one request as user alice of tenant org, with cookies.
func (e *testEnv) do(method, target, body string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = testRemote
	r.Header.Set("X-Zapier-User", "alice")
	r.Header.Set("X-Zapier-Tenant", "org")
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var env struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
		t.Fatalf("not the error envelope: %d %s", w.Code, w.Body)
	}
	return env.Error.Code
}

func TestHandlerPopupFlow(t *testing.T) {
	e := newTestEnv(t, nil)
	w := e.do(http.MethodPost, "/token", `{"app":"SlackCLIAPI","theme":"dark-1"}`)
	if w.Code != http.StatusOK {
		t.Fatalf("POST token: %d %s", w.Code, w.Body)
	}
	var tok tokenResponse
	_ = json.Unmarshal(w.Body.Bytes(), &tok)
	u, err := url.Parse(tok.URL)
	if err != nil || u.Host != "connect.example" || u.Path != "/to/SlackCLIAPI" || u.Query().Get("theme") != "dark-1" ||
		u.Query().Get("token") != "ct.SlackCLIAPI" || e.zapier.resources[0] != "https://connect.example/to/SlackCLIAPI" || tok.Token != u.Query().Get("token") ||
		tok.ExpiresIn != 300 || tok.App != "SlackCLIAPI" || tok.State == "" {
		t.Fatalf("POST token answered %+v", tok)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly || !cookies[0].Secure { // an https callback_url: Secure
		t.Fatalf("flow cookie: %+v", cookies)
	}

	// Zapier does not list the id: refused, and counted.
	w = e.do(http.MethodPost, "/complete", `{"app":"SlackCLIAPI","auth_id":"123","state":"`+tok.State+`"}`, cookies...)
	if w.Code != http.StatusBadRequest || errorCode(t, w) != "connection_invalid" {
		t.Fatalf("complete with an unlisted id: %d %s", w.Code, w.Body)
	}
	// The state was spent by that attempt.
	e.zapier.list("123", false)
	w = e.do(http.MethodPost, "/complete", `{"app":"SlackCLIAPI","auth_id":123,"state":"`+tok.State+`"}`, cookies...)
	if w.Code != http.StatusBadRequest || errorCode(t, w) != "connect_state_invalid" {
		t.Fatalf("complete with a spent state: %d %s", w.Code, w.Body)
	}

	// A fresh flow completes: the id (an integer, as Connect posts it) is stored.
	w = e.do(http.MethodPost, "/token", `{"app":"SlackCLIAPI","new_account":true}`)
	_ = json.Unmarshal(w.Body.Bytes(), &tok)
	w = e.do(http.MethodPost, "/complete", `{"app":"SlackCLIAPI","auth_id":123,"state":"`+tok.State+`"}`, w.Result().Cookies()...)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"connection_id":"123"`) {
		t.Fatalf("complete: %d %s", w.Code, w.Body)
	}
	if e.outcomes["popup/connection_invalid"] != 1 || e.outcomes["popup/state_invalid"] != 1 || e.outcomes["popup/success"] != 1 {
		t.Errorf("completions counted %v", e.outcomes)
	}

	// The stored connection is valid at Zapier: POST token reuses it.
	w = e.do(http.MethodPost, "/token", `{"app":"SlackCLIAPI"}`)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `{"connection":{`) || len(w.Result().Cookies()) != 0 {
		t.Fatalf("POST token with a valid stored connection: %d %s", w.Code, w.Body)
	}
	w = e.do(http.MethodGet, "/connections", "")
	var list struct{ Data []Record }
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list.Data) != 1 || list.Data[0].ConnectionID != "123" || list.Data[0].Title != "Slack 123" {
		t.Fatalf("GET connections: %d %s", w.Code, w.Body)
	}
	if w = e.do(http.MethodGet, "/connections/SlackCLIAPI", ""); w.Code != http.StatusOK {
		t.Fatalf("GET connections/SlackCLIAPI: %d %s", w.Code, w.Body)
	}
}

func TestHandlerRedirectFlow(t *testing.T) {
	e := newTestEnv(t, nil)
	w := e.do(http.MethodGet, "/start?app=SlackCLIAPI&return_to=/settings", "")
	if w.Code != http.StatusFound {
		t.Fatalf("GET start: %d %s", w.Code, w.Body)
	}
	loc, _ := url.Parse(w.Header().Get("Location"))
	if loc.Host != "connect.example" || loc.Query().Get("redirect_uri") != "https://app.example/zapier/connect/callback" ||
		loc.Query().Get("state") == "" || w.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("GET start redirected to %s", loc)
	}
	cookies := w.Result().Cookies()
	e.zapier.list("77", false)
	// Zapier's documented success callback: no state, the flow cookie finds it.
	w = e.do(http.MethodGet, "/callback?authentication_id=77&service=SlackCLIAPI", "", cookies...)
	if w.Code != http.StatusFound {
		t.Fatalf("GET callback: %d %s", w.Code, w.Body)
	}
	back, _ := url.Parse(w.Header().Get("Location"))
	if back.Path != "/settings" || back.Query().Get("zapier_connect") != "success" || back.Query().Get("zapier_connection_id") != "77" {
		t.Fatalf("callback returned to %s", back)
	}
	if e.outcomes["redirect/success"] != 1 {
		t.Errorf("completions counted %v", e.outcomes)
	}
	// A foreign return_to is refused before anything happens.
	if w = e.do(http.MethodGet, "/start?app=SlackCLIAPI&return_to=https://evil.example/", ""); w.Code != http.StatusBadRequest {
		t.Errorf("foreign return_to: %d %s", w.Code, w.Body)
	}
	// An unknown app goes back to return_to with its code.
	w = e.do(http.MethodGet, "/start?app=Nope&return_to=/x", "")
	if w.Code != http.StatusNotFound || errorCode(t, w) != "app_not_found" {
		t.Errorf("unknown app: %d %s", w.Code, w.Body)
	}
}

func TestHandlerRedirectFlowNeedsCallbackURL(t *testing.T) {
	e := newTestEnv(t, func(c *HandlerConfig) { c.CallbackURL = "" })
	w := e.do(http.MethodGet, "/start?app=SlackCLIAPI", "")
	if w.Code != http.StatusInternalServerError || errorCode(t, w) != "connect_not_configured" {
		t.Fatalf("GET start without callback_url: %d %s", w.Code, w.Body)
	}
}

func TestHandlerDisconnect(t *testing.T) {
	for _, keep := range []bool{false, true} {
		e := newTestEnv(t, func(c *HandlerConfig) { c.KeepUpstream = keep })
		ctx := context.Background()
		for _, id := range []string{"1", "2"} {
			if _, err := e.h.cfg.Store.Put(ctx, "org", "alice", Record{ConnectionID: id, App: "SlackCLIAPI", AppUUID: testSlackUUID}); err != nil {
				t.Fatal(err)
			}
		}
		w := e.do(http.MethodDelete, "/connections/SlackCLIAPI", "")
		if w.Code != http.StatusConflict || errorCode(t, w) != "connection_ambiguous" {
			t.Fatalf("DELETE with two accounts: %d %s", w.Code, w.Body)
		}
		w = e.do(http.MethodDelete, "/connections/SlackCLIAPI?connection_id=2", "")
		want := `{"deleted":true,"connection_id":"2","app":"SlackCLIAPI","upstream":"deleted"}`
		if keep {
			want = `{"deleted":true,"connection_id":"2","app":"SlackCLIAPI","upstream":"kept"}`
		}
		if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != want {
			t.Fatalf("keep=%v: DELETE: %d %s", keep, w.Code, w.Body)
		}
		if got := len(e.zapier.deleted); (got == 1) == keep {
			t.Errorf("keep=%v: Zapier deleted %v", keep, e.zapier.deleted)
		}
		if w = e.do(http.MethodDelete, "/connections/SlackCLIAPI?connection_id=2", ""); w.Code != http.StatusNotFound || errorCode(t, w) != "connection_missing" {
			t.Errorf("DELETE again: %d %s", w.Code, w.Body)
		}
	}
}

func TestHandlerDisconnectKeepsTheRecordWhenZapierFails(t *testing.T) {
	e := newTestEnv(t, nil)
	e.zapier.refuseDelete = http.StatusForbidden
	if _, err := e.h.cfg.Store.Put(context.Background(), "org", "alice", Record{ConnectionID: "1", App: "SlackCLIAPI", AppUUID: testSlackUUID}); err != nil {
		t.Fatal(err)
	}
	w := e.do(http.MethodDelete, "/connections/SlackCLIAPI", "")
	if w.Code != http.StatusBadGateway || errorCode(t, w) != "zapier_api_failed" {
		t.Fatalf("DELETE when Zapier refuses: %d %s", w.Code, w.Body)
	}
	if rec, _ := e.h.cfg.Store.Get(context.Background(), "org", "alice", testSlackUUID); rec == nil {
		t.Error("the record was forgotten although Zapier kept the authentication")
	}
}

func TestHandlerRefusals(t *testing.T) {
	e := newTestEnv(t, nil)
	for _, tc := range []struct {
		method, target, body string
		status               int
		code                 string
	}{
		{http.MethodGet, "/nope", "", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/token", "", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/token", `{"app":"SlackCLIAPI","extra":1}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/token", `{"app":"SlackCLIAPI"} {}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/token", `{"app":"SlackCLIAPI","theme":"a.b"}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/token", `{"app":"SlackCLIAPI","reconnect_id":"a b"}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/complete", `{"app":"SlackCLIAPI","auth_id":true,"state":"x"}`, http.StatusBadRequest, "bad_request"},
		{http.MethodGet, "/callback?state=x", "", http.StatusBadRequest, "bad_request"},
		{http.MethodGet, "/connections/SlackCLIAPI?connection_id=a&connection_id=b", "", http.StatusBadRequest, "bad_request"},
		{http.MethodGet, "/connections/SlackCLIAPI", "", http.StatusNotFound, "connection_missing"},
	} {
		w := e.do(tc.method, tc.target, tc.body)
		if w.Code != tc.status || errorCode(t, w) != tc.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", tc.method, tc.target, tc.body, w.Code, w.Body, tc.status, tc.code)
		}
	}
	// Without identity headers: the policy refuses.
	r := httptest.NewRequest(http.MethodGet, "/connections", nil)
	r.RemoteAddr = testRemote
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized || errorCode(t, w) != "identity_missing" {
		t.Errorf("no identity: %d %s", w.Code, w.Body)
	}
	if got := e.zapier.callLog(); len(got) != 0 {
		t.Errorf("refusals called Zapier: %v", got)
	}
}

// failingStorage fails every read: an internal failure.
type failingStorage struct{ certmagic.Storage }

func (failingStorage) List(context.Context, string, bool) ([]string, error) {
	return nil, errors.New("disk on fire")
}

func (failingStorage) Load(context.Context, string) ([]byte, error) {
	return nil, errors.New("disk on fire")
}

func TestHandlerInternalFailures(t *testing.T) {
	e := newTestEnv(t, func(c *HandlerConfig) { c.Store = NewStore(failingStorage{c.Storage}) })
	r := httptest.NewRequest(http.MethodGet, "/connections", nil)
	r.RemoteAddr = testRemote
	r.Header.Set("X-Zapier-User", "alice")
	r.Header.Set("X-Zapier-Tenant", "org")
	w := httptest.NewRecorder()
	err := e.h.Serve(w, r)
	var herr *gateway.HandlerError
	if !errors.As(err, &herr) || herr.Status != http.StatusInternalServerError || w.Body.Len() != 0 {
		t.Fatalf("Serve with failing storage: %v, wrote %d %s", err, w.Code, w.Body)
	}
	// As a plain http.Handler it answers 500 internal_error, never the cause.
	w = e.do(http.MethodGet, "/connections", "")
	if w.Code != http.StatusInternalServerError || errorCode(t, w) != "internal_error" || strings.Contains(w.Body.String(), "fire") {
		t.Fatalf("ServeHTTP with failing storage: %d %s", w.Code, w.Body)
	}
	// A caller that went away gets nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w = httptest.NewRecorder()
	if err := gateway.Fail(w, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx), errors.New("x")); !errors.As(err, &herr) || herr.Status != gateway.StatusClientGone || w.Body.Len() != 0 {
		t.Errorf("Fail for a caller gone: %v, %d bytes", err, w.Body.Len())
	}
}

func TestHandlerHealthSweep(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := context.Background()
	for _, id := range []string{"1", "2", "3"} {
		if _, err := e.h.cfg.Store.Put(ctx, "org", "alice", Record{ConnectionID: id, App: "SlackCLIAPI", AppUUID: testSlackUUID}); err != nil {
			t.Fatal(err)
		}
	}
	e.events = nil // the store's own events are not the sweep's
	e.zapier.list("1", false)
	e.zapier.list("2", true)
	if err := e.h.SweepHealth(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := e.h.cfg.Store.Accounts(ctx, "org", "alice", testSlackUUID)
	status := map[string]string{}
	for _, r := range recs {
		status[r.ConnectionID] = r.Status
	}
	if status["1"] != StatusOK || status["2"] != StatusExpired || status["3"] != StatusMissing {
		t.Errorf("statuses after the sweep: %v", status)
	}
	want := map[string]bool{
		"zapier_connection_expired SlackCLIAPI": true, "connection.expired org/alice 2": true,
		"zapier_connection_missing SlackCLIAPI": true, "connection.missing org/alice 3": true,
	}
	if len(e.events) != len(want) {
		t.Errorf("events %v", e.events)
	}
	for _, ev := range e.events {
		if !want[ev] {
			t.Errorf("unexpected event %q (all: %v)", ev, e.events)
		}
	}
	// A second sweep finds nothing new to announce.
	e.events = nil
	if err := e.h.SweepHealth(ctx); err != nil || len(e.events) != 0 {
		t.Errorf("second sweep: %v, events %v", err, e.events)
	}
	// The first gateway to look starts the clock; the sweep is one interval on.
	if claimed, err := e.h.claimHealthSweep(ctx, 1<<62); err != nil || claimed {
		t.Errorf("first claim = %v, %v; want the clock started", claimed, err)
	}
	if claimed, err := e.h.claimHealthSweep(ctx, 0); err != nil || !claimed {
		t.Errorf("claim after the interval = %v, %v", claimed, err)
	}
}

func TestSecureCookieDecision(t *testing.T) {
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	policy := &gateway.Policy{Identity: &rules}
	plain := NewHandler(HandlerConfig{Policy: policy, CallbackURL: "http://localhost:8080/cb"})
	httpsCallback := NewHandler(HandlerConfig{Policy: policy, CallbackURL: "https://app.example.com/cb"})
	req := func(remote, proto string, tls bool) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		if tls {
			r = httptest.NewRequest(http.MethodPost, "https://gw.example/token", nil)
		}
		r.RemoteAddr = remote
		if proto != "" {
			r.Header.Set("X-Forwarded-Proto", proto)
		}
		return r
	}
	for name, tc := range map[string]struct {
		h    *Handler
		r    *http.Request
		want bool
	}{
		"plain HTTP":                 {plain, req("127.0.0.1:1", "", false), false},
		"TLS":                        {plain, req("127.0.0.1:1", "", true), true},
		"https callback_url":         {httpsCallback, req("127.0.0.1:1", "", false), true},
		"forwarded https, trusted":   {plain, req("127.0.0.1:1", "https", false), true},
		"forwarded https, untrusted": {plain, req("203.0.113.9:1", "https", false), false},
		"forwarded http, trusted":    {plain, req("127.0.0.1:1", "http", false), false},
	} {
		if got := tc.h.secureCookie(tc.r); got != tc.want {
			t.Errorf("%s: Secure = %v, want %v", name, got, tc.want)
		}
	}
}

func TestValidTheme(t *testing.T) {
	for theme, want := range map[string]bool{
		"dark": true, "a_b-C9": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "a.b": false, "a@b": false, "a:b": false, "a b": false, "..": false,
	} {
		if got := validTheme(theme); got != want {
			t.Errorf("validTheme(%q) = %v, want %v", theme, got, want)
		}
	}
}
