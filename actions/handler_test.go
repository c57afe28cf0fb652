package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const slackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"

// stubCall is one request the stub API received.
type stubCall struct {
	method, path, body, token string
}

// stubAPI is a scripted api.zapier.com: fresh action ids on every listing,
// runs whose polls return statuses in order, and a fault hook.
type stubAPI struct {
	*httptest.Server
	mu       sync.Mutex
	calls    []stubCall
	actions  []string // "key:TYPE"
	auths    string   // the data array of /v2/authentications
	statuses []string // successive poll answers; the last one repeats
	polls    int
	runs     int
	listings int
	// fault, when set, may answer a request itself (it returns true then).
	fault func(w http.ResponseWriter, r *http.Request, c stubCall) bool
}

func newStubAPI(t *testing.T) *stubAPI {
	s := &stubAPI{actions: []string{"send_message:WRITE", "find_user:SEARCH"}, statuses: []string{"success"}, auths: `[]`}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *stubAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c := stubCall{r.Method, r.URL.Path, string(body), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")}
	s.mu.Lock()
	s.calls = append(s.calls, c)
	fault := s.fault
	s.mu.Unlock()
	if fault != nil && fault(w, r, c) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && c.path == "/v2/apps": // a catalog without the tests' unmapped apps
		fmt.Fprint(w, `{"links":{"next":null},"meta":{"count":0},"data":[]}`)
	case r.Method == http.MethodGet && c.path == "/v2/actions":
		s.listings++
		var items []string
		for i, a := range s.actions {
			key, typ, _ := strings.Cut(a, ":")
			items = append(items, fmt.Sprintf(`{"type":"action","id":"core:%d-%d","key":%q,"action_type":%q,"title":"T %s","description":"D","is_instant":false}`,
				s.listings, i, key, typ, key))
		}
		fmt.Fprintf(w, `{"links":{"next":null},"meta":{"count":%d},"data":[%s]}`, len(items), strings.Join(items, ","))
	case r.Method == http.MethodPost && strings.HasSuffix(c.path, "/inputs"):
		fmt.Fprint(w, `{"links":{"next":null},"meta":{"count":1,"limit":null,"offset":0},"data":[{"type":"input_field","id":"channel","is_required":true}]}`)
	case r.Method == http.MethodPost && c.path == "/v2/action-runs":
		s.runs++
		fmt.Fprintf(w, `{"data":{"type":"run","id":"run-%d"}}`, s.runs)
	case r.Method == http.MethodGet && strings.HasPrefix(c.path, "/v2/action-runs/"):
		status := s.statuses[min(s.polls, len(s.statuses)-1)]
		s.polls++
		switch status {
		case "success":
			fmt.Fprint(w, `{"data":{"type":"run","status":"success","results":[{"id":123}],"errors":[]}}`)
		case "error":
			fmt.Fprint(w, `{"data":{"type":"run","status":"error","results":[],"errors":[{"code":"user","title":"Bad input","detail":"no such channel","delay":null,"meta":null}]}}`)
		default:
			fmt.Fprintf(w, `{"data":{"type":"run","status":%q}}`, status)
		}
	case r.Method == http.MethodGet && c.path == "/v2/authentications":
		fmt.Fprintf(w, `{"links":{"next":null},"data":%s}`, s.auths)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"status":404,"code":"not_found"}]}`)
	}
}

// callsTo returns the calls made with method to paths starting with prefix.
func (s *stubAPI) callsTo(method, prefix string) []stubCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stubCall
	for _, c := range s.calls {
		if c.method == method && strings.HasPrefix(c.path, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (s *stubAPI) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// set changes the script under the stub's lock.
func (s *stubAPI) set(f func(s *stubAPI)) {
	s.mu.Lock()
	f(s)
	s.mu.Unlock()
}

func (s *stubAPI) setFault(f func(w http.ResponseWriter, r *http.Request, c stubCall) bool) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// testClock is the breaker's clock.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func writeThrottled(w http.ResponseWriter, secs string) {
	if secs != "" {
		w.Header().Set("Retry-After", secs)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	fmt.Fprint(w, `{"errors":[{"status":429,"code":"throttled","detail":"Request was throttled."}]}`)
}

// testTokens issues zat_<user>_<n> access tokens, cached per identity
// until evicted, counting the fetches.
type testTokens struct {
	mu      sync.Mutex
	tokens  map[gateway.Identity]string
	fetches *atomic.Int32
}

func (s *testTokens) Token(_ context.Context, id gateway.Identity) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tok, ok := s.tokens[id]; ok {
		return tok, nil
	}
	tok := fmt.Sprintf("zat_%s_%d", id.User, s.fetches.Add(1))
	s.tokens[id] = tok
	return tok, nil
}

func (s *testTokens) Evict(id gateway.Identity, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens[id] == token {
		delete(s.tokens, id)
	}
}

// actionsEnv is a zapier_actions handler wired to a stub API, with access
// tokens zat_<user>_<n>, the app line SlackCLIAPI, and a stored connection
// "555" to Slack for org/alice.
type actionsEnv struct {
	t       *testing.T
	api     *stubAPI
	h       *Handler
	cfg     HandlerConfig
	clock   *testClock
	fetches atomic.Int32
	// apps are the handler's app lines (implementation id → UUID).
	apps map[string]string

	mu       sync.Mutex
	outcomes map[Outcome]int
}

func newActionsEnv(t *testing.T) *actionsEnv {
	t.Helper()
	e := &actionsEnv{t: t, api: newStubAPI(t), clock: new(testClock), apps: map[string]string{"SlackCLIAPI": slackUUID}, outcomes: map[Outcome]int{}}
	client, err := zapierapi.New(zapierapi.Config{TokenURL: e.api.URL + "/oauth/token", ClientID: "c", ClientSecret: "client-secret-value", MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8", "::1/128"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	storage := fileStorage(t)
	keeper := connect.NewStateKeeper(storage, 0)
	e.cfg = HandlerConfig{
		Policy: &gateway.Policy{Identity: &rules, Hosts: gateway.NewHostRules()},
		Caller: &gateway.Caller{Tokens: &testTokens{tokens: map[gateway.Identity]string{}, fetches: &e.fetches},
			Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{Now: e.clock.now}), Client: client, APIURL: e.api.URL},
		Lookup:  &Lookup{Configured: e.configured, Catalog: catalogWithout, Store: connect.NewStore(storage)},
		Storage: storage, Keys: keeper,
		Names: gateway.NewNamespace(gateway.NamesKeyFunc(func(ctx context.Context) ([]byte, error) {
			keys, err := keeper.Keys(ctx)
			return keys.NamesKey(), err
		})),
		PollInterval: 5 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond,
		RunVia: RunViaActionRuns, // these tests are of the /v2/action-runs path; stored_test.go has the other
		ObserveRun: func(o Outcome) {
			e.mu.Lock()
			e.outcomes[o]++
			e.mu.Unlock()
		},
	}
	e.h = e.handler(e.cfg)
	e.connect("alice", "555")
	return e
}

func (e *actionsEnv) handler(cfg HandlerConfig) *Handler {
	e.t.Helper()
	h, err := NewHandler(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// configured resolves the env's app lines by key (a version after @ is
// ignored) or UUID; a malformed name is a bad request.
func (e *actionsEnv) configured(name string) (App, bool, error) {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return App{}, false, gateway.BadRequest("app must be the app's key or UUID")
	}
	key, _, _ := strings.Cut(name, "@")
	for k, uuid := range e.apps {
		if k == key || strings.EqualFold(uuid, name) {
			return App{Key: k, UUID: uuid}, true, nil
		}
	}
	return App{}, false, nil
}

// catalogWithout is a catalog without the tests' unmapped apps.
func catalogWithout(_ context.Context, _ gateway.Identity, name string) (App, error) {
	return App{}, &gateway.Error{Status: http.StatusNotFound, Code: "app_not_found", Message: "no app " + name}
}

func (e *actionsEnv) connect(user, id string) {
	e.t.Helper()
	if _, err := e.cfg.Lookup.Store.Put(context.Background(), "org", user, connect.Record{ConnectionID: id, App: "SlackCLIAPI", AppUUID: slackUUID}); err != nil {
		e.t.Fatal(err)
	}
}

// runCount is how many POST runs ended with outcome.
func (e *actionsEnv) runCount(outcome Outcome) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.outcomes[outcome]
}

type actionsResponse struct {
	status int
	header http.Header
	body   string
	err    error
}

func (r actionsResponse) code() string {
	var v struct{ Error struct{ Code string } }
	_ = json.Unmarshal([]byte(r.body), &v)
	return v.Error.Code
}

func (e *actionsEnv) do(method, path, user, body string) actionsResponse {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:40000"
	req.Host = "localhost"
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.Header.Set("X-Zapier-Tenant", "org")
		req.Header.Set("X-Zapier-User", user)
	}
	rec := httptest.NewRecorder()
	err := e.h.Serve(rec, req)
	return actionsResponse{rec.Code, rec.Header(), rec.Body.String(), err}
}

func TestRunPollsUntilItEnds(t *testing.T) {
	e := newActionsEnv(t)
	e.api.set(func(s *stubAPI) { s.statuses = []string{"waiting", "queued", "running", "success"} })
	before := e.runCount(OutcomeSuccess)
	res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message","inputs":{"channel":"#general"}}`)
	if res.status != http.StatusOK || res.body != `{"run":{"id":"run-1","status":"success","results":[{"id":123}],"errors":[]}}`+"\n" {
		t.Fatalf("POST run: %d %s", res.status, res.body)
	}
	creates := e.api.callsTo(http.MethodPost, "/v2/action-runs")
	if len(creates) != 1 || creates[0].body != `{"data":{"action":"core:1-0","authentication":"555","inputs":{"channel":"#general"}}}` {
		t.Errorf("created with %+v", creates)
	}
	if polls := e.api.callsTo(http.MethodGet, "/v2/action-runs/run-1"); len(polls) != 4 {
		t.Errorf("%d polls, want 4 (waiting, queued and running mean still running)", len(polls))
	}
	if got := e.runCount(OutcomeSuccess) - before; got != 1 {
		t.Errorf("action_runs_total{outcome=success} grew by %v", got)
	}

	// A second run uses a fresh action id; an error result is passed on.
	e.api.set(func(s *stubAPI) { s.statuses, s.polls = []string{"error"}, 0 })
	res = e.do(http.MethodPost, "/run", "alice", `{"app":"`+slackUUID+`","action":"find_user","wait":"5s"}`)
	if res.status != http.StatusOK || !strings.Contains(res.body, `"status":"error","results":[],"errors":[{"code":"user","title":"Bad input"`) {
		t.Fatalf("error run: %d %s", res.status, res.body)
	}
	creates = e.api.callsTo(http.MethodPost, "/v2/action-runs")
	if len(creates) != 2 || creates[1].body != `{"data":{"action":"core:2-1","authentication":"555","inputs":{}}}` {
		t.Errorf("second run created with %+v", creates)
	}

	// runs/{id}: the owner polls once; anyone else is told there is no such run.
	res = e.do(http.MethodGet, "/runs/run-1", "alice", "")
	if res.status != http.StatusOK || !strings.Contains(res.body, `"id":"run-1","status":"error"`) {
		t.Errorf("GET runs/run-1: %d %s", res.status, res.body)
	}
	polls := len(e.api.callsTo(http.MethodGet, "/v2/action-runs/"))
	for _, tc := range []struct{ user, path string }{{"bob", "/runs/run-1"}, {"alice", "/runs/run-9"}, {"alice", "/runs/"}, {"alice", "/runs/a%20b"}} {
		if res := e.do(http.MethodGet, tc.path, tc.user, ""); res.status != http.StatusNotFound || res.code() != "run_not_found" {
			t.Errorf("%s as %s: %d %s", tc.path, tc.user, res.status, res.body)
		}
	}
	if n := len(e.api.callsTo(http.MethodGet, "/v2/action-runs/")); n != polls {
		t.Errorf("refused run lookups reached Zapier (%d polls, want %d)", n, polls)
	}
}

