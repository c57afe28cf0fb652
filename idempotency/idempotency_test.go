package idempotency

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testTTL     = 24 * time.Hour
	testPending = 2 * time.Minute
)

func newTestStore(t *testing.T, st Storage, clock *fakeClock) *Store {
	t.Helper()
	s, err := New(Config{
		Storage:        st,
		Prefix:         "zapier/idempotency",
		TTL:            testTTL,
		PendingTimeout: testPending,
		PollInterval:   time.Millisecond,
		Now:            clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func begin(t *testing.T, s *Store, scope, key, body string) Outcome {
	t.Helper()
	out, err := s.Begin(context.Background(), scope, key, []byte(body))
	if err != nil {
		t.Fatalf("Begin(%q, %q): %v", scope, key, err)
	}
	return out
}

type result struct {
	Outcome
	err error
}

func (r result) out(t *testing.T) Outcome {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.Outcome
}

// beginAsync runs Begin in a goroutine; the result arrives on the channel.
func beginAsync(s *Store, scope, key, body string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		out, err := s.Begin(context.Background(), scope, key, []byte(body))
		ch <- result{out, err}
	}()
	return ch
}

func wantKind(t *testing.T, out Outcome, k Kind) {
	t.Helper()
	if out.Kind != k {
		t.Fatalf("Kind = %v, want %v", out.Kind, k)
	}
}

var created = Response{
	Status: 201,
	Header: map[string]string{"Location": "/runs/r1"},
	Body:   []byte(`{"id":"r1"}`),
}

func TestProceedThenReplay(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()

	out := begin(t, s, "tenant-1", "k1", "body")
	wantKind(t, out, Proceed)
	if out.Finish == nil || out.Abandon == nil {
		t.Fatal("Proceed without Finish/Abandon")
	}
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	// Abandon after Finish is a no-op, so callers may defer it.
	if err := out.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if err := out.Finish(ctx, created); err == nil {
		t.Error("second Finish succeeded")
	}

	for range 2 {
		again := begin(t, s, "tenant-1", "k1", "body")
		wantKind(t, again, Replay)
		if !reflect.DeepEqual(again.Response, created) {
			t.Fatalf("replayed %+v, want %+v", again.Response, created)
		}
		if again.Finish != nil || again.Abandon != nil {
			t.Error("Replay carries Finish/Abandon")
		}
		// The replay is a copy: mutating it does not change the record.
		again.Response.Body[0] = 'X'
		again.Response.Header["Location"] = "elsewhere"
	}
	if n := m.Held(); n != 0 {
		t.Errorf("%d locks left held", n)
	}
}

func TestDifferentBodyIsRefused(t *testing.T) {
	s := newTestStore(t, newMemStorage(), newFakeClock())
	ctx := context.Background()
	out := begin(t, s, "tenant-1", "k1", "body A")

	// Refused while the first request is in flight, without waiting for it.
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body B")); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("pending, other body: err = %v, want ErrKeyReused", err)
	}
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body B")); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("done, other body: err = %v, want ErrKeyReused", err)
	}
	wantKind(t, begin(t, s, "tenant-1", "k1", "body A"), Replay)
}

func TestInvalidKeys(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	bad := map[string]string{
		"empty":     "",
		"too long":  strings.Repeat("k", MaxKeyLen+1),
		"newline":   "abc\n",
		"tab":       "a\tb",
		"NUL":       "a\x00b",
		"DEL":       "a\x7fb",
		"non-ASCII": "clé",
	}
	for name, key := range bad {
		if ValidKey(key) {
			t.Errorf("%s: ValidKey(%q) = true", name, key)
		}
		if _, err := s.Begin(context.Background(), "t", key, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: err = %v, want ErrInvalidKey", name, err)
		}
	}
	if ks := m.Keys(); len(ks) != 0 {
		t.Errorf("invalid keys stored %v", ks)
	}

	good := []string{"k", strings.Repeat("k", MaxKeyLen), "8e03978e-40d5-43e8-bc93-6894a57f9324", `" ~!"`}
	for _, key := range good {
		if !ValidKey(key) {
			t.Errorf("ValidKey(%q) = false", key)
		}
		wantKind(t, begin(t, s, "t", key, "body"), Proceed)
	}
}

