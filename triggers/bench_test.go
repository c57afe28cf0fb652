package triggers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"
)

// BenchmarkDeliver1000Across50Users measures the delivery loop end to end
// against the fake Zapier: 50 users with one subscription each, 20 messages
// each, woken by notifications; each iteration waits until the partner
// has all 1,000. It reports the throughput and the latency from an event
// queued at Zapier to the partner receiving it:
//
//	go test -run '^$' -bench Deliver1000 -benchtime 5x ./triggers/
func BenchmarkDeliver1000Across50Users(b *testing.B) {
	const users, perUser = 50, 20
	e := newEnv(b, func(c *Config) { c.DrainInterval = time.Hour })

	var mu sync.Mutex
	queued := map[string]time.Time{}
	var latencies []time.Duration
	done := make(chan struct{}, users*perUser)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		mu.Lock()
		if t0, ok := queued[id]; ok {
			latencies = append(latencies, time.Since(t0))
			delete(queued, id)
			done <- struct{}{}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	e.mgr.cfg.Sender.URL = srv.URL

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.mgr.Start(ctx)
	inboxes := make([]string, users)
	for u := range users {
		id := Identity{Tenant: "org", User: fmt.Sprint("user-", u)}
		v, _, err := e.mgr.Ensure(ctx, id, "s", Spec{App: "SlackCLIAPI", Trigger: "new_message"})
		if err != nil {
			b.Fatal(err)
		}
		inboxes[u] = v.InboxID
	}

	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, inbox := range inboxes {
			for i := range perUser {
				mu.Lock()
				id := e.fz.InjectTriggerEvent(inbox, map[string]any{"n": i})
				queued[id] = time.Now()
				mu.Unlock()
			}
			e.mgr.Notify(ctx, inbox, "")
		}
		for range users * perUser {
			select {
			case <-done:
			case <-time.After(time.Minute):
				b.Fatal("deliveries stalled")
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(b.N*users*perUser)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
}