func TestRunOutlastingWaitAnswers202(t *testing.T) {
	e := newActionsEnv(t)
	e.api.set(func(s *stubAPI) { s.statuses = []string{"running"} })
	before := e.runCount(OutcomePending)
	res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message","wait":0.05}`)
	if res.status != http.StatusAccepted || res.body != `{"run":{"id":"run-1","status":"running"}}`+"\n" || res.header.Get("Location") != "runs/run-1" {
		t.Fatalf("POST run: %d %v %s", res.status, res.header, res.body)
	}
	if e.runCount(OutcomePending)-before != 1 {
		t.Error("pending run not counted")
	}
	// wait 0: no poll at all.
	polls := len(e.api.callsTo(http.MethodGet, "/v2/action-runs/"))
	res = e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message","wait":"0s"}`)
	if res.status != http.StatusAccepted || !strings.Contains(res.body, `"status":"waiting"`) || len(e.api.callsTo(http.MethodGet, "/v2/action-runs/")) != polls {
		t.Errorf("wait 0: %d %s", res.status, res.body)
	}
	e.api.set(func(s *stubAPI) { s.statuses = []string{"success"} })
	if res := e.do(http.MethodGet, "/runs/run-1", "alice", ""); res.status != http.StatusOK || !strings.Contains(res.body, `"results":[{"id":123}]`) {
		t.Errorf("GET runs/run-1 later: %d %s", res.status, res.body)
	}
}

