package usage

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/integration/redisserver"
)

var names = gateway.NewNamespace(gateway.NamesKeyFunc(func(context.Context) ([]byte, error) {
	return []byte("0123456789abcdef0123456789abcdef"), nil
}))

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newMeter(t *testing.T, b Backend, c *clock, q Quotas, on func(ThresholdEvent)) *Meter {
	t.Helper()
	if mb, ok := b.(*Memory); ok {
		mb.Now = c.Now
	}
	m, err := New(Config{Backend: b, Names: names, RunTasks: DefaultRunTasks, MCPTasks: DefaultMCPTasks, Quotas: q, Now: c.Now, OnThreshold: on})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var alice = gateway.Identity{Tenant: "acme", User: "alice"}
var bob = gateway.Identity{Tenant: "acme", User: "bob"}

func export(t *testing.T, m *Meter, q Query) Report {
	t.Helper()
	rep, err := m.Export(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func run(m *Meter, id gateway.Identity, outcome string) error {
	ctx, end := m.StartRun(context.Background(), id)
	if err := m.ReserveRun(ctx); err != nil {
		end("failed")
		return err
	}
	end(outcome)
	return nil
}

// Runs and tool calls are counted in Zapier's tasks, per tenant and per
// user: success 1 (run) and 2 (tool call), failures none.
func testCounting(t *testing.T, b Backend) {
	c := &clock{t: time.Date(2026, 3, 31, 22, 30, 0, 0, time.UTC)}
	m := newMeter(t, b, c, Quotas{}, nil)
	ctx := context.Background()
	for _, o := range []string{"success", "success", "error", "failed", "pending"} {
		if err := run(m, alice, o); err != nil {
			t.Fatal(err)
		}
	}
	m.ObserveMCP(ctx, bob, 1, MCPSuccess, true)
	m.ObserveMCP(ctx, bob, 1, MCPFailed, true)
	m.ObserveMCP(ctx, bob, 1, MCPNotCalled, false)
	m.TriggerDelivered(ctx, alice)
	m.APICalls(ctx, "acme", 3)

	rep := export(t, m, Query{Tenant: "acme"})
	want := Counts{Tasks: 2 + 1 + 2, ActionRuns: Outcomes{Success: 2, Error: 1}, MCPCalls: Outcomes{Success: 1, Error: 1},
		TriggerEvents: 1, APICalls: 3}
	if rep.Counts != want {
		t.Fatalf("tenant: %+v, want %+v", rep.Counts, want)
	}
	if len(rep.Buckets) != 0 {
		t.Fatalf("no by: buckets %v", rep.Buckets)
	}
	// Each user's part, by keyed name: never the user id.
	aliceName, _ := names.Name(ctx, alice)
	bobName, _ := names.Name(ctx, bob)
	parts := map[string]int64{}
	for _, u := range rep.Users {
		parts[u.User] = u.Tasks
	}
	if len(rep.Users) != 2 || parts[aliceName] != 3 || parts[bobName] != 2 || !gateway.IsName(rep.Users[0].User) {
		t.Fatalf("users: %+v", rep.Users)
	}
	if a := export(t, m, Query{Tenant: "acme", User: "alice"}); a.Tasks != 3 || a.TriggerEvents != 1 || a.APICalls != 0 || a.User != "alice" || a.Users != nil {
		t.Fatalf("alice: %+v", a)
	}
	if b := export(t, m, Query{Tenant: "acme", User: "bob"}); b.Tasks != 2 || b.MCPCalls.Success != 1 {
		t.Fatalf("bob: %+v", b)
	}
	if z := export(t, m, Query{Tenant: "never-seen"}); !z.Counts.IsZero() || z.Buckets == nil {
		t.Fatalf("unknown tenant: %+v", z)
	}

	// Buckets by hour, day and month (UTC), crossing a month's end.
	c.Add(2 * time.Hour) // 2026-04-01 00:30
	if err := run(m, alice, "success"); err != nil {
		t.Fatal(err)
	}
	for by, n := range map[string]int{"hour": 2, "day": 2, "month": 2} {
		rep := export(t, m, Query{Tenant: "acme", By: by})
		if len(rep.Buckets) != n {
			t.Fatalf("by %s: %d buckets %+v", by, len(rep.Buckets), rep.Buckets)
		}
		if rep.Buckets[0].Tasks != 5 || rep.Buckets[1].Tasks != 1 {
			t.Fatalf("by %s: %+v", by, rep.Buckets)
		}
	}
	month := export(t, m, Query{Tenant: "acme", By: "month"})
	if !month.Buckets[1].Start.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) || !month.Buckets[1].End.Equal(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("month bucket: %+v", month.Buckets[1])
	}
	// since/until select hours.
	since := export(t, m, Query{Tenant: "acme", Since: "2026-04-01T00:10:00Z"})
	if since.Tasks != 1 || !since.Since.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("since: %+v", since)
	}
	until := export(t, m, Query{Tenant: "acme", Until: "2026-03-31T23:00:00Z"})
	if until.Tasks != 5 {
		t.Fatalf("until: %+v", until)
	}
	for _, q := range []Query{{}, {Tenant: "acme", By: "week"}, {Tenant: "acme", Since: "yesterday"}, {Tenant: "acme", Since: "2026-04-02T00:00:00Z", Until: "2026-04-01T00:00:00Z"}} {
		_, err := m.Export(ctx, q)
		var ge *gateway.Error
		if !errors.As(err, &ge) || ge.Status != http.StatusBadRequest {
			t.Errorf("%+v: %v, want 400", q, err)
		}
	}

	// Forgetting a user deletes the user's counters; the tenant's stay.
	rep0 := export(t, m, Query{Tenant: "acme"})
	if _, err := m.Forget(ctx, gateway.Scope{Tenant: "acme", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	if a := export(t, m, Query{Tenant: "acme", User: "alice"}); !a.Counts.IsZero() {
		t.Fatalf("alice after forget: %+v", a)
	}
	if b := export(t, m, Query{Tenant: "acme", User: "bob"}); b.Tasks != 2 {
		t.Fatalf("bob after alice's forget: %+v", b)
	}
	if after := export(t, m, Query{Tenant: "acme"}); after.Counts != rep0.Counts {
		t.Fatalf("tenant totals changed: %+v, was %+v", after.Counts, rep0.Counts)
	}
	if _, err := m.Forget(ctx, gateway.Scope{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	if b := export(t, m, Query{Tenant: "acme", User: "bob"}); !b.Counts.IsZero() {
		t.Fatalf("bob after the tenant's forget: %+v", b)
	}
}

func TestCountingMemory(t *testing.T) { testCounting(t, &Memory{}) }

func TestCountingRedis(t *testing.T) {
	srv := redisserver.Start(t, 0)
	testCounting(t, &Redis{Client: srv.Client(), Prefix: "t:"})
}

// Buckets past the retention are pruned and no longer exported.
func TestRetentionPrunes(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	mem := &Memory{Retention: 48 * time.Hour}
	m, err := New(Config{Backend: mem, Names: names, RunTasks: 1, Retention: 48 * time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	mem.Now = c.Now
	_ = run(m, alice, "success")
	c.Add(47 * time.Hour)
	_ = run(m, alice, "success")
	if rep := export(t, m, Query{Tenant: "acme"}); rep.Tasks != 2 {
		t.Fatalf("within retention: %+v", rep.Counts)
	}
	c.Add(2 * time.Hour)
	_ = run(m, alice, "success")
	if rep := export(t, m, Query{Tenant: "acme", Since: "2025-12-01T00:00:00Z"}); rep.Tasks != 2 {
		t.Fatalf("after the first hour left the retention: %+v", rep.Counts)
	}
	mem.mu.Lock()
	n := len(mem.tenants)
	var hours int
	for _, h := range mem.tenants {
		hours += len(h)
	}
	mem.mu.Unlock()
	if n != 1 || hours != 2 {
		t.Fatalf("memory holds %d tenants, %d hours; want 1, 2", n, hours)
	}
}

// A quota refuses the run that would exceed it, with Retry-After until
// the rolling window frees room; a failed run gives its task back.
func testQuota(t *testing.T, b Backend) {
	c := &clock{t: time.Date(2026, 5, 1, 10, 15, 0, 0, time.UTC)}
	var mu sync.Mutex
	var events []ThresholdEvent
	m := newMeter(t, b, c, Quotas{Default: Limit{Tasks: 5, Period: 3 * time.Hour}, Tenants: map[string]Limit{"big": {Tasks: 100, Period: time.Hour}}},
		func(e ThresholdEvent) { mu.Lock(); events = append(events, e); mu.Unlock() })
	for range 3 {
		if err := run(m, alice, "success"); err != nil {
			t.Fatal(err)
		}
	}
	// Failed runs give their task back: the quota is not spent by them.
	for range 5 {
		if err := run(m, alice, "failed"); err != nil {
			t.Fatal(err)
		}
		if err := run(m, alice, "error"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if len(events) != 0 {
		t.Fatalf("failed runs that reached 80 %% while reserved announced it: %v", events)
	}
	mu.Unlock()
	c.Add(time.Hour) // 11:15
	if err := run(m, bob, "success"); err != nil {
		t.Fatal(err) // 4 of 5: 80 %
	}
	// An MCP call reserves 2: 4+2 > 5, refused; a run fits.
	err := m.ReserveMCP(WithTickets(context.Background()), bob)
	var ge *gateway.Error
	if !errors.As(err, &ge) || ge.Code != "quota_exceeded" || ge.Status != http.StatusTooManyRequests {
		t.Fatalf("MCP past the quota: %v", err)
	}
	if err := run(m, bob, "success"); err != nil {
		t.Fatal(err) // 5 of 5: 100 %
	}
	err = run(m, alice, "success")
	if !errors.As(err, &ge) || ge.Code != "quota_exceeded" {
		t.Fatalf("run past the quota: %v", err)
	}
	// The 10:00 hour (3 tasks) leaves the 3h window at 13:00: 1h45m from
	// 11:15 (the message says so; Retry-After is capped like every other).
	if ge.RetryAfter != min(105*time.Minute, gateway.MaxRetryAfter) || !strings.Contains(ge.Message, "6300s") {
		t.Fatalf("Retry-After %v (%s), want 1h45m", ge.RetryAfter, ge.Message)
	}
	// Another tenant has its own quota.
	if err := run(m, gateway.Identity{Tenant: "big", User: "u"}, "success"); err != nil {
		t.Fatal(err)
	}
	c.Add(105 * time.Minute) // 13:00
	if err := run(m, alice, "success"); err != nil {
		t.Fatalf("after the window moved: %v", err)
	}
	if rep := export(t, m, Query{Tenant: "acme"}); rep.Tasks != 6 || rep.ActionRuns.Success != 6 || rep.ActionRuns.Error != 5 {
		t.Fatalf("counts: %+v", rep.Counts)
	}
	mu.Lock()
	defer mu.Unlock()
	var got []int
	for _, e := range events {
		if e.Tenant != "acme" || e.Quota.Tasks != 5 || !strings.HasPrefix(e.ID, "evt_usage_") {
			t.Errorf("event %+v", e)
		}
		got = append(got, e.Percent)
	}
	// 80 % once, 100 % once (reached, then refused: still once).
	if len(got) != 2 || got[0] != 80 || got[1] != 100 {
		t.Fatalf("threshold events %v, want [80 100]", got)
	}
}

func TestQuotaMemory(t *testing.T) { testQuota(t, &Memory{}) }

func TestQuotaRedis(t *testing.T) {
	srv := redisserver.Start(t, 0)
	testQuota(t, &Redis{Client: srv.Client(), Prefix: "q:"})
}

// Two meters sharing one Redis (two sidecars) never reserve past the
// quota together, and send each threshold event once.
func TestQuotaSharedAcrossMeters(t *testing.T) {
	srv := redisserver.Start(t, 0)
	c := &clock{t: time.Now()}
	var mu sync.Mutex
	events := map[int]int{}
	on := func(e ThresholdEvent) { mu.Lock(); events[e.Percent]++; mu.Unlock() }
	q := Quotas{Default: Limit{Tasks: 20, Period: 24 * time.Hour}}
	meters := []*Meter{newMeter(t, &Redis{Client: srv.Client(), Prefix: "s:"}, c, q, on), newMeter(t, &Redis{Client: srv.Client(), Prefix: "s:"}, c, q, on)}
	var wg sync.WaitGroup
	var okMu sync.Mutex
	ok := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if run(meters[i%2], alice, "success") == nil {
					okMu.Lock()
					ok++
					okMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ok != 20 {
		t.Fatalf("%d runs went, want exactly 20", ok)
	}
	if rep := export(t, meters[0], Query{Tenant: "acme"}); rep.Tasks != 20 {
		t.Fatalf("tasks %d", rep.Tasks)
	}
	if events[80] != 1 || events[100] != 1 {
		t.Fatalf("events %v, want one each", events)
	}
}

// MCP reservations travel with the request's tickets, or (no tickets) wait
// for the identity's next observed call; a failed call gives them back.
func TestMCPReservations(t *testing.T) {
	c := &clock{t: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	m := newMeter(t, &Memory{}, c, Quotas{Default: Limit{Tasks: 6, Period: time.Hour}}, nil)
	ctx := WithTickets(context.Background())
	for range 2 { // a batch of two tool calls
		if err := m.ReserveMCP(ctx, bob); err != nil {
			t.Fatal(err)
		}
	}
	m.ObserveMCP(ctx, bob, 2, MCPFailed, true)
	if rep := export(t, m, Query{Tenant: "acme"}); rep.Tasks != 0 || rep.MCPCalls.Error != 2 {
		t.Fatalf("after a failed batch: %+v", rep.Counts)
	}
	bg := context.Background()
	for range 3 {
		if err := m.ReserveMCP(bg, bob); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.ReserveMCP(bg, bob); err == nil {
		t.Fatal("a fourth call fit a quota of 6 tasks")
	}
	m.ObserveMCP(bg, bob, 1, MCPNotCalled, false) // the refused one: nothing to give back
	m.ObserveMCP(bg, bob, 1, MCPSuccess, true)
	m.ObserveMCP(bg, bob, 1, MCPSuccess, true)
	m.ObserveMCP(bg, bob, 1, MCPFailed, true)
	if rep := export(t, m, Query{Tenant: "acme"}); rep.Tasks != 4 || rep.MCPCalls.Success != 2 || rep.MCPCalls.Error != 3 {
		t.Fatalf("counts: %+v", rep.Counts)
	}
}

func TestParseLimit(t *testing.T) {
	l, err := ParseLimit("1000/720h", nil)
	if err != nil || l.Tasks != 1000 || l.Period != 720*time.Hour || l.String() != "1000/720h" {
		t.Fatalf("%+v %v %s", l, err, l)
	}
	for _, bad := range []string{"10/30m", "10/90m", "x/1h", "10", "0/1h"} {
		if _, err := ParseLimit(bad, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := New(Config{Backend: &Memory{}, Names: names, Retention: 24 * time.Hour, Quotas: Quotas{Default: Limit{Tasks: 1, Period: 48 * time.Hour}}}); err == nil {
		t.Error("a quota longer than the retention was accepted")
	}
}

func TestWriteCSV(t *testing.T) {
	c := &clock{t: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	m := newMeter(t, &Memory{}, c, Quotas{}, nil)
	_ = run(m, alice, "success")
	c.Add(25 * time.Hour)
	_ = run(m, alice, "success")
	var buf bytes.Buffer
	if err := WriteCSV(&buf, export(t, m, Query{Tenant: "acme", By: "day"})); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") || rows[1][0] != "acme" || rows[1][2] != "2026-05-01T00:00:00Z" || rows[2][4] != "1" {
		t.Fatalf("%v", rows)
	}
	buf.Reset()
	_ = WriteCSV(&buf, export(t, m, Query{Tenant: "acme"}))
	rows, _ = csv.NewReader(&buf).ReadAll()
	if len(rows) != 2 || rows[1][4] != "2" {
		t.Fatalf("total: %v", rows)
	}
}
