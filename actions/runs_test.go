package actions

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/tokencache"
)

func newTestStore(t *testing.T) (*RunStore, string) {
	t.Helper()
	dir := t.TempDir()
	storage := &certmagic.FileStorage{Path: dir}
	return NewRunStore(context.Background(), storage, connect.NewStateKeeper(storage, 0)), dir
}

var alice = tokencache.Key{Tenant: "org", User: "alice"}

func TestRunOwnership(t *testing.T) {
	ctx := context.Background()
	s, dir := newTestStore(t)
	if err := s.Put(ctx, "run-1", alice, "uuid-1", "send"); err != nil {
		t.Fatal(err)
	}
	// Another gateway on the same storage (or after a restart) knows the owner.
	other := NewRunStore(ctx, s.Storage, connect.NewStateKeeper(s.Storage, 0))
	rec, ok, err := other.Owned(ctx, "run-1", alice)
	if err != nil || !ok || rec.App != "uuid-1" || rec.Action != "send" || rec.Result != nil {
		t.Fatalf("Owned = %+v %v %v", rec, ok, err)
	}
	for _, k := range []tokencache.Key{{Tenant: "org", User: "bob"}, {Tenant: "org2", User: "alice"}, {Tenant: "orgalice"}} {
		if _, ok, _ := other.Owned(ctx, "run-1", k); ok {
			t.Errorf("%+v owns alice's run", k)
		}
	}
	if rec, ok, err := s.Owned(ctx, "no-such-run", alice); rec != nil || ok || err != nil {
		t.Errorf("unknown run: %+v %v %v", rec, ok, err)
	}
	// Storage names no identity, keyed or not.
	forbidden := []string{"alice", LegacyOwner(alice)}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		for _, f := range forbidden {
			if strings.Contains(p, f) || strings.Contains(string(data), f) {
				t.Errorf("%s holds %q", p, f)
			}
		}
		return nil
	})
}

// The storage name and JSON of a record are those earlier versions wrote.
func TestRunRecordFormat(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	s.Now = func() time.Time { return created }
	if got := RunKey("run-1"); got != "zapier/action-runs/"+connect.StorageKeyPart("run-1") {
		t.Errorf("RunKey = %q", got)
	}
	if err := s.Put(ctx, "run-1", alice, "uuid-1", "send"); err != nil {
		t.Fatal(err)
	}
	owner, err := Owner(ctx, s.Keys, alice)
	if err != nil || !strings.HasPrefix(owner, "k:") || len(owner) != 2+64 {
		t.Fatalf("Owner = %q %v", owner, err)
	}
	data, err := s.Storage.Load(ctx, RunKey("run-1"))
	want := `{"owner":"` + owner + `","app":"uuid-1","action":"send","created":"2026-01-02T03:04:05.000000006Z"}`
	if err != nil || string(data) != want {
		t.Fatalf("stored %s %v\nwant   %s", data, err, want)
	}
	if got := LegacyOwner(alice); got != "60d0e2887688be960dbde0867aee3257ea008f43302d4a7ff819918e032ade9d" {
		t.Errorf("LegacyOwner = %q", got)
	}
}

// A record written before keyed names (unkeyed owner hash) still answers
// its owner only.
func TestLegacyRunRecord(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	old := `{"owner":"` + LegacyOwner(alice) + `","app":"uuid-1","action":"a","created":"` + time.Now().UTC().Format(time.RFC3339Nano) + `"}`
	if err := s.Storage.Store(ctx, RunKey("old-run"), []byte(old)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Owned(ctx, "old-run", alice); err != nil || !ok {
		t.Fatalf("legacy run owned = %v, %v", ok, err)
	}
	if _, ok, _ := s.Owned(ctx, "old-run", tokencache.Key{Tenant: "org", User: "bob"}); ok {
		t.Fatal("legacy run owned by another user")
	}
}

func TestRunRetentionAndSweep(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	if err := s.Put(ctx, "run-1", alice, "uuid-1", "send"); err != nil {
		t.Fatal(err)
	}
	later := NewRunStore(ctx, s.Storage, s.Keys)
	later.Now = func() time.Time { return time.Now().Add(RunRetention) }
	if _, ok, _ := later.Owned(ctx, "run-1", alice); ok {
		t.Error("a record older than the retention still counts")
	}
	later.Now = func() time.Time { return time.Now().Add(RunRetention + time.Minute) }
	later.Sweep(ctx)
	if s.Storage.Exists(ctx, RunKey("run-1")) {
		t.Error("sweep kept an expired record")
	}
}

func TestRunComplete(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	if err := s.Put(ctx, "run-1", alice, "uuid-1", "send"); err != nil {
		t.Fatal(err)
	}
	res := &RunResult{Status: "success", Results: json.RawMessage(`[{"ok":true}]`), Errors: json.RawMessage(`[]`), Received: time.Now().UTC()}
	if err := s.Complete(ctx, "run-1", res); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, "run-1", res); !errors.Is(err, ErrRunCompleted) {
		t.Errorf("replay: %v", err)
	}
	rec, err := s.Get(ctx, "run-1")
	if err != nil || rec == nil || rec.Result == nil {
		t.Fatalf("Get = %+v %v", rec, err)
	}
	if run := rec.Result.Run("run-1"); run.ID != "run-1" || run.Status != "success" || string(run.Results) != `[{"ok":true}]` || !run.Done() {
		t.Errorf("Run = %+v", run)
	}
	if err := s.Complete(ctx, "bad/id", res); !errors.Is(err, ErrRunUnknown) {
		t.Errorf("invalid id: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 3*CallbackStoragePoll)
	defer cancel()
	if err := s.Complete(short, "no-such-run", res); !errors.Is(err, ErrRunUnknown) {
		t.Errorf("unknown run: %v", err)
	}
}

func TestValidRunID(t *testing.T) {
	for id, want := range map[string]bool{
		"run-1": true, "arun_abc123": true, "0f8fad5b-d9cb-469f-a165-70867728950e": true,
		strings.Repeat("a", MaxRunIDLen): true, strings.Repeat("a", MaxRunIDLen+1): false,
		"": false, "a/b": false, "a b": false, "a\x00": false, "é": false, "a\x7f": false,
	} {
		if got := ValidRunID(id); got != want {
			t.Errorf("ValidRunID(%q) = %v", id, got)
		}
	}
}

func TestForgetRuns(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	bob := tokencache.Key{Tenant: "org", User: "bob"}
	_ = s.Put(ctx, "run-a", alice, "u", "x")
	_ = s.Put(ctx, "run-b", bob, "u", "x")
	old, _ := json.Marshal(RunRecord{Owner: LegacyOwner(alice), App: "u", Action: "x", Created: time.Now().UTC()})
	_ = s.Storage.Store(ctx, RunKey("run-old"), old)
	n, err := ForgetRuns(ctx, s.Storage, s.Keys, []connect.Identity{{Tenant: "org", User: "alice"}})
	if err != nil || n != 2 {
		t.Fatalf("ForgetRuns = %d %v", n, err)
	}
	if s.Storage.Exists(ctx, RunKey("run-a")) || s.Storage.Exists(ctx, RunKey("run-old")) || !s.Storage.Exists(ctx, RunKey("run-b")) {
		t.Error("forgot the wrong runs")
	}
	if n, err := ForgetRuns(ctx, s.Storage, s.Keys, nil); n != 0 || err != nil {
		t.Errorf("no identities: %d %v", n, err)
	}
}