func TestRunErrors(t *testing.T) {
	e := newActionsEnv(t)
	missingBefore := e.runCount(OutcomeConnectionMissing)
	for _, tc := range []struct {
		name, user, body string
		status           int
		code             string
	}{
		{"no connection", "bob", `{"app":"SlackCLIAPI","action":"send_message"}`, 409, "connection_missing"},
		{"unknown key", "alice", `{"app":"SlackCLIAPI","action":"nope"}`, 404, "action_not_found"},
		{"unknown app", "alice", `{"app":"GmailV2API","action":"x"}`, 404, "app_not_found"},
		{"no action", "alice", `{"app":"SlackCLIAPI"}`, 400, "bad_request"},
		{"bad type", "alice", `{"app":"SlackCLIAPI","action":"x","action_type":"DELETE"}`, 400, "bad_request"},
		{"inputs array", "alice", `{"app":"SlackCLIAPI","action":"x","inputs":[1]}`, 400, "bad_request"},
		{"unknown field", "alice", `{"app":"SlackCLIAPI","action":"x","input":{}}`, 400, "bad_request"},
		{"long wait", "alice", `{"app":"SlackCLIAPI","action":"x","wait":"3m"}`, 400, "bad_request"},
		{"no identity", "", `{"app":"SlackCLIAPI","action":"x"}`, 401, "identity_missing"},
	} {
		res := e.do(http.MethodPost, "/run", tc.user, tc.body)
		if res.status != tc.status || res.code() != tc.code || res.err != nil {
			t.Errorf("%s: %d %s (%v), want %d %s", tc.name, res.status, res.body, res.err, tc.status, tc.code)
		}
	}
	if e.runCount(OutcomeConnectionMissing)-missingBefore != 1 {
		t.Error("connection_missing not counted")
	}
	if n := len(e.api.callsTo(http.MethodPost, "/v2/action-runs")); n != 0 {
		t.Errorf("%d runs created by refused requests", n)
	}

	// The same key as two action types needs action_type.
	e.api.set(func(s *stubAPI) { s.actions = []string{"lookup:SEARCH", "lookup:WRITE"} })
	if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"lookup","wait":0}`); res.status != 400 || !strings.Contains(res.body, "give action_type") {
		t.Errorf("ambiguous key: %d %s", res.status, res.body)
	}
	e.api.set(func(s *stubAPI) { s.actions = []string{"lookup:SEARCH"} }) // the stub ignores the filter
	if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"lookup","action_type":"SEARCH","wait":0}`); res.status != http.StatusAccepted {
		t.Errorf("with action_type: %d %s", res.status, res.body)
	}

	e.api.set(func(s *stubAPI) { s.actions = []string{"send_message:WRITE"} })

	// Zapier refuses the run: an expired or vanished connection is
	// connection_invalid, anything else action_rejected.
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		if c.method != http.MethodPost {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"errors":[{"status":400,"code":"invalid","detail":"authentication: Authentication is expired."}]}`)
		return true
	})
	for auths, want := range map[string]string{
		`[{"id":"555","app":"` + slackUUID + `","is_expired":true,"title":"Slack"}]`:  "connection_invalid",
		`[{"id":"777","app":"` + slackUUID + `","is_expired":false,"title":"Slack"}]`: "connection_invalid",
		`[{"id":555,"app":"` + slackUUID + `","is_expired":false,"title":"Slack"}]`:   "action_rejected",
		`[{"id":555,"app":"another-app","is_expired":false,"title":"Slack"}]`:         "connection_invalid", // the id under another app
	} {
		e.api.set(func(s *stubAPI) { s.auths = auths })
		res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
		if res.status != http.StatusBadRequest || res.code() != want {
			t.Errorf("authentications %s: %d %s, want %s", auths, res.status, res.body, want)
		}
		res = e.do(http.MethodPost, "/inputs", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
		if res.status != http.StatusBadRequest || res.code() != want {
			t.Errorf("inputs with authentications %s: %d %s, want %s", auths, res.status, res.body, want)
		}
	}
	// The refusal's detail reaches the caller, the token does not.
	e.api.set(func(s *stubAPI) { s.auths = `[{"id":"555","app":"` + slackUUID + `","is_expired":false}]` })
	res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
	if res.code() != "action_rejected" || !strings.Contains(res.body, "Authentication is expired") || strings.Contains(res.body, "zat_") {
		t.Errorf("action_rejected body: %s", res.body)
	}
}

func TestCreateRunIsNeverRepeatedButStaleTokensAreReplaced(t *testing.T) {
	e := newActionsEnv(t)
	// The first token is refused with 401 everywhere: evicted, the call made
	// again with a fresh token (the refused call did nothing).
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		if c.token != "zat_alice_1" {
			return false
		}
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
	if res.status != http.StatusOK {
		t.Fatalf("with a stale token: %d %s", res.status, res.body)
	}
	if e.fetches.Load() != 2 {
		t.Errorf("%d token fetches, want 2", e.fetches.Load())
	}

	// A 5xx on creation is not retried: the run may exist.
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		if c.method == http.MethodPost && c.path == "/v2/action-runs" {
			w.WriteHeader(http.StatusBadGateway)
			return true
		}
		return false
	})
	before := len(e.api.callsTo(http.MethodPost, "/v2/action-runs"))
	res = e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
	if res.status != http.StatusBadGateway || res.code() != "zapier_api_failed" {
		t.Errorf("5xx on creation: %d %s", res.status, res.body)
	}
	if n := len(e.api.callsTo(http.MethodPost, "/v2/action-runs")) - before; n != 1 {
		t.Errorf("creation sent %d times, want once", n)
	}
}

func TestRateLimitCooldownStopsCallsToZapier(t *testing.T) {
	e := newActionsEnv(t)
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		writeThrottled(w, "7")
		return true
	})
	res := e.do(http.MethodGet, "/actions?app=SlackCLIAPI", "alice", "")
	if res.status != http.StatusServiceUnavailable || res.code() != "zapier_unavailable" || res.header.Get("Retry-After") != "7" {
		t.Fatalf("429 from Zapier: %d %v %s", res.status, res.header, res.body)
	}
	calls := e.api.callCount()
	if calls != 1 {
		t.Errorf("%d calls, want 1 (a 429 is not retried)", calls)
	}
	// During the cooldown nothing reaches Zapier, on any route.
	e.clock.advance(3 * time.Second)
	for _, req := range [][3]string{
		{http.MethodGet, "/actions?app=SlackCLIAPI", ""},
		{http.MethodPost, "/run", `{"app":"SlackCLIAPI","action":"send_message"}`},
		{http.MethodPost, "/inputs", `{"app":"SlackCLIAPI","action":"send_message"}`},
	} {
		res := e.do(req[0], req[1], "alice", req[2])
		if res.status != http.StatusServiceUnavailable || res.code() != "zapier_unavailable" || res.header.Get("Retry-After") != "4" {
			t.Errorf("%s %s during the cooldown: %d %v %s", req[0], req[1], res.status, res.header.Get("Retry-After"), res.body)
		}
	}
	if n := e.api.callCount(); n != calls {
		t.Errorf("%d calls to Zapier during the cooldown", n-calls)
	}
	// After it, calls go through again.
	e.api.setFault(nil)
	e.clock.advance(5 * time.Second)
	if res := e.do(http.MethodGet, "/actions?app=SlackCLIAPI", "alice", ""); res.status != http.StatusOK ||
		res.body != `{"data":[{"key":"send_message","title":"T send_message","description":"D","action_type":"WRITE","is_instant":false},{"key":"find_user","title":"T find_user","description":"D","action_type":"SEARCH","is_instant":false}]}`+"\n" {
		t.Errorf("after the cooldown: %d %s", res.status, res.body)
	}

	// A 429 while polling a created run: 202 with its id and Retry-After,
	// never an error that would invite running the action again.
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		if c.method == http.MethodGet && strings.HasPrefix(c.path, "/v2/action-runs/") {
			writeThrottled(w, "")
			return true
		}
		return false
	})
	res = e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message"}`)
	if res.status != http.StatusAccepted || !strings.Contains(res.body, `"id":"run-1"`) || res.header.Get("Retry-After") != "60" {
		t.Errorf("429 while polling: %d %v %s", res.status, res.header, res.body)
	}
	if res := e.do(http.MethodGet, "/runs/run-1", "alice", ""); res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != strconv.Itoa(60) {
		t.Errorf("runs/{id} in the cooldown: %d %v", res.status, res.header)
	}
}

