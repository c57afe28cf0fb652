package sweep

import (
	"context"
	"testing"
	"time"
)

func TestMaybeSweepsOncePerIntervalAndNeverTwiceAtOnce(t *testing.T) {
	var s Sweeper
	started, release := make(chan struct{}, 4), make(chan struct{})
	sweep := func(context.Context) { started <- struct{}{}; <-release }
	now := time.Unix(1000, 0)
	ctx := context.Background()

	s.Maybe(ctx, now, time.Minute, sweep)
	<-started
	s.Maybe(ctx, now.Add(2*time.Minute), time.Minute, sweep) // due, but one is running
	s.Maybe(ctx, now.Add(time.Second), time.Minute, sweep)   // not due
	close(release)
	if n := len(started); n != 0 {
		t.Fatalf("%d more sweeps started while one ran or before it was due", n)
	}
	for s.sweeping.Load() { // the first one's goroutine is finishing
		time.Sleep(time.Millisecond)
	}
	s.Maybe(ctx, now.Add(3*time.Minute), time.Minute, sweep)
	<-started // due and none running: it runs
}
