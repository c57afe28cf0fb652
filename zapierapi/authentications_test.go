package zapierapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// authServer serves n authentications for app "app-uuid", honouring limit
// and offset like Zapier (links.next set while more remain).
func authServer(t *testing.T, n int, item func(i int) string) (*fakeServer, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var queries []string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		if r.Method != http.MethodGet || r.URL.Path != "/v2/authentications" || r.Header.Get("Authorization") != "Bearer "+testAccess {
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
		end := min(offset+limit, n)
		var items []string
		for i := offset; i < end; i++ {
			items = append(items, item(i))
		}
		next := "null"
		if end < n {
			next = fmt.Sprintf(`"http://elsewhere.example/v2/authentications?offset=%d"`, end)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"links":{"next":%s,"prev":null},"meta":{"count":%d,"limit":%d,"offset":%d},"data":[%s]}`,
			next, n, limit, offset, strings.Join(items, ","))
	})
	return f, &queries
}

func TestListAuthenticationsReadsEveryPage(t *testing.T) {
	const n = 250
	f, queries := authServer(t, n, func(i int) string {
		if i%2 == 0 { // numeric ids, as Connect's postMessage has them
			return fmt.Sprintf(`{"type":"authentication","id":%d,"app":"app-uuid","is_expired":%t,"title":"t%d"}`, 1000+i, i == 4, i)
		}
		return fmt.Sprintf(`{"type":"authentication","id":"example_%d","app":{"id":"app-uuid","title":"App"},"is_expired":false,"title":"t%d"}`, i, i)
	})
	c := newTestClient(t, f.URL+"/oauth/token")
	got, err := c.ListAuthentications(context.Background(), f.URL+"/", testAccess, "app-uuid")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("got %d authentications, want %d", len(got), n)
	}
	if got[0].ID != "1000" || got[1].ID != "example_1" || got[n-1].ID != fmt.Sprintf("example_%d", n-1) {
		t.Errorf("ids = %q, %q … %q", got[0].ID, got[1].ID, got[n-1].ID)
	}
	if got[1].App != "app-uuid" || got[0].App != "app-uuid" {
		t.Errorf("apps = %q, %q, want the UUID from a string and from an object", got[0].App, got[1].App)
	}
	if !got[4].IsExpired || got[2].IsExpired || got[3].Title != "t3" {
		t.Errorf("items 2-4 = %+v", got[2:5])
	}
	// Pages are asked for by offset on the configured API, never on the
	// host links.next names.
	want := []string{"app=app-uuid&limit=100&offset=0", "app=app-uuid&limit=100&offset=100", "app=app-uuid&limit=100&offset=200"}
	if strings.Join(*queries, " ") != strings.Join(want, " ") {
		t.Errorf("queries = %q, want %q", *queries, want)
	}
}

func TestListAuthenticationsEmptyAndCountOnly(t *testing.T) {
	f, _ := authServer(t, 0, nil)
	c := newTestClient(t, f.URL+"/oauth/token")
	got, err := c.ListAuthentications(context.Background(), f.URL, testAccess, "app-uuid")
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want an empty list", got, err)
	}

	// A server that gives meta.count but no links is paged by the count.
	f2 := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		w.Header().Set("Content-Type", "application/json")
		if offset == 0 {
			fmt.Fprint(w, `{"meta":{"count":2},"data":[{"id":"a","is_expired":false}]}`)
			return
		}
		fmt.Fprint(w, `{"meta":{"count":2},"data":[{"id":"b"}]}`)
	})
	c = newTestClient(t, f2.URL+"/oauth/token")
	got, err = c.ListAuthentications(context.Background(), f2.URL, testAccess, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[0].IsExpired || got[1].ID != "b" || !got[1].IsExpired || f2.hits.Load() != 2 {
		t.Errorf("got %+v after %d requests; want a (live), b (no is_expired: treated as expired)", got, f2.hits.Load())
	}
}

func TestListAuthenticationsErrors(t *testing.T) {
	ctx := context.Background()
	unauthorized := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"errors": []map[string]any{{
			"status": 401, "code": "not_authenticated", "detail": "Invalid token " + testAccess,
		}}})
	})
	c := newTestClient(t, unauthorized.URL+"/oauth/token")
	_, err := c.ListAuthentications(ctx, unauthorized.URL, testAccess, "app-uuid")
	e := wantError(t, err, KindRejected)
	if e.StatusCode != 401 || e.OAuthError != "not_authenticated" || e.Op != "list authentications" {
		t.Errorf("error = %+v", e)
	}

	// A server that always says there is more is cut off.
	endless := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"links":{"next":"x"},"data":[{"id":"same","is_expired":false}]}`)
	})
	c = newTestClient(t, endless.URL+"/oauth/token")
	_, err = c.ListAuthentications(ctx, endless.URL, testAccess, "app-uuid")
	wantError(t, err, KindFailed)
	endless.waitHits(t, maxAuthenticationsPages)

	for name, body := range map[string]string{
		"no id":       `{"data":[{"is_expired":false}]}`,
		"float id":    `{"data":[{"id":1.5}]}`,
		"garbage":     `{"data":`,
		"data object": `{"data":{"id":"a"}}`,
	} {
		bad := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, body)
		})
		c = newTestClient(t, bad.URL+"/oauth/token", func(cfg *Config) { cfg.MaxAttempts = 1 })
		if _, err := c.ListAuthentications(ctx, bad.URL, testAccess, "app-uuid"); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			wantError(t, err, KindFailed)
		}
	}

	if _, err := c.ListAuthentications(ctx, "http://x", testAccess, ""); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty app: %v, want ErrInvalidInput", err)
	}
	if _, err := c.ListAuthentications(ctx, "not a url", testAccess, "a"); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("bad api url: %v, want ErrInvalidInput", err)
	}
}

