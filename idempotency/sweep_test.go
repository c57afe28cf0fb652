package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestSweep(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	ctx := context.Background()

	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("empty storage: Sweep = %d, %v", n, err)
	}

	// Two records that will expire: one done, one left pending.
	old := begin(t, s, "t", "old-done", "body")
	if err := old.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	begin(t, s, "t", "old-pending", "body")
	clock.Advance(testTTL - time.Hour)
	// Two that will still be alive.
	young := begin(t, s, "t", "young-done", "body")
	if err := young.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	begin(t, s, "t", "young-pending", "body")
	clock.Advance(time.Hour)

	// Records Sweep must delete or leave alone whatever their age.
	corrupt := s.storageKey(recordID("t", "corrupt"))
	newer := s.storageKey(recordID("t", "newer"))
	foreign := []string{"zapier/idempotency/README", "zapier/idempotency/sub/" + recordID("t", "x"), "zapier/other/" + recordID("t", "y")}
	for k, v := range map[string]string{
		corrupt:    "{",
		newer:      `{"version":3,"created":"2000-01-01T00:00:00Z"}`,
		foreign[0]: "not ours",
		foreign[1]: "{",
		foreign[2]: "{",
	} {
		if err := m.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}

	n, err := s.Sweep(ctx)
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3 (two expired, one corrupt)", n, err)
	}
	want := append([]string{
		s.storageKey(recordID("t", "young-done")),
		s.storageKey(recordID("t", "young-pending")),
		newer,
	}, foreign...)
	for _, k := range want {
		if _, ok := m.Get(k); !ok {
			t.Errorf("Sweep deleted %s", k)
		}
	}
	if got := len(m.Keys()); got != len(want) {
		t.Errorf("%d keys left, want %d: %v", got, len(want), m.Keys())
	}
	if h := m.Held(); h != 0 {
		t.Errorf("%d locks left held", h)
	}

	// Expired keys are fresh again; live ones still replay.
	wantKind(t, begin(t, s, "t", "old-done", "other body"), Proceed)
	wantKind(t, begin(t, s, "t", "young-done", "body"), Replay)

	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Sweep(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Sweep: err = %v", err)
	}
}

// A record re-claimed between Sweep's unlocked look and its lock is kept.
func TestSweepRechecksUnderLock(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	ctx := context.Background()
	begin(t, s, "t", "k1", "body")
	clock.Advance(testTTL)

	id := recordID("t", "k1")
	m.OnLock = func(string) {
		m.OnLock = nil // only Sweep's lock; the Begin below takes another
		clock.Advance(time.Second)
		// Another process claims the expired key just before Sweep locks.
		fresh := &record{Version: recordVersion, Fingerprint: hashHex([]byte("body")), State: statusPending, Created: clock.Now(), Owner: "other"}
		if err := s.put(ctx, id, fresh); err != nil {
			t.Error(err)
		}
	}
	if n, err := s.Sweep(ctx); n != 0 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 0", n, err)
	}
	if _, ok := m.Get(s.storageKey(id)); !ok {
		t.Fatal("Sweep deleted a record claimed meanwhile")
	}
}

// The stored JSON carries the version, the hashed fingerprint, the state,
// the creation time and the response.
func TestRecordFormat(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	ctx := context.Background()
	start := clock.Now()
	out := begin(t, s, "tenant-1", "k1", "the body")
	key := s.storageKey(recordID("tenant-1", "k1"))
	if len(key) != len("zapier/idempotency/")+64 {
		t.Fatalf("storage key %q", key)
	}

	type stored struct {
		Version     int       `json:"version"`
		Fingerprint string    `json:"fingerprint"`
		State       string    `json:"state"`
		Created     time.Time `json:"created"`
		Finished    time.Time `json:"finished"`
		Response    *Response `json:"response"`
	}
	read := func() stored {
		t.Helper()
		b, ok := m.Get(key)
		if !ok {
			t.Fatalf("no record at %s (have %v)", key, m.Keys())
		}
		var r stored
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	sum := sha256.Sum256([]byte("the body"))
	fp := hex.EncodeToString(sum[:])

	got := read()
	want := stored{Version: 1, Fingerprint: fp, State: "pending", Created: start}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pending record %+v, want %+v", got, want)
	}

	clock.Advance(3 * time.Second)
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	got = read()
	want = stored{Version: 1, Fingerprint: fp, State: "done", Created: start, Finished: start.Add(3 * time.Second), Response: &created}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("done record %+v, want %+v", got, want)
	}
}
