package main

import (
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestJain(t *testing.T) {
	cases := []struct {
		xs   []float64
		want float64
	}{
		{[]float64{5, 5, 5, 5, 5}, 1},
		{[]float64{10, 0, 0, 0, 0}, 0.2}, // one tenant has everything: 1/n
		{[]float64{1, 2, 3}, 36.0 / (3 * 14)},
		{[]float64{3, 3, 3, 3, 0}, 0.8}, // one of five starved
		{nil, 0},
		{[]float64{0, 0}, 0},
	}
	for _, c := range cases {
		if got := jain(c.xs); !near(got, c.want) {
			t.Errorf("jain(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestIdealRunsPerMin(t *testing.T) {
	cases := []struct {
		perIP, partner int
		calls, want    float64
	}{
		{60, 150, 2, 30}, // per_ip binds: callbacks
		{60, 150, 7, 60.0 / 7},
		{200, 150, 2, 75}, // partner binds
		{60, 0, 3, 20},    // no partner limit
		{60, 150, 0, 0},
	}
	for _, c := range cases {
		if got := idealRunsPerMin(c.perIP, c.partner, c.calls); !near(got, c.want) {
			t.Errorf("idealRunsPerMin(%d, %d, %v) = %v, want %v", c.perIP, c.partner, c.calls, got, c.want)
		}
	}
}

func TestExpectedPolls(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		delay, interval, maxInterval, latency time.Duration
		want                                  int
	}{
		// Zapier's ten-second action with the gateway's 500ms…5s backoff:
		// polls at 0.5, 1.5, 3.5, 7.5, 12.5 s — the fifth sees it done.
		{10 * time.Second, 500 * ms, 5 * time.Second, 0, 5},
		// The same scaled by 10, with 50 ms latency per call.
		{1000 * ms, 50 * ms, 500 * ms, 50 * ms, 5},
		{100 * ms, 500 * ms, 5 * time.Second, 0, 1}, // done before the first poll
		{1000 * ms, 100 * ms, 100 * ms, 0, 10},      // constant pause
		{time.Second, 0, 0, 0, 0},
	}
	for _, c := range cases {
		if got := expectedPolls(c.delay, c.interval, c.maxInterval, c.latency); got != c.want {
			t.Errorf("expectedPolls(%v, %v, %v, %v) = %d, want %d", c.delay, c.interval, c.maxInterval, c.latency, got, c.want)
		}
	}
}

func TestHistQuantile(t *testing.T) {
	inf := math.Inf(1)
	les := []float64{0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, inf}
	// 90 waits of 0 s, 10 between 0.5 and 1 s.
	cum := []float64{90, 90, 90, 90, 90, 90, 100, 100}
	q, le, ok := histQuantile(0.99, les, cum)
	if !ok || !near(q, 0.5+0.5*9/10) || le != "1000 ms" {
		t.Errorf("p99 = %v %q %v, want 0.95 in the 1000 ms bucket", q, le, ok)
	}
	if q, _, _ := histQuantile(0.5, les, cum); q != 0 {
		t.Errorf("p50 = %v, want 0 (the le=0 bucket)", q)
	}
	if _, _, ok := histQuantile(0.99, les, make([]float64, len(les))); ok {
		t.Error("an empty histogram gave a quantile")
	}
	over := []float64{0, 0, 0, 0, 0, 0, 1, 5}
	if q, le, _ := histQuantile(0.99, les, over); q != 1 || le != "+Inf" {
		t.Errorf("rank in +Inf: %v %q, want the highest finite bound", q, le)
	}
	if got := histMaxBucket(les, cum); got != "1000 ms" {
		t.Errorf("max bucket %q", got)
	}
}

func TestParseBudgetMetrics(t *testing.T) {
	text := `# HELP caddy_zapier_budget_wait_seconds Time requests waited.
# TYPE caddy_zapier_budget_wait_seconds histogram
caddy_zapier_budget_wait_seconds_bucket{le="0"} 3
caddy_zapier_budget_wait_seconds_bucket{le="0.5"} 7
caddy_zapier_budget_wait_seconds_bucket{le="+Inf"} 8
caddy_zapier_budget_wait_seconds_sum 2.5
caddy_zapier_budget_wait_seconds_count 8
caddy_zapier_budget_shed_total{reason="queue_full"} 12
caddy_zapier_budget_shed_total{reason="deadline"} 0
`
	m, err := parseBudgetMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	before := budgetMetrics{buckets: map[float64]float64{0: 1, 0.5: 2, math.Inf(1): 2}}
	les, cum := m.waitDelta(before)
	if len(les) != 3 || les[0] != 0 || les[1] != 0.5 || !math.IsInf(les[2], 1) || cum[0] != 2 || cum[1] != 5 || cum[2] != 6 {
		t.Errorf("delta %v %v", les, cum)
	}
	if m.shed["queue_full"] != 12 || m.shed["deadline"] != 0 {
		t.Errorf("shed %v", m.shed)
	}
	if _, err := parseBudgetMetrics(strings.NewReader("caddy_other 1\n")); err == nil {
		t.Error("no histogram was accepted")
	}
}

func TestArrivalsFollowWeights(t *testing.T) {
	at, who := arrivals(16, 10*time.Second, []int{8, 4, 2, 1, 1}, false, 1)
	if len(at) != 159 { // every 1/16 s before 10 s
		t.Fatalf("%d arrivals", len(at))
	}
	n := make([]int, 5)
	for _, w := range who[:144] {
		n[w]++
	}
	if n[0] != 72 || n[1] != 36 || n[2] != 18 || n[3] != 9 || n[4] != 9 {
		t.Errorf("tenant counts %v, want 8:4:2:1:1", n)
	}
	pa, _ := arrivals(16, 100*time.Second, []int{1}, true, 7)
	if len(pa) < 1450 || len(pa) > 1750 {
		t.Errorf("poisson at 16/s over 100 s: %d arrivals", len(pa))
	}
}

func goalByName(l budgetLevel, name string) (budgetGoal, bool) {
	for _, g := range l.Goals {
		if g.Name == name {
			return g, true
		}
	}
	return budgetGoal{}, false
}

func TestBudgetGoals(t *testing.T) {
	m := &budgetMode{Callbacks: true, CallsPerRun: 2, IdealPerMin: 30}
	good := budgetLevel{Load: 5, OfferedPerMin: 150, CompletedPerMin: 28, Ratio: 28.0 / 30, CallsPerRun: 2, CompletedAll: 140,
		Jain: 0.99, WaitCount: 100, WaitP99MS: 900, Requests: 10, OK: 6, Accepted: 1, Shed: 3, RunsCreated: 7, RunsAnswered: 7}
	good.evaluate(m, time.Second, 5)
	for _, g := range good.Goals {
		if !g.Met {
			t.Errorf("good level missed %q: %s", g.Name, g.Measured)
		}
	}
	if _, ok := goalByName(good, "Jain's fairness over tenants"); !ok {
		t.Error("no fairness goal at the highest load")
	}

	// At 0.5× the goal is what was offered, not the ideal.
	half := budgetLevel{Load: 0.5, OfferedPerMin: 15, CompletedPerMin: 13, CallsPerRun: 2, CompletedAll: 60}
	half.evaluate(m, time.Second, 5)
	if g, _ := goalByName(half, "completed runs/min"); g.Met {
		t.Error("13 of 15 offered (0.87) met the 0.9 goal")
	}
	if _, ok := goalByName(half, "Jain's fairness over tenants"); ok {
		t.Error("fairness judged below the highest load")
	}

	bad := good
	bad.Throttled, bad.CallsPerRun, bad.Jain, bad.WaitP99MS = 1, 2.4, 0.8, 1500
	bad.ClientErrors, bad.RunsAnswered = 1, 6
	bad.evaluate(m, time.Second, 5)
	for _, name := range []string{"429s drawn from Zapier", "Zapier calls per completed run", "Jain's fairness over tenants",
		"p99 queue wait", "every request answered 200/202/503+Retry-After", "runs created at Zapier = runs answered"} {
		if g, ok := goalByName(bad, name); !ok || g.Met {
			t.Errorf("%q: %+v, want missed", name, g)
		}
	}
}

func TestBudgetReportsRender(t *testing.T) {
	m := budgetMode{Name: "callbacks", Callbacks: true, CallsPerRun: 2, IdealPerMin: 30}
	for _, load := range []float64{0.5, 1, 2, 5} {
		l := budgetLevel{Load: load, OfferedPerMin: 30 * load, CompletedPerMin: math.Min(30*load, 29), TenantCompleted: []int{1, 2}}
		l.evaluate(&m, time.Second, 5)
		m.Levels = append(m.Levels, l)
	}
	r := &budgetResults{Config: budgetConfig{Factor: 10, WindowScaledMS: 6000, PerIP: 60, Partner: 150}, Modes: []budgetMode{m}}
	md := r.markdown()
	for _, want := range []string{"| 5× |", "30.0 runs/min", "budget.svg", "callbacks (ideal 30.0"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	dec := xml.NewDecoder(strings.NewReader(r.svg()))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("svg is not well-formed: %v", err)
		}
	}
}

func TestPeakIn(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	if got := peakIn(at(0, 10, 20, 500, 510, 900), 100*time.Millisecond); got != 3 {
		t.Errorf("peak = %d, want 3", got)
	}
	if got := peakIn(at(0, 100, 200), 100*time.Millisecond); got != 1 {
		t.Errorf("peak = %d, want 1 (spans are half-open)", got)
	}
	if got := peakIn(nil, time.Second); got != 0 {
		t.Errorf("peak of nothing = %d", got)
	}
}

func TestKeepModesFromAnEarlierRun(t *testing.T) {
	dir := t.TempDir()
	cfg := budgetConfig{Factor: 10, PerIP: 60, Partner: 150, Weights: []int{8, 4, 2, 1, 1}}
	earlier := &budgetResults{Env: envInfo{Date: "earlier", Tree: "aaa"}, Config: cfg,
		Modes: []budgetMode{{Name: "callbacks", Callbacks: true}, {Name: "polling"}}}
	if err := earlier.write(dir); err != nil {
		t.Fatal(err)
	}
	path := dir + "/budget.json"

	now := &budgetResults{Env: envInfo{Date: "now", Tree: "bbb"}, Config: cfg, Modes: []budgetMode{{Name: "polling"}}}
	if err := now.keepModes(path); err != nil {
		t.Fatal(err)
	}
	if len(now.Modes) != 2 || now.Modes[0].Name != "callbacks" || now.Modes[1].Name != "polling" {
		t.Fatalf("modes %+v, want callbacks (kept) then polling (measured)", now.Modes)
	}
	if now.Modes[0].Env == nil || now.Modes[0].Env.Tree != "aaa" || now.Modes[1].Env != nil {
		t.Fatalf("kept mode not marked with the earlier run: %+v / %+v", now.Modes[0].Env, now.Modes[1].Env)
	}
	if md := now.markdown(); !strings.Contains(md, "Kept from an earlier run") || !strings.Contains(md, "tree aaa") {
		t.Fatalf("budget.md does not say which mode was kept:\n%s", md)
	}

	other := cfg
	other.Factor = 5
	diff := &budgetResults{Config: other, Modes: []budgetMode{{Name: "polling"}}}
	if err := diff.keepModes(path); err == nil {
		t.Fatal("kept modes measured with another setup")
	}
}