func TestScopeIsolation(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()

	a := begin(t, s, "tenant-a", "k1", "body")
	b := begin(t, s, "tenant-b", "k1", "other body")
	wantKind(t, a, Proceed)
	wantKind(t, b, Proceed)
	if err := a.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx, Response{Status: 202}); err != nil {
		t.Fatal(err)
	}
	if got := begin(t, s, "tenant-b", "k1", "other body").Response.Status; got != 202 {
		t.Fatalf("tenant-b replayed %d, want its own 202", got)
	}

	// The scope/key boundary cannot shift between the two.
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"", "abc"}, {"abc", ""}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		id := recordID(p[0], p[1])
		if q, dup := seen[id]; dup {
			t.Errorf("recordID%q == recordID%q", p, q)
		}
		seen[id] = p
	}

	// Neither the raw scope nor the raw key is stored.
	for _, k := range m.Keys() {
		v, _ := m.Get(k)
		for _, secret := range []string{"tenant-a", "tenant-b", "k1"} {
			if strings.Contains(k, secret) || strings.Contains(string(v), secret) {
				t.Errorf("%q stored in %s: %s", secret, k, v)
			}
		}
	}
}

func TestResponseTooLarge(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()

	out := begin(t, s, "t", "k1", "body")
	big := Response{Status: 200, Body: make([]byte, MaxBodySize+1)}
	if err := out.Finish(ctx, big); !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("err = %v, want ErrResponseTooLarge", err)
	}
	// The key is released, not left pending for PendingTimeout.
	retry := begin(t, s, "t", "k1", "body")
	wantKind(t, retry, Proceed)

	largest := Response{Status: 200, Body: make([]byte, MaxBodySize)}
	if err := retry.Finish(ctx, largest); err != nil {
		t.Fatalf("body of exactly MaxBodySize: %v", err)
	}
	if got := begin(t, s, "t", "k1", "body").Response; len(got.Body) != MaxBodySize {
		t.Fatalf("replayed %d bytes, want %d", len(got.Body), MaxBodySize)
	}
}

func TestFinishRefusesABadStatus(t *testing.T) {
	s := newTestStore(t, newMemStorage(), newFakeClock())
	ctx := context.Background()
	for _, status := range []int{0, 99, 600} {
		out := begin(t, s, "t", "k1", "body")
		wantKind(t, out, Proceed) // the previous round released the key
		if err := out.Finish(ctx, Response{Status: status}); err == nil {
			t.Fatalf("Finish with status %d succeeded", status)
		}
	}
}

// Finish stores the response even if the pending record vanished meanwhile
// (nobody else owns the key), so a retry replays instead of running again.
func TestFinishAfterRecordVanished(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()
	out := begin(t, s, "t", "k1", "body")
	if err := m.Delete(ctx, s.storageKey(recordID("t", "k1"))); err != nil {
		t.Fatal(err)
	}
	if err := out.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	wantKind(t, begin(t, s, "t", "k1", "body"), Replay)
}

func TestStorageErrorsReleaseTheLock(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	boom := errors.New("disk full")
	m.FailStore = boom
	if _, err := s.Begin(context.Background(), "t", "k1", []byte("body")); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if h := m.Held(); h != 0 {
		t.Errorf("%d locks left held", h)
	}
	m.FailStore = nil
	wantKind(t, begin(t, s, "t", "k1", "body"), Proceed)
}

func TestCorruptRecordIsAnError(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()
	key := s.storageKey(recordID("t", "k1"))
	for _, v := range []string{`not json`, `{"version":1,"state":"done"}`, `{"version":2}`} {
		if err := m.Store(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
		// Never Proceed over a record we cannot read: it may be a done one.
		if out, err := s.Begin(ctx, "t", "k1", []byte("body")); err == nil {
			t.Errorf("record %s: Begin = %v, want an error", v, out.Kind)
		}
	}
	if h := m.Held(); h != 0 {
		t.Errorf("%d locks left held", h)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without Storage succeeded")
	}
	if _, err := New(Config{Storage: newMemStorage(), TTL: -1}); err == nil {
		t.Error("negative TTL accepted")
	}
	if _, err := New(Config{Storage: newMemStorage(), Prefix: "/../"}); err == nil {
		t.Error("prefix naming the root accepted")
	}

	s, err := New(Config{Storage: newMemStorage()})
	if err != nil {
		t.Fatal(err)
	}
	if s.prefix != DefaultPrefix || s.ttl != DefaultTTL || s.pendingTimeout != DefaultPendingTimeout || s.poll != DefaultPollInterval || s.now == nil {
		t.Errorf("defaults not applied: %+v", s)
	}
	for in, want := range map[string]string{"/zapier/idempotency/": "zapier/idempotency", "a/../../b": "b"} {
		s, err := New(Config{Storage: newMemStorage(), Prefix: in})
		if err != nil || s.prefix != want {
			t.Errorf("Prefix %q: %q, %v; want %q", in, s.prefix, err, want)
		}
	}
}

func TestKindString(t *testing.T) {
	if Proceed.String() != "Proceed" || Replay.String() != "Replay" || Kind(0).String() != "Kind(0)" {
		t.Error(Proceed, Replay, Kind(0))
	}
}