func TestIDString(t *testing.T) {
	for raw, want := range map[string]string{`"abc"`: "abc", `123`: "123", ` 42 `: "42", `"49509"`: "49509"} {
		if got, ok := idString([]byte(raw)); !ok || got != want {
			t.Errorf("idString(%s) = %q, %v; want %q", raw, got, ok, want)
		}
	}
	for _, raw := range []string{``, `""`, `1.0`, `1e3`, `-1`, `null`, `{}`, `[1]`, `true`} {
		if got, ok := idString([]byte(raw)); ok {
			t.Errorf("idString(%s) = %q, want no id", raw, got)
		}
	}
}

func TestDeleteAuthentication(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var seen []string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, n int) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testAccess {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v2/authentications/12345", "/v2/authentications/a/b":
			w.WriteHeader(http.StatusNoContent)
		case "/v2/authentications/gone":
			writeJSON(w, http.StatusNotFound, map[string]any{"errors": []map[string]any{{"status": 404, "code": "not_found", "detail": "Not found."}}})
		case "/v2/authentications/flaky":
			if n%2 == 1 { // every first try fails
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	c := newTestClient(t, f.URL+"/oauth/token")
	for id, wantGone := range map[string]bool{"12345": false, "a/b": false, "gone": true, "flaky": false} {
		gone, err := c.DeleteAuthentication(ctx, f.URL, testAccess, id)
		if err != nil || gone != wantGone {
			t.Errorf("DeleteAuthentication(%q) = %v, %v; want %v", id, gone, err, wantGone)
		}
	}
	mu.Lock()
	if !slices.Contains(seen, "DELETE /v2/authentications/a%2Fb") {
		t.Errorf("the id is not one path segment: %q", seen)
	}
	mu.Unlock()
	c = newTestClient(t, f.URL+"/oauth/token", func(cfg *Config) { cfg.MaxAttempts = 1 })
	if _, err := c.DeleteAuthentication(ctx, f.URL, testAccess, "broken"); err == nil {
		t.Error("a 500: no error")
	} else {
		wantError(t, err, KindFailed)
	}
	if _, err := c.DeleteAuthentication(ctx, f.URL, testAccess, ""); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("empty id: %v", err)
	}
}

func TestListApps(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		q := r.URL.Query()
		offset, _ := strconv.Atoi(q.Get("offset"))
		w.Header().Set("Content-Type", "application/json")
		if q.Get("ids") != "" {
			fmt.Fprintf(w, `{"links":{"next":null},"data":[{"id":%q,"key":"SlackCLIAPI","title":"Slack"}]}`, q.Get("ids"))
			return
		}
		var items []string
		for i := offset; i < min(offset+100, 150); i++ {
			items = append(items, fmt.Sprintf(`{"id":"uuid-%d","key":"App%dAPI","title":"App %d"}`, i, i, i))
		}
		if offset == 0 {
			items = append(items, `{"key":"NoID"}`, `{"id":"uuid-nokey","title":"No key"}`)
		}
		fmt.Fprintf(w, `{"meta":{"count":152},"links":{"next":null},"data":[%s]}`, strings.Join(items, ","))
	})
	c := newTestClient(t, f.URL+"/oauth/token")
	apps, err := c.ListApps(context.Background(), f.URL, testAccess)
	if err != nil || len(apps) != 149 || apps[0] != (App{ID: "uuid-0", Key: "App0API", Title: "App 0"}) || apps[100].Key != "" {
		t.Fatalf("ListApps = %d apps %v", len(apps), err)
	}
	one, err := c.ListApps(context.Background(), f.URL, testAccess, "81f613aa-c98a-4383-a5fc-195e68647217")
	if err != nil || len(one) != 1 || one[0].Key != "SlackCLIAPI" {
		t.Errorf("ListApps(ids) = %+v, %v", one, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queries) != 4 || !strings.Contains(queries[0], "limit=100") || !strings.Contains(queries[1], "offset=102") {
		t.Errorf("queries %q", queries)
	}
}
