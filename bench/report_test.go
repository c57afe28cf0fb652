package main

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

func TestParseWrk(t *testing.T) {
	out := "Running 10s test @ http://127.0.0.1:18010/zapier/api/v2/echo\n" +
		"BENCH_RESULT requests=1000 duration_us=2000000 errors_connect=0 errors_read=1 errors_write=0 errors_status=2 errors_timeout=0 p50_us=450 p90_us=900 p99_us=1800 max_us=5000 mean_us=512.5\n"
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 1000, DurationUS: 2_000_000, Errors: 3, P50US: 450, P90US: 900, P99US: 1800, MaxUS: 5000, MeanUS: 512.5}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk("wrk: connection refused\n"); err == nil {
		t.Error("parseWrk accepted output without a BENCH_RESULT line")
	}
}

func TestParseGoBenchTakesMedians(t *testing.T) {
	out := `goos: linux
BenchmarkGetHit/entries=1k/hot1k-2   	 1000000	       150.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkGetHit/entries=1k/hot1k-2   	 1000000	       130.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkGetHit/entries=1k/hot1k-2   	 1000000	       900.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkMemoryPerEntry/entries=10000 	       3	  56300000 ns/op	       216.0 B/entry	12223240 B/op	  241661 allocs/op
PASS
`
	got := parseGoBench(out)
	if len(got) != 2 {
		t.Fatalf("parsed %d benchmarks, want 2: %+v", len(got), got)
	}
	if got[0].Name != "GetHit/entries=1k/hot1k" || got[0].Metrics["ns/op"] != 150 {
		t.Errorf("first = %+v, want GetHit/entries=1k/hot1k at the median 150 ns/op", got[0])
	}
	if got[1].Name != "MemoryPerEntry/entries=10000" || got[1].Metrics["B/entry"] != 216 {
		t.Errorf("second = %+v, want MemoryPerEntry/entries=10000 with 216 B/entry", got[1])
	}
}

func sampleResults() *results {
	r := &results{Variants: []variantInfo{{"A", "bare"}, {"B", "gateway <&>"}, {"C", "nginx"}}, Identities: 10}
	for n := 1; n <= 3; n++ {
		r.Rounds = append(r.Rounds,
			round{Variant: "A", Round: n, RPS: 1000, P50US: 100, P99US: 300, CPUUS: 100},
			round{Variant: "B", Round: n, RPS: 990, P50US: 101, P99US: 310, CPUUS: 101 + float64(n)},
			round{Variant: "C", Round: n, RPS: 3000, P50US: 30, P99US: 90, CPUUS: 20})
	}
	r.summarize()
	return r
}

func TestSummaryAndGoals(t *testing.T) {
	r := sampleResults()
	if r.CPUDelta != 3 || r.PairedCPUDelta != 3 {
		t.Errorf("CPU delta %v, paired %v; want 3 (median of 2, 3, 4 µs)", r.CPUDelta, r.PairedCPUDelta)
	}
	if r.ThruBA != 0.99 {
		t.Errorf("throughput B/A = %v, want 0.99", r.ThruBA)
	}
	met := map[string]bool{}
	for _, g := range r.Goals {
		met[g.What] = g.Met
	}
	if !met["CPU zapier_auth adds per cache-hit request (B − A)"] || !met["throughput B/A"] || met["p99 latency B/A"] != (310.0/300 <= 1.10) {
		t.Errorf("goals = %+v", r.Goals)
	}
}

// The chart must be well-formed XML whatever the titles contain.
func TestSVGIsWellFormed(t *testing.T) {
	svg := sampleResults().svg()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart.svg is not well-formed: %v", err)
		}
	}
	if !strings.Contains(svg, "gateway &lt;&amp;&gt;") {
		t.Error("a variant title was not escaped")
	}
}

func TestSpreadOf(t *testing.T) {
	got := spreadOf([]float64{5, 1, 4, 2, 3})
	if got.Median != 3 || got.Q1 != 2 || got.Q3 != 4 || got.N != 5 {
		t.Errorf("spreadOf = %+v, want median 3, quartiles 2 and 4, 5 runs", got)
	}
}

