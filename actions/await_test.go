package actions

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// fakeClock fires every timer at once, moving its time on by the pause.
type fakeClock struct {
	now    time.Time
	pauses []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.pauses = append(c.pauses, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch, func() bool { return false }
}

func start() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// polls answers each poll from answers in turn (repeating the last).
func polls(n *int, answers ...func() (zapierapi.ActionRun, error)) func(context.Context) (zapierapi.ActionRun, error) {
	return func(context.Context) (zapierapi.ActionRun, error) {
		a := answers[min(*n, len(answers)-1)]
		*n++
		return a()
	}
}

func status(s string) func() (zapierapi.ActionRun, error) {
	return func() (zapierapi.ActionRun, error) { return zapierapi.ActionRun{ID: "r", Status: s}, nil }
}

func fails(err error) func() (zapierapi.ActionRun, error) {
	return func() (zapierapi.ActionRun, error) { return zapierapi.ActionRun{}, err }
}

func samePauses(t *testing.T, got []time.Duration, want ...time.Duration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("pauses %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("pauses %v, want %v", got, want)
		}
	}
}

func TestAwaitBacksOffUntilDone(t *testing.T) {
	c := start()
	n := 0
	run, retry, err := Await(context.Background(), "r", c.now.Add(time.Minute),
		polls(&n, status("waiting"), status("waiting"), status("waiting"), status("waiting"), status("success")),
		Backoff{Interval: time.Second, MaxInterval: 5 * time.Second, Clock: c})
	if err != nil || retry != 0 || run.Status != "success" || n != 5 {
		t.Fatalf("Await = %+v %s %v after %d polls", run, retry, err, n)
	}
	samePauses(t, c.pauses, time.Second, 2*time.Second, 4*time.Second, 5*time.Second, 5*time.Second)
}

func TestAwaitStopsAtTheDeadline(t *testing.T) {
	c := start()
	n := 0
	run, retry, err := Await(context.Background(), "r", c.now.Add(4*time.Second), polls(&n, status("running")),
		Backoff{Interval: time.Second, MaxInterval: 5 * time.Second, Clock: c})
	if err != nil || retry != 0 || run.Status != "running" {
		t.Fatalf("Await = %+v %s %v", run, retry, err)
	}
	samePauses(t, c.pauses, time.Second, 2*time.Second, time.Second) // the last pause is what is left
	// A deadline already past: no poll, the run is "waiting".
	n = 0
	run, _, err = Await(context.Background(), "r", c.now, polls(&n, status("success")), Backoff{Interval: time.Second, MaxInterval: time.Second, Clock: c})
	if err != nil || n != 0 || run.ID != "r" || run.Status != "waiting" {
		t.Fatalf("past deadline: %+v %v after %d polls", run, err, n)
	}
}

func TestAwaitFollowsTheBudget(t *testing.T) {
	c := start()
	n := 0
	deferred := errors.New("no room")
	run, _, err := Await(context.Background(), "r", c.now.Add(time.Minute), polls(&n, fails(deferred), status("error")),
		Backoff{Interval: time.Second, MaxInterval: 5 * time.Second, Clock: c,
			Queued: func() time.Duration { return 1500 * time.Millisecond },
			Deferred: func(err error) (time.Duration, bool) {
				if errors.Is(err, deferred) {
					return 7 * time.Second, true
				}
				return 0, false
			}})
	if err != nil || run.Status != "error" {
		t.Fatalf("Await = %+v %v", run, err)
	}
	// Queued raises the first pause; a deferred poll pauses until the budget has room.
	samePauses(t, c.pauses, 1500*time.Millisecond, 7*time.Second)
}

func TestAwaitReportsAFailedPoll(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want time.Duration
	}{
		{&zapierapi.Error{Kind: zapierapi.KindRateLimited, StatusCode: 429, RetryAfter: 9 * time.Second}, 9 * time.Second},
		{&zapierapi.Error{Kind: zapierapi.KindUnavailable}, zapierapi.DefaultRateLimitCooldown},
		{&zapierapi.Error{Kind: zapierapi.KindFailed, StatusCode: 500}, 0},
		{errors.New("storage"), 0},
	} {
		c := start()
		n := 0
		run, retry, err := Await(context.Background(), "r", c.now.Add(time.Minute), polls(&n, status("running"), fails(tc.err)),
			Backoff{Interval: time.Second, MaxInterval: time.Second, Clock: c})
		if !errors.Is(err, tc.err) || retry != tc.want || run.Status != "running" {
			t.Errorf("%v: %+v %s %v", tc.err, run, retry, err)
		}
	}
}

func TestAwaitCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	run, _, err := Await(ctx, "r", time.Now().Add(time.Hour), polls(&n, status("success")), Backoff{Interval: time.Hour, MaxInterval: time.Hour})
	if !errors.Is(err, context.Canceled) || n != 0 || run.Status != "waiting" {
		t.Fatalf("Await = %+v %v after %d polls", run, err, n)
	}
}

func TestEarliest(t *testing.T) {
	a, b := time.Unix(1, 0), time.Unix(2, 0)
	if Earliest(a, b) != a || Earliest(b, a) != a || Earliest(a, a) != a {
		t.Error("Earliest")
	}
}
