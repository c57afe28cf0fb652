package zapierapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// actionsServer lists n actions of app "app-uuid" with a fresh id on every
// listing, honouring limit, offset and action_type like Zapier.
func actionsServer(t *testing.T, n int) (*fakeServer, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var queries []string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, hit int) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		if r.Method != http.MethodGet || r.URL.Path != "/v2/actions" || r.Header.Get("Authorization") != "Bearer "+testAccess {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		offset, _ := strconv.Atoi(q.Get("offset"))
		if q.Get("app") != "app-uuid" || limit < 1 {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		typ := "WRITE"
		if q.Get("action_type") != "" {
			typ = q.Get("action_type")
		}
		end := min(offset+limit, n)
		var items []string
		for i := offset; i < end; i++ {
			items = append(items, fmt.Sprintf(`{"type":"action","id":"core:%d-%d","key":"key_%d","app":"app-uuid","action_type":%q,"is_instant":%t,"title":"Action %d","description":null}`,
				hit, i, i, typ, i == 0, i))
		}
		next := "null"
		if end < n {
			next = fmt.Sprintf(`"http://elsewhere.example/v2/actions?offset=%d"`, end)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"links":{"next":%s,"prev":null},"meta":{"count":%d,"limit":%d,"offset":%d},"data":[%s]}`,
			next, n, limit, offset, strings.Join(items, ","))
	})
	return f, &queries
}

func TestListActionsReadsEveryPage(t *testing.T) {
	const n = 230
	f, queries := actionsServer(t, n)
	c := newTestClient(t, f.URL+"/oauth/token")
	got, err := c.ListActions(context.Background(), f.URL+"/", testAccess, "app-uuid", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("got %d actions, want %d", len(got), n)
	}
	want0 := Action{ID: "core:1-0", Key: "key_0", App: "app-uuid", ActionType: "WRITE", IsInstant: true, Title: "Action 0"}
	if got[0] != want0 || got[n-1].Key != fmt.Sprintf("key_%d", n-1) || got[n-1].ID != fmt.Sprintf("core:3-%d", n-1) || got[1].IsInstant {
		t.Errorf("first = %+v, last = %+v", got[0], got[n-1])
	}
	want := []string{"app=app-uuid&limit=100&offset=0", "app=app-uuid&limit=100&offset=100", "app=app-uuid&limit=100&offset=200"}
	if strings.Join(*queries, " ") != strings.Join(want, " ") {
		t.Errorf("queries = %q, want %q", *queries, want)
	}

	*queries = nil
	got, err = c.ListActions(context.Background(), f.URL, testAccess, "app-uuid", "SEARCH")
	if err != nil || len(got) != n || got[5].ActionType != "SEARCH" {
		t.Fatalf("filtered: %d actions, %v", len(got), err)
	}
	if !strings.Contains((*queries)[0], "action_type=SEARCH") {
		t.Errorf("query %q does not filter by action_type", (*queries)[0])
	}
}

func TestListActionsErrors(t *testing.T) {
	ctx := context.Background()
	limited := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Retry-After", "42")
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"errors": []map[string]any{{
			"status": 429, "code": "throttled", "detail": "Request was throttled.",
		}}})
	})
	c := newTestClient(t, limited.URL+"/oauth/token")
	_, err := c.ListActions(ctx, limited.URL, testAccess, "app-uuid", "")
	e := wantError(t, err, KindRateLimited)
	if e.RetryAfter != 42*time.Second || e.OAuthError != "throttled" || e.Op != "list actions" {
		t.Errorf("error = %+v", e)
	}
	limited.waitHits(t, 1) // a 429 is never retried

	endless := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"links":{"next":"x"},"data":[{"id":"a","key":"k"}]}`)
	})
	c = newTestClient(t, endless.URL+"/oauth/token")
	_, err = c.ListActions(ctx, endless.URL, testAccess, "app-uuid", "")
	wantError(t, err, KindFailed)
	endless.waitHits(t, maxActionsPages)

	for name, body := range map[string]string{
		"no key":   `{"data":[{"id":"a"}]}`,
		"no id":    `{"data":[{"key":"k"}]}`,
		"garbage":  `{"data":[`,
		"data obj": `{"data":{"id":"a"}}`,
	} {
		bad := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, body)
		})
		c = newTestClient(t, bad.URL+"/oauth/token", func(cfg *Config) { cfg.MaxAttempts = 1 })
		if _, err := c.ListActions(ctx, bad.URL, testAccess, "app-uuid", ""); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			wantError(t, err, KindFailed)
		}
	}
	if _, err := c.ListActions(ctx, "http://x", testAccess, "", ""); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty app: %v", err)
	}
	if _, err := c.ListActions(ctx, "http://x", testAccess, "a", "DELETE"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("bad action type: %v", err)
	}
}

