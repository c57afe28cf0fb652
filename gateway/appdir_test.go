package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// catalogServer serves GET /v2/apps from apps, counting requests.
func catalogServer(t *testing.T, apps []zapierapi.App) (Catalog, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		ids := r.URL.Query().Get("ids")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"links":{"next":null},"data":[`))
		first := true
		for _, a := range apps {
			if ids != "" && ids != a.ID {
				continue
			}
			if !first {
				_, _ = w.Write([]byte(","))
			}
			first = false
			_, _ = w.Write([]byte(`{"type":"app","id":"` + a.ID + `","key":"` + a.Key + `","title":"` + a.Title + `"}`))
		}
		_, _ = w.Write([]byte(`]}`))
	}))
	t.Cleanup(srv.Close)
	client, err := zapierapi.New(zapierapi.Config{TokenURL: srv.URL + "/oauth/token", ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, ids ...string) ([]zapierapi.App, error) {
		return client.ListApps(ctx, srv.URL, "access-token", ids...)
	}, &n
}

func TestAppDirectoryResolvesKeysAndUUIDs(t *testing.T) {
	ctx := context.Background()
	catalog, requests := catalogServer(t, []zapierapi.App{
		{ID: slackUUID, Key: "SlackCLIAPI", Title: "Slack"},
		{ID: sheetUUID, Key: "GoogleSheetsV2API", Title: "Google Sheets"},
	})
	now := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	d := &AppDirectory{Now: func() time.Time { return now }}

	for _, tc := range []struct{ name, key, uuid string }{
		{"SlackCLIAPI", "SlackCLIAPI", slackUUID},
		{"SlackCLIAPI@1.0.0", "SlackCLIAPI", slackUUID},
		{"GoogleSheetsV2API", "GoogleSheetsV2API", sheetUUID},
		{"81F613AA-C98A-4383-A5FC-195E68647217", "SlackCLIAPI", slackUUID},
	} {
		key, uuid, err := d.Resolve(ctx, tc.name, catalog)
		if err != nil || key != tc.key || uuid != tc.uuid {
			t.Errorf("Resolve(%q) = %q %q %v", tc.name, key, uuid, err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d catalog requests, want one load", n)
	}
	// An unknown key: one more load (Retry has passed), then not found
	// without asking again until Retry passes once more.
	now = now.Add(DefaultCatalogRetry)
	for range 3 {
		if _, _, err := d.Resolve(ctx, "NoSuchAPI", catalog); !errors.Is(err, ErrAppNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("%d catalog requests after unknown keys, want 2", n)
	}
	// An unknown UUID is asked about once, and used as both names.
	other := "0d0d0d0d-0000-4000-8000-000000000000"
	for range 2 {
		if key, uuid, err := d.Resolve(ctx, other, catalog); err != nil || key != other || uuid != other {
			t.Fatalf("unknown UUID: %q %q %v", key, uuid, err)
		}
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d catalog requests after an unknown UUID, want 3", n)
	}
}

func TestAppDirectoryLoadsOnceForConcurrentMisses(t *testing.T) {
	catalog, requests := catalogServer(t, []zapierapi.App{{ID: slackUUID, Key: "SlackCLIAPI"}})
	d := &AppDirectory{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, uuid, err := d.Resolve(context.Background(), "SlackCLIAPI", catalog); err != nil || uuid != slackUUID {
				t.Errorf("Resolve = %q %v", uuid, err)
			}
		}()
	}
	wg.Wait()
	if n := requests.Load(); n != 1 {
		t.Errorf("%d catalog requests for 20 concurrent misses", n)
	}
}

func TestAppDirectoryReportsCatalogFailures(t *testing.T) {
	boom := errors.New("zapier down")
	d := &AppDirectory{}
	if _, _, err := d.Resolve(context.Background(), "SlackCLIAPI", func(context.Context, ...string) ([]zapierapi.App, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("failure: %v", err)
	}
}

const (
	slackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"
	sheetUUID = "5f3e2d1c-0b9a-4876-8543-21fedcba9876"
)

func TestAppMap(t *testing.T) {
	m, err := NewAppMap(map[string]string{"SlackCLIAPI": strings.ToUpper(slackUUID)})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]App{
		"SlackCLIAPI":              {Key: "SlackCLIAPI", UUID: slackUUID},
		slackUUID:                  {Key: "SlackCLIAPI", UUID: slackUUID}, // by its UUID, any case
		strings.ToUpper(slackUUID): {Key: "SlackCLIAPI", UUID: slackUUID},
	} {
		got, ok, aerr := m.Resolve(name)
		if aerr != nil || !ok || got != want {
			t.Errorf("resolve(%q) = %+v, %v; want %+v", name, got, aerr, want)
		}
	}
	// Anything else is for Zapier's catalog.
	for _, name := range []string{"GoogleSheetsV2API", "11111111-2222-3333-4444-555555555555"} {
		if _, ok, aerr := m.Resolve(name); ok || aerr != nil {
			t.Errorf("resolve(%q) = %v, %v; want it left to the catalog", name, ok, aerr)
		}
	}
	for name, want := range map[string]string{
		"":                              "app must be",
		"a/b":                           "app must be",
		"..":                            "app must be",
		"x y":                           "app must be",
		strings.Repeat("a", MaxAppID+1): "app must be",
	} {
		_, _, aerr := m.Resolve(name)
		if aerr == nil || aerr.Code != "bad_request" || !strings.Contains(aerr.Message, want) {
			t.Errorf("resolve(%q) = %v, want bad_request containing %q", name, aerr, want)
		}
	}
	for _, bad := range []map[string]string{
		{"SlackCLIAPI": "not-a-uuid"},
		{"Slack/API": slackUUID},
		{slackUUID: slackUUID},
		{"A": slackUUID, "B": strings.ToUpper(slackUUID)},
	} {
		if _, err := NewAppMap(bad); err == nil {
			t.Errorf("NewAppMap(%v) accepted", bad)
		}
	}
}
