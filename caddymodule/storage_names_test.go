package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/tokencache"
)

// Nothing under zapier/ in storage names or hashes an identity without a
// key: connection paths are a keyed hash of (tenant, user), run records hold
// a keyed hash too. Reading the storage does not tell who is connected.
func TestStorageRevealsNoIdentity(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storage := &certmagic.FileStorage{Path: dir}
	s := newConnectionStore(storage)
	const tenant, user = "acme-tenant", "alice-user"
	if _, err := s.Put(ctx, tenant, user, connect.Record{ConnectionID: "42", App: "SlackCLIAPI", AppUUID: "uuid-1"}); err != nil {
		t.Fatal(err)
	}
	runs := actions.NewRunStore(ctx, storage, newStateKeeper(ctx, storage, 0))
	key := tokencache.Key{Tenant: tenant, User: user}
	if err := runs.Put(ctx, "run-1", key, "uuid-1", "send"); err != nil {
		t.Fatal(err)
	}
	unkeyed := sha256.Sum256([]byte(tenant + "\x00" + user))
	forbidden := []string{tenant, user, connect.StorageKeyPart(tenant), connect.StorageKeyPart(user), hex.EncodeToString(unkeyed[:])}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var data []byte
		if !d.IsDir() {
			data, _ = os.ReadFile(p)
		}
		for _, f := range forbidden {
			if strings.Contains(p, f) || strings.Contains(string(data), f) {
				t.Errorf("%s (or its content) holds %q", p, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := runs.Owned(ctx, "run-1", key); err != nil || !ok {
		t.Fatalf("owned = %v, %v", ok, err)
	}
	if _, ok, _ := runs.Owned(ctx, "run-1", tokencache.Key{Tenant: tenant, User: "bob"}); ok {
		t.Fatal("another user owns the run")
	}
}

// Records written before keyed names (reversible base32 paths, unkeyed run
// owners) stay readable; a connection found under its old path moves to the
// new one.
func TestLegacyRecordsStayReadableAndMove(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storage := &certmagic.FileStorage{Path: dir}
	const tenant, user = "acme", "alice"
	legacyKey := func(app string) string {
		return path.Join(connect.ConnectionsPrefix, connect.StorageKeyPart(tenant), connect.StorageKeyPart(user), connect.StorageKeyPart(app))
	}
	for _, app := range []string{"uuid-1", "uuid-2"} {
		data, _ := json.Marshal(connect.Record{ConnectionID: "c-" + app, App: "App-" + app, AppUUID: app})
		if err := storage.Store(ctx, legacyKey(app), data); err != nil {
			t.Fatal(err)
		}
	}
	s := newConnectionStore(storage)
	rec, err := s.Get(ctx, tenant, user, "uuid-1")
	if err != nil || rec == nil || rec.ConnectionID != "c-uuid-1" {
		t.Fatalf("legacy get: %+v %v", rec, err)
	}
	if storage.Exists(ctx, legacyKey("uuid-1")) {
		t.Error("the record read under its old path was left there")
	}
	recs, err := s.List(ctx, tenant, user)
	if err != nil || len(recs) != 2 || recs[0].ConnectionID != "c-uuid-1" || recs[1].ConnectionID != "c-uuid-2" {
		t.Fatalf("list after a partial migration: %+v %v", recs, err)
	}
	if storage.Exists(ctx, legacyKey("uuid-2")) {
		t.Error("list left a record under its old path")
	}
	if _, err := os.Stat(filepath.Join(dir, connect.ConnectionsPrefix, connect.StorageKeyPart(tenant))); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dir, connect.ConnectionsPrefix, connect.StorageKeyPart(tenant), connect.StorageKeyPart(user)))
		if len(entries) != 0 {
			t.Errorf("old user directory still holds %d entries", len(entries))
		}
	}
	// A legacy record that is removed is gone from both layouts.
	data, _ := json.Marshal(connect.Record{ConnectionID: "c-3", App: "A3", AppUUID: "uuid-3"})
	_ = storage.Store(ctx, legacyKey("uuid-3"), data)
	if removed, err := s.Remove(ctx, tenant, user, "uuid-3", "c-3"); err != nil || len(removed) != 1 {
		t.Fatalf("remove legacy: %v %v", removed, err)
	}
	if rec, _ := s.Get(ctx, tenant, user, "uuid-3"); rec != nil {
		t.Fatal("removed legacy record still found")
	}

	// A run record with the old, unkeyed owner hash still answers its owner only.
	old, _ := json.Marshal(actions.RunRecord{Owner: actions.LegacyOwner(tokencache.Key{Tenant: tenant, User: user}), App: "uuid-1", Action: "a", Created: time.Now().UTC()})
	_ = storage.Store(ctx, actions.RunKey("old-run"), old)
	runs := actions.NewRunStore(ctx, storage, newStateKeeper(ctx, storage, 0))
	if _, ok, err := runs.Owned(ctx, "old-run", tokencache.Key{Tenant: tenant, User: user}); err != nil || !ok {
		t.Fatalf("legacy run owned = %v, %v", ok, err)
	}
	if _, ok, _ := runs.Owned(ctx, "old-run", tokencache.Key{Tenant: tenant, User: "bob"}); ok {
		t.Fatal("legacy run owned by another user")
	}
}