// recordingServer answers every request with status and body and keeps
// what it was sent.
type recorded struct {
	method, path, contentType, auth string
	body                            string
}

func recordingServer(t *testing.T, status int, header map[string]string, body string) (*fakeServer, func() []recorded) {
	t.Helper()
	var mu sync.Mutex
	var got []recorded
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(b)})
		mu.Unlock()
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
	return f, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), got...)
	}
}

func TestCreateActionRunSendsTheDocumentedBodyOnce(t *testing.T) {
	ctx := context.Background()
	f, sent := recordingServer(t, http.StatusOK, nil, `{"data":{"type":"run","id":"123e4567-e89b-12d3-a456-426614174000"}}`)
	c := newTestClient(t, f.URL+"/oauth/token")
	id, err := c.CreateActionRun(ctx, f.URL, testAccess, ActionRunRequest{
		Action: "core:Vn7xbE60", Authentication: "49509", Inputs: json.RawMessage(` {"email": "me@example.com"} `),
	})
	if err != nil || id != "123e4567-e89b-12d3-a456-426614174000" {
		t.Fatalf("id %q, %v", id, err)
	}
	got := sent()
	const wantBody = `{"data":{"action":"core:Vn7xbE60","authentication":"49509","inputs":{"email":"me@example.com"}}}`
	if len(got) != 1 || got[0].method != http.MethodPost || got[0].path != "/v2/action-runs" ||
		got[0].body != wantBody || got[0].contentType != "application/json" || got[0].auth != "Bearer "+testAccess {
		t.Fatalf("sent %+v, want POST /v2/action-runs %s", got, wantBody)
	}

	// No connection and no inputs: null and {}.
	if _, err := c.CreateActionRun(ctx, f.URL, testAccess, ActionRunRequest{Action: "a"}); err != nil {
		t.Fatal(err)
	}
	if b := sent()[1].body; b != `{"data":{"action":"a","authentication":null,"inputs":{}}}` {
		t.Errorf("body = %s", b)
	}

	for name, inputs := range map[string]string{"array": `[1]`, "string": `"x"`, "two objects": `{} {}`, "broken": `{"a":`} {
		if _, err := c.CreateActionRun(ctx, f.URL, testAccess, ActionRunRequest{Action: "a", Inputs: json.RawMessage(inputs)}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("inputs %s: %v, want ErrInvalidInput", name, err)
		}
	}
	if _, err := c.CreateActionRun(ctx, f.URL, testAccess, ActionRunRequest{}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("no action: %v", err)
	}
	if n := len(sent()); n != 2 {
		t.Errorf("%d requests sent, want 2 (invalid input is refused before sending)", n)
	}
}

func TestCreateActionRunIsNeverRetried(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		status int
		header map[string]string
		body   string
		kind   Kind
	}{
		{http.StatusInternalServerError, nil, `{"errors":[{"status":500,"code":"error","detail":"A server error occurred."}]}`, KindFailed},
		{http.StatusBadGateway, map[string]string{"Retry-After": "1"}, ``, KindFailed},
		{http.StatusTooManyRequests, map[string]string{"Retry-After": "17"}, `{"errors":[{"status":429,"code":"throttled"}]}`, KindRateLimited},
		{http.StatusBadRequest, nil, `{"errors":[{"status":400,"code":"invalid","detail":"authentication: expired"}]}`, KindRejected},
		{http.StatusOK, nil, `{"data":{"type":"run"}}`, KindFailed}, // no id
		{http.StatusOK, nil, `not json`, KindFailed},
	} {
		f, sent := recordingServer(t, tc.status, tc.header, tc.body)
		c := newTestClient(t, f.URL+"/oauth/token")
		_, err := c.CreateActionRun(ctx, f.URL, testAccess, ActionRunRequest{Action: "a", Authentication: "1"})
		e := wantError(t, err, tc.kind)
		if n := len(sent()); n != 1 {
			t.Errorf("HTTP %d %s: sent %d times, want exactly once", tc.status, tc.body, n)
		}
		if tc.status == http.StatusTooManyRequests && e.RetryAfter != 17*time.Second {
			t.Errorf("429: RetryAfter = %s", e.RetryAfter)
		}
		if tc.status == http.StatusBadRequest && (e.OAuthError != "invalid" || e.Description != "authentication: expired") {
			t.Errorf("400: %+v", e)
		}
	}
}

