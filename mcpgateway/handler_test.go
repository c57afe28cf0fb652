package mcpgateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/internal/memstorage"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// fakeZapier is Zapier for the MCP flow: the White Label app list, the
// token endpoint (connect token, code exchange, refresh), and the app's MCP
// server, which wants the current access token.
type fakeZapier struct {
	srv *httptest.Server

	mu        sync.Mutex
	calls     []string
	forms     []url.Values
	access    string // the MCP access token the server accepts
	refreshes int
}

func newFakeZapier(t *testing.T) *fakeZapier {
	z := &fakeZapier{access: "mcp-access-1"}
	z.srv = httptest.NewServer(z)
	t.Cleanup(z.srv.Close)
	return z
}

func (z *fakeZapier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.calls = append(z.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v2/whitelabel/apps":
		_ = json.NewEncoder(w).Encode(map[string]any{"data": []map[string]any{
			{"id": "app-1", "key": "SlackCLIAPI", "title": "Slack", "links": map[string]any{
				"mcp_authorize_url": z.srv.URL + "/mcp/authorize?keep=1", "mcp_server_url": z.srv.URL + "/mcp/server"}},
			{"id": "app-2", "key": "NoMCP", "links": map[string]any{"mcp_authorize_url": "", "mcp_server_url": ""}},
		}})
	case "/oauth/token":
		_ = r.ParseForm()
		z.forms = append(z.forms, r.PostForm)
		switch r.PostForm.Get("grant_type") {
		case "authorization_code":
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": z.access, "refresh_token": "refresh-1", "token_type": "Bearer", "expires_in": 3600})
		case "refresh_token":
			z.refreshes++
			z.access = "mcp-access-2"
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": z.access, "refresh_token": "refresh-2", "token_type": "Bearer", "expires_in": 3600})
		default:
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "connect-token", "token_type": "Bearer",
				"issued_token_type": zapierapi.DefaultConnectTokenType, "expires_in": 300})
		}
	case "/mcp/server":
		if r.Header.Get("Authorization") != "Bearer "+z.access {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	default:
		http.NotFound(w, r)
	}
}