func TestActionsListAndInputs(t *testing.T) {
	e := newActionsEnv(t)
	res := e.do(http.MethodGet, "/actions?app=SlackCLIAPI&action_type=SEARCH", "bob", "")
	if res.status != http.StatusOK || strings.Contains(res.body, "core:") {
		t.Errorf("GET actions: %d %s (action ids must not leak: they are single-use)", res.status, res.body)
	}
	if lists := e.api.callsTo(http.MethodGet, "/v2/actions"); len(lists) != 1 {
		t.Errorf("listings %+v", lists)
	}
	res = e.do(http.MethodPost, "/inputs", "alice", `{"app":"SlackCLIAPI","action":"send_message","inputs":{"channel":"#x"}}`)
	if res.status != http.StatusOK || res.body != `{"data":[{"type":"input_field","id":"channel","is_required":true}]}`+"\n" {
		t.Errorf("POST inputs: %d %s", res.status, res.body)
	}
	in := e.api.callsTo(http.MethodPost, "/v2/actions/")
	if len(in) != 1 || in[0].path != "/v2/actions/core:2-0/inputs" || in[0].body != `{"data":{"authentication":"555","inputs":{"channel":"#x"}}}` {
		t.Errorf("inputs call %+v", in)
	}
	// An implementation id the user connected resolves through the stored
	// connection even without an app line.
	e.apps = nil
	if res := e.do(http.MethodGet, "/actions?app=SlackCLIAPI", "alice", ""); res.status != http.StatusOK {
		t.Errorf("via the stored connection: %d %s", res.status, res.body)
	}
	if res := e.do(http.MethodGet, "/actions?app=SlackCLIAPI", "bob", ""); res.status != http.StatusNotFound || res.code() != "app_not_found" {
		t.Errorf("not in the catalog, for bob: %d %s", res.status, res.body)
	}
	for path, want := range map[string]int{
		"/actions?app=" + slackUUID + "&app=x":           400,
		"/actions?app=" + slackUUID + "&action_type=FOO": 400,
		"/actions":    400,
		"/elsewhere":  404,
		"/runs/run-1": 404,
	} {
		if res := e.do(http.MethodGet, path, "alice", ""); res.status != want {
			t.Errorf("GET %s: %d %s, want %d", path, res.status, res.body, want)
		}
	}
	if res := e.do(http.MethodPost, "/actions", "alice", ""); res.status != http.StatusMethodNotAllowed || res.header.Get("Allow") != "GET" {
		t.Errorf("POST actions: %d %v", res.status, res.header)
	}
	if res := e.do(http.MethodGet, "/run", "alice", ""); res.status != http.StatusMethodNotAllowed {
		t.Errorf("GET run: %d", res.status)
	}
}