func TestActionInputs(t *testing.T) {
	ctx := context.Background()
	const fields = `[{"type":"input_field","id":"channel","is_required":true},{"type":"info_field","id":"help","description":"x"}]`
	f, sent := recordingServer(t, http.StatusOK, nil, `{"links":{"next":null,"prev":null},"meta":{"count":2,"limit":null,"offset":0},"data":`+fields+`}`)
	c := newTestClient(t, f.URL+"/oauth/token")
	got, err := c.ActionInputs(ctx, f.URL, testAccess, "uag:1f18/x", "928117", json.RawMessage(`{"spreadsheet":"my_sheet"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if string(b) != fields {
		t.Errorf("fields = %s", b)
	}
	s := sent()
	if len(s) != 1 || s[0].path != "/v2/actions/uag:1f18%2Fx/inputs" || s[0].body != `{"data":{"authentication":"928117","inputs":{"spreadsheet":"my_sheet"}}}` {
		t.Errorf("sent %+v", s)
	}

	bad, _ := recordingServer(t, http.StatusOK, nil, `{"meta":{}}`)
	c = newTestClient(t, bad.URL+"/oauth/token", func(cfg *Config) { cfg.MaxAttempts = 1 })
	_, err = c.ActionInputs(ctx, bad.URL, testAccess, "a", "", nil)
	wantError(t, err, KindFailed)
	if _, err := c.ActionInputs(ctx, bad.URL, testAccess, "", "", nil); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty action id: %v", err)
	}
}

func TestGetActionRun(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		body           string
		status         string
		done           bool
		results, errs  string
		wantErr        Kind
		serverStatus   int
		retriedRequest bool
	}{
		{body: `{"data":{"type":"run","status":"success","results":[{"id":123}],"errors":[]}}`, status: "success", done: true, results: `[{"id":123}]`, errs: `[]`},
		{body: `{"data":{"type":"run","status":"error","results":[],"errors":[{"code":"user","title":"Bad","detail":"no channel","delay":null,"meta":null}]}}`,
			status: "error", done: true, results: `[]`, errs: `[{"code":"user","title":"Bad","detail":"no channel","delay":null,"meta":null}]`},
		{body: `{"data":{"type":"run","status":"waiting"}}`, status: "waiting", results: `[]`, errs: `[]`},
		{body: `{"data":{"status":"running","results":null}}`, status: "running", results: `[]`, errs: `[]`},
		{body: `{"data":{"status":"success","results":{"id":1}}}`, status: "success", done: true, results: `{"id":1}`, errs: `[]`},
		{body: `{"data":{"type":"run"}}`, wantErr: KindFailed},
		{body: `{"errors":[{"status":404,"code":"not_found"}]}`, serverStatus: http.StatusNotFound, wantErr: KindRejected},
	} {
		status := cmp.Or(tc.serverStatus, http.StatusOK)
		f, sent := recordingServer(t, status, nil, tc.body)
		c := newTestClient(t, f.URL+"/oauth/token", func(cfg *Config) { cfg.MaxAttempts = 1 })
		run, err := c.GetActionRun(ctx, f.URL, testAccess, "run/1")
		if tc.wantErr != 0 {
			wantError(t, err, tc.wantErr)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if run.ID != "run/1" || run.Status != tc.status || run.Done() != tc.done || string(run.Results) != tc.results || string(run.Errors) != tc.errs {
			t.Errorf("%s: got %+v (results %s, errors %s)", tc.body, run, run.Results, run.Errors)
		}
		if p := sent()[0]; p.method != http.MethodGet || p.path != "/v2/action-runs/run%2F1" {
			t.Errorf("sent %+v", p)
		}
	}

	// A GET is idempotent: a 5xx is retried.
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, hit int) {
		if hit == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"status": "success"}})
	})
	c := newTestClient(t, f.URL+"/oauth/token")
	if run, err := c.GetActionRun(ctx, f.URL, testAccess, "r"); err != nil || !run.Done() {
		t.Fatalf("after a 503: %+v, %v", run, err)
	}
	f.waitHits(t, 2)
}
