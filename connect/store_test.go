package connect

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// awkwardIDs are ids a storage key must survive.
var awkwardIDs = []string{
	"", ".", "..", "../..", "../../etc/passwd", "a/b", "/", "\\", "a\\..\\b", "con", "NUL",
	"Alice", "alice", "ALICE", // distinct even on case-insensitive file systems
	"ユーザー", "user\u202e", "tab\tand\nnewline", "\x00", "%2e%2e", "*", "?", ":", "~",
	strings.Repeat("x", 61), strings.Repeat("x", 62), strings.Repeat("x", 63), // around the hash threshold
	strings.Repeat("é", 5000), // 10 KB
	strings.Repeat("/..", 3400),
}

func TestConnectionStoreWithAwkwardIdentities(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewStore(&certmagic.FileStorage{Path: dir})
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	for i, tenant := range awkwardIDs {
		user := awkwardIDs[len(awkwardIDs)-1-i]
		if _, err := s.Put(ctx, tenant, user, Record{ConnectionID: "c" + tenant, App: "SlackCLIAPI", AppUUID: "uuid-1"}); err != nil {
			t.Fatalf("put(%.20q, %.20q): %v", tenant, user, err)
		}
	}
	for i, tenant := range awkwardIDs {
		user := awkwardIDs[len(awkwardIDs)-1-i]
		rec, err := s.Get(ctx, tenant, user, "uuid-1")
		if err != nil || rec == nil || rec.ConnectionID != "c"+tenant {
			t.Errorf("get(%.20q, %.20q) = %+v, %v", tenant, user, rec, err)
		}
		list, err := s.List(ctx, tenant, user)
		if err != nil || len(list) != 1 {
			t.Errorf("list(%.20q, %.20q) = %d records, %v", tenant, user, len(list), err)
		}
	}
	// Nothing was written outside the connections prefix (but the key that
	// names identities there).
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !info.IsDir() && !strings.HasPrefix(filepath.ToSlash(rel), ConnectionsPrefix+"/") && filepath.ToSlash(rel) != StateKeyStorageKey {
			t.Errorf("a file outside %s: %s", ConnectionsPrefix, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConnectionStoreUpsertListRemove(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := NewStore(storage)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	s.now = func() time.Time { return now }

	rec, err := s.Put(ctx, "org", "alice", Record{ConnectionID: "100001", App: "SlackCLIAPI", AppUUID: "uuid-slack", Title: "Slack"})
	if err != nil || !rec.Created.Equal(t0) || !rec.LastVerified.Equal(t0) {
		t.Fatalf("put = %+v, %v", rec, err)
	}
	// The same connection again keeps its creation time; the title follows
	// Zapier.
	now = t0.Add(time.Hour)
	rec, _ = s.Put(ctx, "org", "alice", Record{ConnectionID: "100001", App: "SlackCLIAPI", AppUUID: "uuid-slack", Title: "Slack 2"})
	if !rec.Created.Equal(t0) || !rec.LastVerified.Equal(now) || rec.Title != "Slack 2" {
		t.Errorf("same connection again: %+v", rec)
	}
	// touch keeps the old title when Zapier gave none.
	rec, _ = s.Touch(ctx, "org", "alice", rec, "")
	if rec.Title != "Slack 2" {
		t.Errorf("touch dropped the title: %+v", rec)
	}
	// Another account of the app is added, and becomes the default.
	now = t0.Add(2 * time.Hour)
	rec, _ = s.Put(ctx, "org", "alice", Record{ConnectionID: "100002", App: "SlackCLIAPI", AppUUID: "uuid-slack"})
	if !rec.Created.Equal(now) || rec.ConnectionID != "100002" {
		t.Errorf("second account: %+v", rec)
	}
	if rec, _ := s.Get(ctx, "org", "alice", "uuid-slack"); rec == nil || rec.ConnectionID != "100002" {
		t.Errorf("default account: %+v", rec)
	}
	if rec, _ := s.Get(ctx, "org", "alice", "uuid-slack", "100001"); rec == nil || rec.Title != "Slack 2" {
		t.Errorf("the first account by id: %+v", rec)
	}
	_, _ = s.Put(ctx, "org", "alice", Record{ConnectionID: "7", App: "GoogleSheetsV2API", AppUUID: "uuid-sheets"})
	_, _ = s.Put(ctx, "org", "bob", Record{ConnectionID: "8", App: "SlackCLIAPI", AppUUID: "uuid-slack"})

	// A write in progress (a temporary file) is not a record.
	prefix, err := s.userPrefix(ctx, "org", "alice")
	if err != nil {
		t.Fatal(err)
	}
	tmp := storage.Filename(prefix + "/123456789")
	if err := os.WriteFile(tmp, []byte("{partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "org", "alice")
	if err != nil || len(list) != 3 || list[0].App != "GoogleSheetsV2API" || list[1].ConnectionID != "100002" || list[2].ConnectionID != "100001" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if list, _ := s.List(ctx, "org", "carol"); list == nil || len(list) != 0 {
		t.Errorf("list for a user without records = %#v, want empty", list)
	}

	removed, err := s.Remove(ctx, "org", "alice", "uuid-slack", "100002")
	if len(removed) != 1 || err != nil {
		t.Fatalf("remove one account = %v, %v", removed, err)
	}
	if rec, _ := s.Get(ctx, "org", "alice", "uuid-slack"); rec == nil || rec.ConnectionID != "100001" {
		t.Errorf("default after removing the newest: %+v", rec)
	}
	if removed, _ := s.Remove(ctx, "org", "alice", "uuid-slack", ""); len(removed) != 1 {
		t.Errorf("remove every account = %v", removed)
	}
	if removed, _ := s.Remove(ctx, "org", "alice", "uuid-slack", ""); len(removed) != 0 {
		t.Error("removed twice")
	}
	if rec, _ := s.Get(ctx, "org", "bob", "uuid-slack"); rec == nil || rec.ConnectionID != "8" {
		t.Errorf("bob's record after alice's removal: %+v", rec)
	}
	if rec, _ := s.Get(ctx, "org", "alice", "uuid-sheets"); rec == nil {
		t.Error("alice's other app went too")
	}

	daveKey, err := s.connectionKey(ctx, "org", "dave", "uuid-slack")
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.Store(ctx, daveKey, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "org", "dave", "uuid-slack"); err == nil {
		t.Error("a corrupt record read without an error")
	}
}

// TestConnectionStoreReadsSingleAccountRecords: a record stored before
// several accounts were kept (one bare record per file) is read, listed and
// mapped to its owner, and gains a second account without losing itself.
func TestConnectionStoreReadsSingleAccountRecords(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := NewStore(storage)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	s.now = func() time.Time { return now }
	old := Record{ConnectionID: "100001", App: "SlackCLIAPI", AppUUID: "uuid-slack", Title: "Work", Created: t0, LastVerified: t0}
	if err := s.sealOwner(ctx, &old, "org", "alice"); err != nil {
		t.Fatal(err)
	}
	key, err := s.connectionKey(ctx, "org", "alice", "uuid-slack")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(old)
	if err := storage.Store(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(ctx, "org", "alice", "uuid-slack"); err != nil || rec == nil || rec.Title != "Work" {
		t.Fatalf("get of a single-account record = %+v, %v", rec, err)
	}
	if o, err := s.Owner(ctx, "100001"); err != nil || o == nil || o.User != "alice" {
		t.Fatalf("owner = %+v, %v", o, err)
	}
	now = t0.Add(time.Hour)
	if _, err := s.Put(ctx, "org", "alice", Record{ConnectionID: "100002", App: "SlackCLIAPI", AppUUID: "uuid-slack", Title: "Personal"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "org", "alice")
	if err != nil || len(list) != 2 || list[0].Title != "Personal" || list[1].Title != "Work" || !list[1].Created.Equal(t0) {
		t.Errorf("after adding an account: %+v, %v", list, err)
	}
	owned, err := s.OwnedBy(ctx, "org")
	if err != nil || len(owned) != 2 {
		t.Errorf("ownedBy = %+v, %v", owned, err)
	}
}

// A record stored under its legacy (unkeyed) path before owners were sealed
// is moved to its keyed path with its owner sealed, so a connection webhook
// naming it finds its owner.
func TestLegacyRecordsAreMigratedWithTheirOwnerSealed(t *testing.T) {
	ctx := context.Background()
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	s := NewStore(storage)
	legacy := Record{ConnectionID: "100009", App: "SlackCLIAPI", AppUUID: "uuid-slack", Title: "Work"}
	data, _ := json.Marshal(legacy)
	if err := storage.Store(ctx, legacyConnectionKey("org", "alice", "uuid-slack"), data); err != nil {
		t.Fatal(err)
	}
	if list, err := s.List(ctx, "org", "alice"); err != nil || len(list) != 1 || list[0].Owner == "" {
		t.Fatalf("migrated by List: %+v, %v", list, err)
	}
	if storage.Exists(ctx, legacyConnectionKey("org", "alice", "uuid-slack")) {
		t.Error("the legacy record stayed")
	}
	if o, err := s.Owner(ctx, "100009"); err != nil || o == nil || o.Tenant != "org" || o.User != "alice" {
		t.Fatalf("owner of the migrated record = %+v, %v", o, err)
	}
}