func TestRunOwnershipSurvivesAnotherGateway(t *testing.T) {
	e := newActionsEnv(t)
	if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message","wait":0}`); res.status != http.StatusAccepted {
		t.Fatalf("POST run: %d %s", res.status, res.body)
	}
	// A second handler on the same storage (another gateway, or after a
	// restart) knows who owns the run.
	other := NewRunStore(context.Background(), e.h.runs.Storage, connect.NewStateKeeper(e.h.runs.Storage, 0))
	if _, ok, err := other.Owned(context.Background(), "run-1", tokencache.Key{Tenant: "org", User: "alice"}); !ok || err != nil {
		t.Errorf("owner: %v %v", ok, err)
	}
	for _, k := range []tokencache.Key{{Tenant: "org", User: "bob"}, {Tenant: "org2", User: "alice"}, {Tenant: "orgalice"}} {
		if _, ok, _ := other.Owned(context.Background(), "run-1", k); ok {
			t.Errorf("%+v owns alice's run", k)
		}
	}
	// The record names no identity, and is forgotten after Zapier's retention.
	data, err := e.h.runs.Storage.Load(context.Background(), RunKey("run-1"))
	if err != nil || strings.Contains(string(data), "alice") {
		t.Errorf("record %s, %v", data, err)
	}
	later := NewRunStore(context.Background(), e.h.runs.Storage, connect.NewStateKeeper(e.h.runs.Storage, 0))
	later.Now = func() time.Time { return time.Now().Add(RunRetention) }
	if _, ok, _ := later.Owned(context.Background(), "run-1", tokencache.Key{Tenant: "org", User: "alice"}); ok {
		t.Error("a record older than the retention still counts")
	}
	// The sweep deletes records by their storage age.
	later.Now = func() time.Time { return time.Now().Add(RunRetention + time.Minute) }
	later.Sweep(context.Background())
	if e.h.runs.Storage.Exists(context.Background(), RunKey("run-1")) {
		t.Error("sweep kept an expired record")
	}
}

func fileStorage(t *testing.T) certmagic.Storage {
	return &certmagic.FileStorage{Path: t.TempDir()}
}