func (z *fakeZapier) count(call string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, c := range z.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (z *fakeZapier) lastForm() url.Values {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.forms[len(z.forms)-1]
}

type handlerEnv struct {
	h        *Handler
	z        *fakeZapier
	mu       sync.Mutex
	outcomes map[AuthOutcome]int
	kinds    []string
}

const testRemote = "127.0.0.1:5555"

func newHandlerEnv(t *testing.T, tweak func(*HandlerConfig)) *handlerEnv {
	t.Helper()
	e := &handlerEnv{z: newFakeZapier(t), outcomes: map[AuthOutcome]int{}}
	client, err := zapierapi.New(zapierapi.Config{TokenURL: e.z.srv.URL + "/oauth/token", ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	kv := memstorage.New()
	store, err := NewStore(kv, []byte("0123456789abcdef0123456789abcdef"), "zapier/mcp/tokens")
	if err != nil {
		t.Fatal(err)
	}
	namesKey := []byte("names key names key names key 32")
	store.Owners = gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) { return namesKey, nil }))
	cfg := HandlerConfig{
		Policy: &gateway.Policy{Identity: &rules},
		Caller: &gateway.Caller{Breaker: zapierapi.NewBreaker(zapierapi.BreakerConfig{}), Client: client, APIURL: e.z.srv.URL},
		Exchange: func(ctx context.Context, _ gateway.Identity, kind string, call func(context.Context) (zapierapi.Token, error)) (zapierapi.Token, error) {
			e.mu.Lock()
			e.kinds = append(e.kinds, kind)
			e.mu.Unlock()
			return call(ctx)
		},
		SignJWT:       func(_ context.Context, id gateway.Identity) (string, error) { return "jwt-for-" + id.User, nil },
		Store:         store,
		States:        connect.NewStateKeeper(kv, connect.DefaultStateTTL),
		CallbackURL:   "https://app.example/zapier/mcp/callback",
		PKCE:          true,
		PKCEKey:       PKCEKey([]byte("0123456789abcdef0123456789abcdef")),
		StateTTL:      connect.DefaultStateTTL,
		ReturnOrigins: []string{"https://app.example"},
		Authorized: func(o AuthOutcome) {
			e.mu.Lock()
			e.outcomes[o]++
			e.mu.Unlock()
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	e.h = h
	return e
}

// do serves one request as alice of tenant org.
func (e *handlerEnv) do(method, target string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	body := ""
	if method == http.MethodPost {
		body = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	}
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = testRemote
	r.Header.Set("X-Zapier-User", "alice")
	r.Header.Set("X-Zapier-Tenant", "org")
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
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

// authorize runs GET authorize and the callback with code, and returns
// the callback's answer.
func (e *handlerEnv) authorize(t *testing.T, app, callbackQuery string) (*url.URL, *httptest.ResponseRecorder) {
	t.Helper()
	w := e.do(http.MethodGet, "/authorize?app="+app+"&return_to=%2Fdone")
	if w.Code != http.StatusFound {
		t.Fatalf("authorize: %d %s", w.Code, w.Body)
	}
	to, err := url.Parse(w.Header().Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	cb := e.do(http.MethodGet, "/callback?"+callbackQuery+"&state="+url.QueryEscape(to.Query().Get("state")), cookies...)
	return to, cb
}

func TestHandlerAuthorizeFlowProxyAndForget(t *testing.T) {
	e := newHandlerEnv(t, nil)
	to, cb := e.authorize(t, "SlackCLIAPI", "code=the-code")
	q := to.Query()
	if to.Path != "/mcp/authorize" || q.Get("keep") != "1" || q.Get("token") != "connect-token" || q.Get("response_type") != "code" ||
		q.Get("redirect_uri") != "https://app.example/zapier/mcp/callback" || q.Get("resource") != e.z.srv.URL+"/mcp/server" ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		t.Fatalf("authorize redirect %s", to)
	}
	if cb.Code != http.StatusFound || cb.Header().Get("Location") != "/done?zapier_app=app-1&zapier_mcp=success" {
		t.Fatalf("callback: %d %s %s", cb.Code, cb.Header().Get("Location"), cb.Body)
	}
	form := e.z.lastForm()
	if form.Get("code") != "the-code" || pkceChallenge(form.Get("code_verifier")) != q.Get("code_challenge") ||
		form.Get("resource") != e.z.srv.URL+"/mcp/server" {
		t.Fatalf("code exchange form %v", form)
	}
	if strings.Join(e.kinds, ",") != ExchangeConnectToken+","+ExchangeCode || e.outcomes[AuthSuccess] != 1 {
		t.Fatalf("exchanges %v outcomes %v", e.kinds, e.outcomes)
	}

	w := e.do(http.MethodGet, "/apps")
	var apps struct {
		Data []appView `json:"data"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &apps); err != nil || w.Code != http.StatusOK || len(apps.Data) != 1 ||
		apps.Data[0].App != "app-1" || apps.Data[0].Title != "Slack" || !apps.Data[0].Refreshable {
		t.Fatalf("apps: %d %s", w.Code, w.Body)
	}

	// The per-app route proxies with the stored token; a refused token is
	// refreshed once and the request replayed.
	if w := e.do(http.MethodPost, "/app-1"); w.Code != http.StatusOK {
		t.Fatalf("proxy: %d %s", w.Code, w.Body)
	}
	e.z.mu.Lock()
	e.z.access = "rotated-upstream"
	e.z.mu.Unlock()
	w = e.do(http.MethodPost, "/app-1")
	e.z.mu.Lock()
	refreshes := e.z.refreshes
	e.z.mu.Unlock()
	if w.Code != http.StatusOK || refreshes != 1 || e.kinds[len(e.kinds)-1] != ExchangeRefresh {
		t.Fatalf("proxy after refusal: %d %s (refreshes %d, kinds %v)", w.Code, w.Body, refreshes, e.kinds)
	}

	if w := e.do(http.MethodDelete, "/apps/app-1"); w.Code != http.StatusNoContent {
		t.Fatalf("forget: %d %s", w.Code, w.Body)
	}
	if w := e.do(http.MethodDelete, "/apps/app-1"); w.Code != http.StatusNotFound || errorCode(t, w) != "mcp_authorization_missing" {
		t.Fatalf("forget again: %d %s", w.Code, w.Body)
	}
	w = e.do(http.MethodPost, "/app-1")
	var env struct {
		Error struct {
			Code, App    string
			AuthorizeURL string `json:"authorize_url"`
		} `json:"error"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &env)
	if w.Code != http.StatusUnauthorized || env.Error.Code != "mcp_authorization_required" || env.Error.App != "app-1" ||
		env.Error.AuthorizeURL != "https://app.example/zapier/mcp/authorize?app=app-1" ||
		!strings.Contains(w.Header().Get("WWW-Authenticate"), "mcp_authorization_required") {
		t.Fatalf("after forget: %d %s", w.Code, w.Body)
	}
}

func TestHandlerCallbackOutcomes(t *testing.T) {
	e := newHandlerEnv(t, nil)
	_, cb := e.authorize(t, "SlackCLIAPI", "error=access_denied&error_description=no")
	loc, _ := url.Parse(cb.Header().Get("Location"))
	if cb.Code != http.StatusFound || loc.Path != "/done" || loc.Query().Get("zapier_mcp") != "error" ||
		loc.Query().Get("zapier_error") != "access_denied" || loc.Query().Get("zapier_app") != "app-1" {
		t.Fatalf("callback with error: %d %s", cb.Code, cb.Header().Get("Location"))
	}
	w := e.do(http.MethodGet, "/callback?code=c&state=forged")
	if w.Code != http.StatusBadRequest || errorCode(t, w) != "connect_state_invalid" {
		t.Fatalf("forged state: %d %s", w.Code, w.Body)
	}
	if w := e.do(http.MethodGet, "/callback?state=s"); w.Code != http.StatusBadRequest || errorCode(t, w) != "bad_request" {
		t.Fatalf("no code nor error: %d %s", w.Code, w.Body)
	}
	if e.outcomes[AuthError] != 1 || e.outcomes[AuthStateInvalid] != 1 || e.outcomes[AuthFailed] != 1 || e.outcomes[AuthSuccess] != 0 {
		t.Fatalf("outcomes %v", e.outcomes)
	}
}

// The app list is fetched once per TTL; an unknown name is answered from
// it (without another fetch right away).
func TestHandlerCatalog(t *testing.T) {
	e := newHandlerEnv(t, nil)
	for _, name := range []string{"Nope", "NoMCP", "app-2"} {
		w := e.do(http.MethodGet, "/authorize?app="+name)
		if w.Code != http.StatusNotFound || errorCode(t, w) != "mcp_app_unknown" {
			t.Fatalf("%s: %d %s", name, w.Code, w.Body)
		}
	}
	if n := e.z.count("GET /v2/whitelabel/apps"); n != 1 {
		t.Fatalf("the app list was fetched %d times", n)
	}
	for _, target := range []string{"/authorize?app=a%2Fb", "/authorize?app=x&app=y", "/authorize?app=SlackCLIAPI&return_to=https%3A%2F%2Fevil.example%2F"} {
		if w := e.do(http.MethodGet, target); w.Code != http.StatusBadRequest || errorCode(t, w) != "bad_request" {
			t.Fatalf("%s: %d %s", target, w.Code, w.Body)
		}
	}
}

func TestHandlerRoutes(t *testing.T) {
	e := newHandlerEnv(t, func(cfg *HandlerConfig) { cfg.CallbackURL = "https://app.example/elsewhere" })
	for _, tc := range []struct {
		method, target string
		status         int
		code           string
	}{
		{http.MethodGet, "/a/b", http.StatusNotFound, "not_found"},
		{http.MethodGet, "/apps/x/y", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/apps", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPost, "/authorize", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodPut, "/app-1", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodDelete, "/apps/a%2F..", http.StatusBadRequest, "bad_request"},
		{http.MethodPost, "/app-1", http.StatusUnauthorized, "mcp_authorization_required"},
	} {
		w := e.do(tc.method, tc.target)
		if w.Code != tc.status || errorCode(t, w) != tc.code {
			t.Errorf("%s %s: %d %s", tc.method, tc.target, w.Code, w.Body)
		}
	}
	// Without the mount's callback route, no authorize_url is offered.
	if w := e.do(http.MethodPost, "/app-1"); strings.Contains(w.Body.String(), "authorize_url\":") {
		t.Fatalf("authorize_url without a callback route: %s", w.Body)
	}
	r := httptest.NewRequest(http.MethodGet, "/apps", nil)
	r.RemoteAddr = testRemote
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized || errorCode(t, w) != "identity_missing" {
		t.Fatalf("no identity: %d %s", w.Code, w.Body)
	}
}

func TestHandlerConfigCheck(t *testing.T) {
	cfg := HandlerConfig{}
	if err := cfg.Check(); err != nil || cfg.Resource != ResourceServer || len(cfg.Scopes) == 0 || cfg.AppsCacheTTL != DefaultAppsCacheTTL {
		t.Fatalf("defaults: %v %+v", err, cfg)
	}
	for _, bad := range []HandlerConfig{
		{Resource: "elsewhere"},
		{Limit: &CallLimiter{PerMinute: -1}},
		{StreamsPerIdentity: -1},
		{AggregateIdleTimeout: -time.Second},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := NewHandler(HandlerConfig{}); err == nil {
		t.Fatal("a handler without its pieces was built")
	}
}

func TestProxyErrorAnswers(t *testing.T) {
	for err, want := range map[error]string{
		&LimitError{RetryAfter: 3 * time.Second}: "429 mcp_tool_call_limit 3s",
		ErrBodyTooLarge:                          "413 mcp_request_too_large 0s",
		ErrBodyUnreadable:                        "400 bad_request 0s",
		ErrDuplicateMember:                       "400 mcp_request_ambiguous 0s",
		ErrHeaderMismatch:                        "400 mcp_header_mismatch 0s",
		ErrTooManyStreams:                        "429 mcp_too_many_streams 1s",
		ErrToolDenied:                            "403 mcp_tool_denied 0s",
		ErrRetry:                                 "503 mcp_retry 1s",
		ErrUpstream:                              "502 mcp_upstream_failed 0s",
	} {
		e := proxyError(err)
		if e == nil {
			t.Errorf("%v: no answer", err)
			continue
		}
		if got := strconv.Itoa(e.Status) + " " + e.Code + " " + e.RetryAfter.String(); got != want {
			t.Errorf("%v: %s, want %s", err, got, want)
		}
	}
	if proxyError(errors.New("storage")) != nil {
		t.Fatal("an internal failure was answered as the gateway's own")
	}
}

func TestPKCEVerifierIsDerivedPerState(t *testing.T) {
	h := &Handler{cfg: HandlerConfig{PKCEKey: []byte("0123456789abcdef0123456789abcdef")}}
	a, b := h.pkceVerifier("state-a"), h.pkceVerifier("state-b")
	if a == b || a != h.pkceVerifier("state-a") || len(a) < 43 {
		t.Fatalf("verifiers %q %q", a, b)
	}
	// RFC 7636 appendix B.
	if got := pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"); got != "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" {
		t.Fatalf("challenge %q", got)
	}
}

func TestMethodClassIsBounded(t *testing.T) {
	for in, want := range map[string]string{
		"": "stream", "initialize": "initialize", "tools/call": "tools/call", "tools/list": "tools/list",
		"notifications/initialized": "notification", "resources/read": "other", strings.Repeat("x", 500): "other",
	} {
		if got := MethodClass(in); got != want {
			t.Errorf("MethodClass(%q) = %q, want %q", in, got, want)
		}
	}
}

// A body the policy cannot check is unchecked; an upstream error status is
// not made a tool error.
func TestOutcome(t *testing.T) {
	for _, err := range []error{ErrBodyTooLarge, ErrBodyUnreadable, ErrDuplicateMember} {
		if o := Outcome(Call{Err: err}); o != OutcomeUnchecked {
			t.Fatalf("outcome %s", o)
		}
	}
	if o := Outcome(Call{Status: 500, ToolError: true}); o != OutcomeUpstreamError {
		t.Fatalf("outcome %s", o)
	}
	if o := Outcome(Call{Status: 200, ToolError: true}); o != OutcomeToolError {
		t.Fatalf("outcome %s", o)
	}
}

func TestToolPolicy(t *testing.T) {
	policy, err := NewPolicy(&ToolPolicy{Deny: []string{"*__delete_*"}}, map[string]*ToolPolicy{
		"acme": {Allow: []string{"Slack*__*"}, Deny: []string{"SlackCLIAPI__archive"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tenant, app, tool string
		want              bool
	}{
		{"other", "Sheets", "read", true},
		{"other", "Sheets", "delete_rows", false},
		{"acme", "SlackCLIAPI", "send", true},
		{"acme", "SlackCLIAPI", "archive", false},
		{"acme", "SlackCLIAPI", "delete_all", false},
		{"acme", "Sheets", "read", false},
	} {
		if got := policy(Identity{Tenant: tc.tenant, User: "u"}, tc.app, tc.tool); got != tc.want {
			t.Errorf("%s %s__%s: %t, want %t", tc.tenant, tc.app, tc.tool, got, tc.want)
		}
	}
	if _, err := NewPolicy(&ToolPolicy{Deny: []string{"[unclosed"}}, nil); err == nil {
		t.Fatal("a malformed pattern was accepted")
	}
	if _, err := NewPolicy(nil, map[string]*ToolPolicy{"t": {Allow: []string{"[x"}}}); err == nil {
		t.Fatal("a malformed tenant pattern was accepted")
	}
	if p, err := NewPolicy(nil, nil); p != nil || err != nil {
		t.Fatal("no policy configured should mean none")
	}
}