func TestSideBySideDecidesTheCPUGoal(t *testing.T) {
	r := sampleResults()
	for n := 1; n <= 3; n++ {
		r.Pairs = append(r.Pairs, pairRound{Round: n, Base: "A", Other: "B", DeltaUS: 4 + float64(n)})
	}
	r.summarize()
	if got := r.SideBySide["A/B"].Median; got != 6 {
		t.Fatalf("side-by-side median = %v, want 6", got)
	}
	if r.Goals[0].Met {
		t.Errorf("CPU goal met with a 6 µs side-by-side difference: %+v", r.Goals[0])
	}
}

func TestMedianCI(t *testing.T) {
	for _, c := range []struct{ n, lo, hi int }{
		{5, 0, 4},   // too few runs: the extremes
		{6, 0, 5},   // 2 × 1/64 ≤ 5%
		{10, 1, 8},  // P(X ≤ 1) = 0.011, P(X ≤ 2) = 0.055
		{20, 5, 14}, // P(X ≤ 5) = 0.021, P(X ≤ 6) = 0.058
	} {
		if lo, hi := medianCI(c.n); lo != c.lo || hi != c.hi {
			t.Errorf("medianCI(%d) = %d, %d; want %d, %d", c.n, lo, hi, c.lo, c.hi)
		}
	}
}

func TestLiveFromGoal(t *testing.T) {
	for _, c := range []struct {
		next uint64
		gogc string
		want uint64
	}{{200, "", 100}, {200, "100", 100}, {150, "50", 100}, {200, "off", 0}} {
		if got := liveFromGoal(c.next, c.gogc); got != c.want {
			t.Errorf("liveFromGoal(%d, %q) = %d, want %d", c.next, c.gogc, got, c.want)
		}
	}
}

// With hit rounds, flatness is judged on the ratio within each round: a
// drift between consecutive runs of one size must not decide it.
func TestHitRoundsDecideFlatness(t *testing.T) {
	r := sampleResults()
	for _, size := range []string{"1k", "100k", "1M"} {
		ns := map[string]float64{"1k": 100, "100k": 110, "1M": 190}[size] // drifted: 90% spread
		r.GoBench = append(r.GoBench, goBenchmark{Name: "GetHit/entries=" + size + "/hot1k", Metrics: map[string]float64{"ns/op": ns}})
	}
	flatness := func() goal {
		r.summarize()
		for _, g := range r.Goals {
			if strings.HasPrefix(g.What, "cache hit flat") {
				return g
			}
		}
		t.Fatal("no flatness goal")
		return goal{}
	}
	if g := flatness(); g.Met {
		t.Errorf("without rounds the consecutive medians decide: %+v", g)
	}
	r.HitRounds = []map[string]float64{{"GetHit/entries=1k/hot1k": 100}} // 100k and 1M missing
	if g := flatness(); g.Met {
		t.Errorf("a round without 100k and 1M must not meet the goal: %+v", g)
	}
	r.HitRounds = nil
	for _, machine := range []float64{1, 1.5, 2} { // the machine slows between rounds
		r.HitRounds = append(r.HitRounds, map[string]float64{
			"GetHit/entries=1k/hot1k": 100 * machine, "GetHit/entries=100k/hot1k": 105 * machine, "GetHit/entries=1M/hot1k": 115 * machine,
		})
	}
	if g := flatness(); !g.Met || !strings.Contains(g.Measured, "1M/1k 1.150") {
		t.Errorf("paired rounds within 15%% should meet the goal: %+v", g)
	}
	r.HitRounds[1]["GetHit/entries=1M/hot1k"] = 400
	r.HitRounds[2]["GetHit/entries=1M/hot1k"] = 400
	if g := flatness(); g.Met {
		t.Errorf("1M at 2× 1k or more in most rounds should miss the goal: %+v", g)
	}
}
