package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

var provisional = Response{
	Status: 202,
	Header: map[string]string{"Location": "runs/r1"},
	Body:   []byte(`{"run":{"id":"r1"}}`),
}

// A pending record whose request never committed is taken over past
// PendingTimeout (nothing was done); a committed one never is: the work
// may have been done, so a duplicate gets ErrOutcomeUnknown instead.
func TestCommittedIsNeverTakenOver(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()

	first := begin(t, s, "tenant-1", "k1", "body")
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testPending)
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body")); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Begin on a stale committed record: %v, want ErrOutcomeUnknown", err)
	}
	clock.Advance(testTTL)
	wantKind(t, begin(t, s, "tenant-1", "k1", "body"), Proceed) // expired at last
}

// A duplicate waiting on a committed record is told the outcome is unknown
// once the record passes PendingTimeout, never Proceed.
func TestWaiterOnCommittedGetsOutcomeUnknown(t *testing.T) {
	m := newMemStorage()
	clock := newFakeClock()
	s := newTestStore(t, m, clock)
	first := begin(t, s, "tenant-1", "k1", "body")
	if err := first.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(testPending - time.Nanosecond)
	onLoad, loads := signal(1000)
	m.OnLoad = onLoad
	got := beginAsync(s, "tenant-1", "k1", "body")
	receive(t, loads, 2)
	select {
	case r := <-got:
		t.Fatalf("Begin returned %v, %v before PendingTimeout", r.Kind, r.err)
	default:
	}
	clock.Advance(time.Nanosecond)
	if r := <-got; !errors.Is(r.err, ErrOutcomeUnknown) {
		t.Fatalf("waiter: %v %v, want ErrOutcomeUnknown", r.Kind, r.err)
	}
}

// A provisional answer is what duplicates get once its request is taken as
// crashed; before that they wait for the final one.
func TestProvisionalIsReplayedWhenTheRequestNeverFinishes(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	first := begin(t, s, "tenant-1", "k1", "body")
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Provisional(ctx, provisional); err != nil {
		t.Fatal(err)
	}
	waiting := beginAsync(s, "tenant-1", "k1", "body")
	clock.Advance(testPending)
	out := (<-waiting).out(t)
	wantKind(t, out, Replay)
	if out.Response.Status != 202 || out.Response.Header["Location"] != "runs/r1" {
		t.Fatalf("replayed %+v, want the provisional answer", out.Response)
	}
}

// Finish after Provisional stores the final answer.
func TestFinishAfterProvisional(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	first := begin(t, s, "tenant-1", "k1", "body")
	waiting := beginAsync(s, "tenant-1", "k1", "body")
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Provisional(ctx, provisional); err != nil {
		t.Fatal(err)
	}
	if err := first.Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	out := (<-waiting).out(t)
	wantKind(t, out, Replay)
	if out.Response.Status != created.Status {
		t.Fatalf("waiter got %d, want the final %d", out.Response.Status, created.Status)
	}
}

// Abandon cannot free a committed key; Release (the work is known not to
// have happened) can.
func TestAbandonAfterCommitKeepsTheKey(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	first := begin(t, s, "tenant-1", "k1", "body")
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Abandon(ctx); !errors.Is(err, ErrCommitted) {
		t.Fatalf("Abandon after Commit: %v, want ErrCommitted", err)
	}
	clock.Advance(testPending)
	if _, err := s.Begin(ctx, "tenant-1", "k1", []byte("body")); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("after Abandon: %v", err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wantKind(t, begin(t, s, "tenant-1", "k1", "body"), Proceed)
}

// A request whose pending record was taken over may not commit: the new
// owner does the work.
func TestCommitAfterTakeoverIsLost(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	stale := begin(t, s, "tenant-1", "k1", "body")
	clock.Advance(testPending)
	wantKind(t, begin(t, s, "tenant-1", "k1", "body"), Proceed)
	if err := stale.Commit(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("Commit after takeover: %v, want ErrLost", err)
	}
}

// Records in the new states are version 2, so an earlier release neither
// sweeps nor takes them over; pending and done stay version 1.
func TestCommittedRecordVersion(t *testing.T) {
	m := newMemStorage()
	s := newTestStore(t, m, newFakeClock())
	ctx := context.Background()
	out := begin(t, s, "tenant-1", "k1", "body")
	key := s.storageKey(recordID("tenant-1", "k1"))
	version := func() (v struct {
		Version int    `json:"version"`
		State   string `json:"state"`
	}) {
		b, _ := m.Get(key)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, step := range []struct {
		do      func() error
		version int
		state   string
	}{
		{func() error { return nil }, 1, "pending"},
		{func() error { return out.Commit(ctx) }, 2, "committed"},
		{func() error { return out.Provisional(ctx, provisional) }, 2, "provisional"},
		{func() error { return out.Finish(ctx, created) }, 1, "done"},
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		if v := version(); v.Version != step.version || v.State != step.state {
			t.Fatalf("record %+v, want version %d state %s", v, step.version, step.state)
		}
	}
}

// ForgetWhere deletes the records of the callers it matches, whatever
// their state, and only those; again, it finds nothing.
func TestForgetWhere(t *testing.T) {
	clock := newFakeClock()
	s := newTestStore(t, newMemStorage(), clock)
	ctx := context.Background()
	as := func(subject, key string) Outcome {
		out, err := s.BeginAs(ctx, Caller{Scope: subject, Subject: subject, Sealed: "sealed-" + subject}, key, []byte("b"))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := as("alice", "k1").Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	if err := as("alice", "k2").Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := as("bob", "k1").Finish(ctx, created); err != nil {
		t.Fatal(err)
	}
	begin(t, s, "legacy", "k1", "b") // no attribution: never matched

	isAlice := func(subject, sealed string) bool { return subject == "alice" && sealed == "sealed-alice" }
	if n, failed, err := s.ForgetWhere(ctx, isAlice); n != 2 || failed != 0 || err != nil {
		t.Fatalf("ForgetWhere: %d deleted, %d failed, %v", n, failed, err)
	}
	if n, _, err := s.ForgetWhere(ctx, isAlice); n != 0 || err != nil {
		t.Fatalf("again: %d, %v", n, err)
	}
	wantKind(t, as("alice", "k2"), Proceed) // forgotten, committed or not
	wantKind(t, as("bob", "k1"), Replay)
	if n, _, _ := s.ForgetWhere(ctx, func(string, string) bool { return true }); n != 2 {
		t.Fatalf("forgetting everyone attributed: %d, want 2 (alice's new k2 and bob's)", n)
	}
}
