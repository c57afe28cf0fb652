package actions

import (
	"testing"
	"time"
)

// The takeover outlasts the longest POST run: the 2-minute fixed takeover
// of earlier releases was shorter than wait (120 s) plus the budget's
// max_wait.
func TestPendingTakeoverOutlastsTheLongestRun(t *testing.T) {
	for _, c := range []struct {
		maxWait, timeout time.Duration
		attempts         int
		want             time.Duration
	}{
		{10 * time.Second, 10 * time.Second, 3, 120*time.Second + 10*time.Second + 6*3*10*time.Second + time.Minute},
		{0, 0, 0, MaxRunWait + TakeoverMargin},
		{time.Minute, 30 * time.Second, 1, 120*time.Second + time.Minute + 6*30*time.Second + time.Minute},
	} {
		got := PendingTakeover(c.maxWait, c.timeout, c.attempts)
		if got != c.want {
			t.Errorf("PendingTakeover(%s, %s, %d) = %s, want %s", c.maxWait, c.timeout, c.attempts, got, c.want)
		}
		if longest := MaxRunWait + c.maxWait; got <= longest {
			t.Errorf("takeover %s is not longer than wait + max_wait %s", got, longest)
		}
	}
}
