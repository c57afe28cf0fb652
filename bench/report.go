package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// envInfo is what the numbers were measured on, printed beside them.
type envInfo struct {
	Date      string `json:"date"`
	Machine   string `json:"machine"`
	OS        string `json:"os"`
	Caddy     string `json:"caddy"`
	Go        string `json:"go"`
	Wrk       string `json:"wrk"`
	Nginx     string `json:"nginx"`
	Tree      string `json:"tree"`
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
	// GoGC is the GOGC and GOMEMLIMIT the servers inherited, when set.
	GoGC string `json:"go_gc,omitempty"`
}

func collectEnv(b *bench) envInfo {
	cpuModel := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(data), "MemTotal: %f kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", kb/(1<<20))
		}
	}
	osName := runtime.GOOS
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	kernel := firstLine(command("uname", "-r"))
	tree := firstLine(commandIn(b.root, "git", "rev-parse", "--short", "HEAD"))
	if tree != "" && firstLine(commandIn(b.root, "git", "status", "--porcelain", "--untracked-files=no")) != "" {
		tree += " + uncommitted changes"
	}
	return envInfo{
		Date:      time.Now().UTC().Format("2006-01-02 15:04 MST"),
		Machine:   fmt.Sprintf("%s, %d CPUs%s", cpuModel, cpuCount(), mem),
		OS:        strings.TrimSpace(osName + ", Linux " + kernel),
		Caddy:     strings.Fields(firstLine(command(b.caddy, "version")) + " ?")[0],
		Go:        strings.TrimPrefix(firstLine(commandIn(b.root, "go", "env", "GOVERSION")), "go"),
		Wrk:       strings.TrimPrefix(strings.Fields(firstLine(command(b.wrk, "-v")) + " ? ?")[1], "v"),
		Nginx:     strings.TrimPrefix(firstLine(command(b.nginx, "-v")), "nginx version: nginx/"),
		Tree:      tree,
		LoadStart: loadAvg(),
		GoGC:      goGCEnv(),
	}
}

// cpuCount counts the machine's CPUs from /proc/cpuinfo: runtime.NumCPU
// sees only the CPUs this process is pinned to.
// goGCEnv is the collector settings in the environment (servers inherit
// them), e.g. "GOGC=off GOMEMLIMIT=64MiB"; empty when neither is set.
func goGCEnv() string {
	var set []string
	for _, name := range []string{"GOGC", "GOMEMLIMIT"} {
		if v, ok := os.LookupEnv(name); ok {
			set = append(set, name+"="+v)
		}
	}
	return strings.Join(set, " ")
}

func cpuCount() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, _, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "processor" {
			n++
		}
	}
	return max(n, 1)
}

// command runs a version query; some tools exit non-zero after printing it
// (wrk -v), so the output counts either way.
func command(name string, args ...string) string { return commandIn("", name, args...) }

func commandIn(dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	return string(out)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

type variantInfo struct {
	Name  string `json:"name"`
	Title string `json:"title"`
}

// summary is the medians of one variant's rounds.
type summary struct {
	RPS, P50US, P99US, CPUUS, CPUUtil                 float64
	AllocsPerReq, BytesPerReq, GCsPer10k, HeapLiveMiB float64
}

type goal struct {
	What     string `json:"what"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// referenceTarget marks a row that gives context and is not judged.
const referenceTarget = "—"

type results struct {
	Env              envInfo       `json:"env"`
	Identities       int           `json:"identities"`
	Connections      int           `json:"connections"`
	Threads          int           `json:"threads"`
	Duration         string        `json:"duration"`
	Warmup           string        `json:"warmup"`
	ServerCPUs       string        `json:"server_cpus"`
	ClientCPUs       string        `json:"client_cpus"`
	Variants         []variantInfo `json:"variants"`
	Rounds           []round       `json:"rounds"`
	MeasureExchanges int           `json:"exchanges_while_measuring"`
	Pairs            []pairRound   `json:"side_by_side"`
	Cold             []coldResult  `json:"cold"`
	GoBench          []goBenchmark `json:"go_benchmarks"`
	// HitRounds holds ns/op of the hot-key hit benchmarks at every size,
	// one map per round (see runHitRounds).
	HitRounds []map[string]float64 `json:"hit_rounds,omitempty"`

	Summary  map[string]summary `json:"summary"`
	ThruBA   float64            `json:"throughput_b_over_a"`
	P99BA    float64            `json:"p99_b_over_a"`
	CPUDelta float64            `json:"cpu_us_b_minus_a"`
	// Paired: the median over rounds of B's value against A's in the same
	// round, which cancels slow drifts in machine load.
	PairedThruBA   float64 `json:"paired_throughput_b_over_a"`
	PairedP50BA    float64 `json:"paired_p50_b_over_a"`
	PairedP99BA    float64 `json:"paired_p99_b_over_a"`
	PairedCPUDelta float64 `json:"paired_cpu_us_b_minus_a"`
	// SideBySide is the median CPU difference per pair of variants run at
	// the same time ("A/B": B − A), with the quartiles of the runs.
	SideBySide map[string]spread `json:"side_by_side_delta_us"`
	// The same runs' throughput ratios (B over A for "A/B"): the two
	// servers share one CPU, so this is their cost ratio with the drift
	// cancelled. Their latencies say more about the scheduler than about
	// either server, so they are not compared.
	SideBySideThru map[string]spread `json:"side_by_side_throughput_ratio"`
	Goals          []goal            `json:"goals"`
}

func (r *results) summarize() {
	r.Summary = map[string]summary{}
	for _, v := range r.Variants {
		var rps, p50, p99, cpu, util, allocs, bytes, gcs, heap []float64
		for _, x := range r.Rounds {
			if x.Variant == v.Name {
				rps, p50, p99 = append(rps, x.RPS), append(p50, x.P50US), append(p99, x.P99US)
				cpu, util = append(cpu, x.CPUUS), append(util, x.CPUUtil)
				allocs, bytes, heap = append(allocs, x.AllocsPerReq), append(bytes, x.BytesPerReq), append(heap, x.HeapLiveMiB)
				gcs = append(gcs, ratio(float64(x.GCs)*1e4, float64(x.Proxied)))
			}
		}
		r.Summary[v.Name] = summary{median(rps), median(p50), median(p99), median(cpu), median(util),
			median(allocs), median(bytes), median(gcs), median(heap)}
	}
	a, b := r.Summary["A"], r.Summary["B"]
	r.ThruBA, r.P99BA, r.CPUDelta = ratio(b.RPS, a.RPS), ratio(b.P99US, a.P99US), b.CPUUS-a.CPUUS
	var thru, p50, p99, cpu []float64
	for _, ra := range r.Rounds {
		if ra.Variant != "A" {
			continue
		}
		for _, rb := range r.Rounds {
			if rb.Variant == "B" && rb.Round == ra.Round {
				thru, p50, p99 = append(thru, ratio(rb.RPS, ra.RPS)), append(p50, ratio(rb.P50US, ra.P50US)), append(p99, ratio(rb.P99US, ra.P99US))
				cpu = append(cpu, rb.CPUUS-ra.CPUUS)
			}
		}
	}
	r.PairedThruBA, r.PairedP50BA, r.PairedP99BA, r.PairedCPUDelta = median(thru), median(p50), median(p99), median(cpu)
	deltas, thruRatios := map[string][]float64{}, map[string][]float64{}
	for _, p := range r.Pairs {
		k := p.Base + "/" + p.Other
		deltas[k] = append(deltas[k], p.DeltaUS)
		thruRatios[k] = append(thruRatios[k], ratio(p.OtherRPS, p.BaseRPS))
	}
	r.SideBySide, r.SideBySideThru = map[string]spread{}, map[string]spread{}
	for k := range deltas {
		r.SideBySide[k], r.SideBySideThru[k] = spreadOf(deltas[k]), spreadOf(thruRatios[k])
	}
	r.Goals = r.goals()
}

// hitRoundsFlatness judges the flatness goal on the hit rounds: per round,
// each size's hit against the 1k one, so that the sizes compared ran under
// the same machine conditions. It reports the median ratios with their
// confidence intervals, and the plain map's ratios in the same rounds.
func (r *results) hitRoundsFlatness() (measured string, met bool) {
	ratios := func(bench string) (spread, spread) {
		var r100k, r1M []float64
		for _, round := range r.HitRounds {
			base, at100k, at1M := round[bench+"/entries=1k/hot1k"], round[bench+"/entries=100k/hot1k"], round[bench+"/entries=1M/hot1k"]
			if base == 0 || at100k == 0 || at1M == 0 {
				continue // a round that lacks a size says nothing
			}
			r100k, r1M = append(r100k, at100k/base), append(r1M, at1M/base)
		}
		return spreadOf(r100k), spreadOf(r1M)
	}
	c100k, c1M := ratios("GetHit")
	if c1M.N == 0 {
		return "no complete hit round", false
	}
	m100k, m1M := ratios("MapBaseline")
	measured = fmt.Sprintf("paired rounds: 100k/1k %s, 1M/1k %s", c100k.ratioString(), c1M.ratioString())
	if m1M.N > 0 {
		measured += fmt.Sprintf("; a plain map in the same rounds: 100k/1k %.2f, 1M/1k %.2f", m100k.Median, m1M.Median)
	}
	return measured, c100k.Median <= 1.2 && c1M.Median <= 1.2
}

// spread is a median with its quartiles and a distribution-free 95%
// confidence interval for the median (CILo, CIHi; equal to the extremes
// when there are too few runs for one).
type spread struct {
	Median, Q1, Q3 float64
	CILo, CIHi     float64
	N              int
}

func spreadOf(vs []float64) spread {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s) == 0 {
		return spread{}
	}
	lo, hi := medianCI(len(s))
	return spread{Median: median(s), Q1: median(s[:(len(s)+1)/2]), Q3: median(s[len(s)/2:]), CILo: s[lo], CIHi: s[hi], N: len(s)}
}

// medianCI gives the order statistics (0-based) that bound the median of n
// samples with at least 95% confidence: the widest symmetric pair whose
// binomial(n, 1/2) tails sum to at most 5%.
func medianCI(n int) (lo, hi int) {
	// P(X ≤ k) for X ~ Binomial(n, 1/2), summed term by term.
	tail, term := 0.0, math.Pow(0.5, float64(n))
	k := -1
	for j := 0; j < n; j++ {
		if 2*(tail+term) > 0.05 {
			break
		}
		tail += term
		term *= float64(n-j) / float64(j+1)
		k = j
	}
	if k < 0 { // fewer than 6 runs: no interval reaches 95%
		return 0, n - 1
	}
	// From the (k+1)-th smallest to the (k+1)-th largest.
	return k, n - 1 - k
}

func (s spread) String() string {
	return fmt.Sprintf("%+.1f µs (95%% CI of the median %+.1f … %+.1f; quartiles %+.1f … %+.1f; %d runs)", s.Median, s.CILo, s.CIHi, s.Q1, s.Q3, s.N)
}

func (s spread) ratioString() string {
	return fmt.Sprintf("%.3f (95%% CI %.3f … %.3f, %d runs)", s.Median, s.CILo, s.CIHi, s.N)
}

// ratio is a/b, 0 when there is no b (JSON has no NaN).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *results) goals() []goal {
	// Judged on the estimates that cancel the host's drift: side by side for
	// CPU, round-by-round pairs for throughput and p99.
	cpuGoal := goal{"CPU zapier_auth adds per cache-hit request (B − A)", "≤ 3 µs",
		fmt.Sprintf("alternating rounds: %+.1f µs (medians), %+.1f µs (paired)", r.CPUDelta, r.PairedCPUDelta), r.PairedCPUDelta <= 3}
	if sb, ok := r.SideBySide["A/B"]; ok {
		cpuGoal.Measured = "side by side: " + sb.String() + "; " + cpuGoal.Measured
		cpuGoal.Met = sb.Median <= 3
	}
	thru := goal{"throughput B/A", "≥ 0.97", fmt.Sprintf("paired rounds: %.3f; medians of the rounds: %.3f", r.PairedThruBA, r.ThruBA), r.PairedThruBA >= 0.97}
	p99 := goal{"p99 latency B/A", "≤ 1.10", fmt.Sprintf("paired rounds: %.3f; medians of the rounds: %.3f", r.PairedP99BA, r.P99BA), r.PairedP99BA <= 1.10}
	if sb, ok := r.SideBySideThru["A/B"]; ok {
		thru.Measured += "; side by side: " + sb.ratioString()
	}
	g := []goal{
		cpuGoal, thru, p99,
		{"token exchanges while measuring B (all cache hits)", "0", strconv.Itoa(r.MeasureExchanges), r.MeasureExchanges == 0},
	}
	for _, c := range r.Cold {
		g = append(g,
			goal{fmt.Sprintf("cold path, max_inflight %d: exchanges", c.MaxInflight), strconv.Itoa(c.Identities),
				fmt.Sprintf("%d (%d failed requests)", c.Exchanges, c.Failed), c.Exchanges == c.Identities && c.Failed == 0},
			goal{fmt.Sprintf("cold path, max_inflight %d: wall time", c.MaxInflight), fmt.Sprintf("≤ 1.5 × %.2f s", c.IdealSecs),
				fmt.Sprintf("%.2f s (%.2f×)", c.WallSeconds, c.Ratio), c.Ratio <= 1.5})
	}
	if len(r.GoBench) == 0 {
		return g
	}
	gb := map[string]map[string]float64{}
	for _, b := range r.GoBench {
		gb[b.Name] = b.Metrics
	}
	for _, pattern := range []string{"hot1k", "uniform"} {
		var ns []float64
		allocs := 0.0
		for _, size := range []string{"1k", "100k", "1M"} {
			m := gb["GetHit/entries="+size+"/"+pattern]
			if m == nil {
				continue
			}
			ns = append(ns, m["ns/op"])
			allocs = math.Max(allocs, m["allocs/op"])
		}
		if len(ns) != 3 {
			continue
		}
		spread := (slicesMax(ns)/slicesMin(ns) - 1) * 100
		measured := fmt.Sprintf("%.0f / %.0f / %.0f ns (spread %.0f%%), %.0f allocs", ns[0], ns[1], ns[2], spread, allocs)
		var floor []string
		for _, size := range []string{"1k", "100k", "1M"} {
			if m := gb["MapBaseline/entries="+size+"/"+pattern]; m != nil {
				floor = append(floor, fmt.Sprintf("%.0f", m["ns/op"]))
			}
		}
		if len(floor) == 3 {
			measured += "; a plain map lookup: " + strings.Join(floor, " / ") + " ns"
		}
		flat := spread <= 20
		if pattern == "hot1k" && len(r.HitRounds) > 0 {
			// Judged on the rounds; the medians above stay for reference.
			var paired string
			paired, flat = r.hitRoundsFlatness()
			measured = paired + "; medians of consecutive runs: " + measured
		}
		if pattern == "uniform" {
			// Not a goal: a uniform pick among 1M entries measures how
			// far DRAM is, as the plain map beside it shows.
			g = append(g, goal{What: "for reference: cache hit with uniform keys over all entries (memory-latency bound)", Target: referenceTarget, Measured: measured})
			continue
		}
		g = append(g, goal{"cache hit flat 1k → 100k → 1M entries (1k hot keys)", "within 20%, 0 allocs",
			measured, flat && allocs == 0})
	}
	if mint, raw := gb["MintES256"], gb["SignES256Raw"]; mint != nil && raw != nil {
		x := mint["ns/op"] / raw["ns/op"]
		g = append(g, goal{"ES256 Mint vs crypto/ecdsa on the same bytes", "≤ 1.3×",
			fmt.Sprintf("%.1f vs %.1f µs (%.2f×)", mint["ns/op"]/1e3, raw["ns/op"]/1e3, x), x <= 1.3})
	}
	var perEntry []string
	worst := 0.0
	for _, b := range r.GoBench {
		if v, ok := b.Metrics["B/entry"]; ok {
			perEntry = append(perEntry, fmt.Sprintf("%.0f B (%s)", v, strings.TrimPrefix(b.Name, "MemoryPerEntry/")))
			worst = math.Max(worst, v)
		}
	}
	if len(perEntry) > 0 {
		g = append(g, goal{"cache memory per entry beyond key and token bytes", "≤ 300 B", strings.Join(perEntry, ", "), worst <= 300})
	}
	return g
}

func slicesMax(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func slicesMin(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

// rerenderResults rewrites the report from saved data, after the report's
// layout changed, without measuring again.
func rerenderResults(jsonPath, dir string) error {
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("reading %s: %w", jsonPath, err)
	}
	r.summarize()
	return r.write(dir)
}

func (r *results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"results.json": append(raw, '\n'),
		"results.md":   []byte(r.markdown()),
		"chart.svg":    []byte(r.svg()),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (r *results) conditions() string {
	var others []float64
	for _, x := range r.Rounds {
		others = append(others, x.OtherCPU)
	}
	interference := ""
	if len(others) > 0 {
		retries, noisy := 0, 0
		for _, x := range r.Rounds {
			retries += x.Retries
			if x.Noisy {
				noisy++
			}
		}
		interference = fmt.Sprintf("; other processes used a median of %.2f CPUs (max %.2f) during the kept rounds; %d rounds re-run for interference, %d kept noisy",
			median(others), slicesMax(others), retries, noisy)
	}
	pin := "not pinned"
	if r.ServerCPUs != "" {
		pin = fmt.Sprintf("servers pinned to CPU %s, wrk + upstream + bench to CPU %s", r.ServerCPUs, r.ClientCPUs)
	}
	gc := ""
	if r.Env.GoGC != "" {
		gc = r.Env.GoGC + " for every process; "
	}
	return fmt.Sprintf("%swrk -t%d -c%d, %s measured after %s warm-up per round, %d distinct identities cycled by every variant; %s; load average %s at start, %s at end%s",
		gc, r.Threads, r.Connections, r.Duration, r.Warmup, r.Identities, pin, r.Env.LoadStart, r.Env.LoadEnd, interference)
}

func (r *results) markdown() string {
	var b strings.Builder
	e := r.Env
	fmt.Fprintf(&b, "# Performance results\n\n")
	fmt.Fprintf(&b, "Measured %s on %s (%s). Caddy %s, Go %s, wrk %s, nginx %s; tree %s.  \n", e.Date, e.Machine, e.OS, e.Caddy, e.Go, e.Wrk, e.Nginx, e.Tree)
	fmt.Fprintf(&b, "Conditions: %s.\n\n", r.conditions())
	fmt.Fprintf(&b, "![A/B/C comparison](chart.svg)\n\n")
	b.WriteString(r.mainTable())
	if b0, ok := r.Summary["B0"]; ok {
		a := r.Summary["A"]
		fmt.Fprintf(&b, "\nBefore/after (medians of the rounds): B0, the -caddy-before build, costs %+.1f µs CPU per request over A (throughput %.3f× A, p99 %.3f× A); B costs %+.1f µs (%.3f×, %.3f×).",
			b0.CPUUS-a.CPUUS, ratio(b0.RPS, a.RPS), ratio(b0.P99US, a.P99US), r.CPUDelta, r.ThruBA, r.P99BA)
		if sb, ok := r.SideBySide["B0/B"]; ok {
			fmt.Fprintf(&b, " Side by side, B − B0: %s.", sb)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\n## Goals\n\n| goal | target | measured | |\n|---|---|---|---|\n")
	for _, g := range r.Goals {
		mark := "met"
		switch {
		case g.Target == referenceTarget:
			mark = "reference"
		case !g.Met:
			mark = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.What, g.Target, g.Measured, mark)
	}
	fmt.Fprintf(&b, "\n## Rounds\n\n\"other CPUs\" is the CPU that processes other than the server, wrk and the bench used during the round (1.00 = one CPU the whole time): interference from the rest of the machine. A round with more than the allowed interference was measured again (\"re-runs\"); \"noisy\" marks one kept because the quiet budget ran out.\n\n")
	fmt.Fprintf(&b, "| round | variant | requests/s | p50 | p90 | p99 | CPU per request | requests counted | server CPU busy | other CPUs | re-runs | load average before → after |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, x := range r.Rounds {
		rerun := strconv.Itoa(x.Retries)
		if x.Noisy {
			rerun += ", noisy"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %.1f µs | %s | %.0f%% | %.2f | %s | %s → %s |\n",
			x.Round, x.Variant, thousands(x.RPS), fmtUS(x.P50US), fmtUS(x.P90US), fmtUS(x.P99US), x.CPUUS, thousands(float64(x.Proxied)), 100*x.CPUUtil, x.OtherCPU, rerun, x.LoadAvg, x.LoadEnd)
	}
	if len(r.Pairs) > 0 {
		fmt.Fprintf(&b, "\n## CPU per request, side by side\n\nTwo variants driven at the same time, each by its own wrk, their servers sharing one CPU: the host's drift slows both alike and cancels out of the difference.\n\n")
		for _, k := range slices.Sorted(maps.Keys(r.SideBySide)) {
			base, other, _ := strings.Cut(k, "/")
			fmt.Fprintf(&b, "- %s − %s: %s\n", other, base, r.SideBySide[k])
		}
		fmt.Fprintf(&b, "\n| run | pair | CPU per request | difference | requests counted | other CPUs | re-runs |\n|--:|---|---|--:|---|--:|--:|\n")
		for _, p := range r.Pairs {
			rerun := strconv.Itoa(p.Retries)
			if p.Noisy {
				rerun += ", noisy"
			}
			fmt.Fprintf(&b, "| %d | %s − %s | %.1f µs − %.1f µs | %+.1f µs | %s / %s | %.2f | %s |\n",
				p.Round, p.Other, p.Base, p.OtherUS, p.BaseUS, p.DeltaUS, thousands(float64(p.OthReqs)), thousands(float64(p.BaseReqs)), p.OtherCPU, rerun)
		}
	}
	if len(r.Cold) > 0 {
		fmt.Fprintf(&b, "\n## Cold path\n\nEvery request a new identity, the token endpoint answering after a fixed latency; ideal = identities × latency / max_inflight.\n\n")
		fmt.Fprintf(&b, "| max_inflight | identities | clients | token latency | exchanges | failed | wall time | ideal | ratio |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, c := range r.Cold {
			fmt.Fprintf(&b, "| %d | %s | %d | %.0f ms | %s | %d | %.2f s | %.2f s | %.2f× |\n",
				c.MaxInflight, thousands(float64(c.Identities)), c.Clients, c.LatencyMS, thousands(float64(c.Exchanges)), c.Failed, c.WallSeconds, c.IdealSecs, c.Ratio)
		}
	}
	if len(r.GoBench) > 0 {
		fmt.Fprintf(&b, "\n## Go benchmarks\n\n`go test -bench -benchmem`, median of the runs; `-2` suffixes dropped.\n\n| benchmark | ns/op | B/op | allocs/op | other |\n|---|--:|--:|--:|---|\n")
		for _, g := range r.GoBench {
			var other []string
			for unit, v := range g.Metrics {
				if unit != "ns/op" && unit != "B/op" && unit != "allocs/op" {
					other = append(other, fmt.Sprintf("%.0f %s", v, unit))
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %s |\n", g.Name, fmtNS(g.Metrics["ns/op"]), g.Metrics["B/op"], g.Metrics["allocs/op"], strings.Join(other, ", "))
		}
	}
	return b.String()
}

// mainTable is the comparison (medians), also pasted into docs/performance.md.
func (r *results) mainTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| median of %d rounds |", r.roundsPer())
	for _, v := range r.Variants {
		fmt.Fprintf(&b, " %s: %s |", v.Name, v.Title)
	}
	b.WriteString(" B vs A, paired |\n|---|")
	b.WriteString(strings.Repeat("--:|", len(r.Variants)+1) + "\n")
	row := func(label string, cell func(summary) string, vsA string) {
		fmt.Fprintf(&b, "| %s |", label)
		for _, v := range r.Variants {
			fmt.Fprintf(&b, " %s |", cell(r.Summary[v.Name]))
		}
		fmt.Fprintf(&b, " %s |\n", vsA)
	}
	cpuDelta := fmt.Sprintf("%+.1f µs", r.PairedCPUDelta)
	if sb, ok := r.SideBySide["A/B"]; ok {
		cpuDelta = fmt.Sprintf("%+.1f µs (side by side)", sb.Median)
	}
	row("requests/s", func(s summary) string { return thousands(s.RPS) }, fmt.Sprintf("%.3f×", r.PairedThruBA))
	row("p50 latency", func(s summary) string { return fmtUS(s.P50US) }, fmt.Sprintf("%.3f×", r.PairedP50BA))
	row("p99 latency", func(s summary) string { return fmtUS(s.P99US) }, fmt.Sprintf("%.3f×", r.PairedP99BA))
	row("server CPU per request", func(s summary) string { return fmt.Sprintf("%.1f µs", s.CPUUS) }, cpuDelta)
	row("server CPU busy", func(s summary) string { return fmt.Sprintf("%.0f%%", 100*s.CPUUtil) }, "")
	a, bb := r.Summary["A"], r.Summary["B"]
	goStat := func(v float64, format string) string {
		if v == 0 {
			return "–" // nginx
		}
		return fmt.Sprintf(format, v)
	}
	row("Go allocations per request", func(s summary) string { return goStat(s.AllocsPerReq, "%.1f") }, fmt.Sprintf("%+.1f", bb.AllocsPerReq-a.AllocsPerReq))
	row("bytes allocated per request", func(s summary) string { return goStat(s.BytesPerReq, "%.0f B") }, fmt.Sprintf("%+.0f B", bb.BytesPerReq-a.BytesPerReq))
	row("GC cycles per 10k requests", func(s summary) string { return goStat(s.GCsPer10k, "%.1f") }, "")
	row("live heap", func(s summary) string { return goStat(s.HeapLiveMiB, "%.1f MiB") }, "")
	return b.String()
}

func (r *results) roundsPer() int {
	n := 0
	for _, x := range r.Rounds {
		if x.Variant == "A" {
			n++
		}
	}
	return n
}

func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtUS(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func fmtNS(ns float64) string {
	if ns >= 1e6 {
		return fmt.Sprintf("%.1f ms", ns/1e6)
	}
	if ns >= 1e4 {
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f", ns)
}

// svg draws the comparison with no plotting dependency: one panel per
// measure, a bar per variant at its median, a dot per round.
func (r *results) svg() string {
	type panel struct {
		title string
		value func(round) float64
		med   func(summary) float64
		label func(float64) string
	}
	panels := []panel{
		{"requests/s (higher is better)", func(x round) float64 { return x.RPS }, func(s summary) float64 { return s.RPS }, thousands},
		{"p50 latency (lower is better)", func(x round) float64 { return x.P50US }, func(s summary) float64 { return s.P50US }, fmtUS},
		{"p99 latency (lower is better)", func(x round) float64 { return x.P99US }, func(s summary) float64 { return s.P99US }, fmtUS},
		{"CPU per request (lower better)", func(x round) float64 { return x.CPUUS }, func(s summary) float64 { return s.CPUUS },
			func(v float64) string { return fmt.Sprintf("%.1f µs", v) }},
	}
	colors := map[string]string{"A": "#7a7a7a", "B": "#2b6cb0", "C": "#2f855a", "B0": "#c05621"}
	const (
		width, panelW, top, plotH, left = 960, 230, 124, 220, 20
	)
	height := top + plotH + 150
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">caddy-zapier: cost of zapier_auth on a cache hit (medians of %d rounds; dots are rounds)</text>`+"\n", left, r.roundsPer())
	for i, v := range r.Variants { // two columns
		x, y := left+(i%2)*(width-2*left)/2, 38+(i/2)*18
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s: %s</text>`+"\n", x, y, colors[v.Name], x+16, y+11, v.Name, esc(v.Title))
	}
	summaryLine := fmt.Sprintf("B/A throughput %.3f, B/A p99 %.3f (paired rounds); zapier_auth adds %+.1f µs CPU per request (B − A, paired rounds)",
		r.PairedThruBA, r.PairedP99BA, r.PairedCPUDelta)
	if sb, ok := r.SideBySide["A/B"]; ok {
		summaryLine = fmt.Sprintf("B/A throughput %.3f, B/A p99 %.3f (paired rounds); zapier_auth adds %+.1f µs CPU per request (B − A, side by side)",
			r.PairedThruBA, r.PairedP99BA, sb.Median)
	}
	fmt.Fprintf(&b, `<text x="%d" y="92" font-size="13">%s</text>`+"\n", left, esc(summaryLine))

	for i, p := range panels {
		px := left + i*(panelW+10)
		maxV := 0.0
		for _, x := range r.Rounds {
			maxV = math.Max(maxV, p.value(x))
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV *= 1.18
		base := top + plotH
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", px, top-4, esc(p.title))
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", px, base, px+panelW-10, base)
		barW := (panelW - 10) / (len(r.Variants)*2 + 1)
		for j, v := range r.Variants {
			bx := px + barW*(2*j+1)
			med := p.med(r.Summary[v.Name])
			h := int(math.Round(med / maxV * plotH))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" fill-opacity="0.85"/>`+"\n", bx, base-h, barW, h, colors[v.Name])
			top := med // the label goes above the bar and every dot
			for _, x := range r.Rounds {
				if x.Variant == v.Name {
					top = math.Max(top, p.value(x))
				}
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="11">%s</text>`+"\n", bx+barW/2, base-int(math.Round(top/maxV*plotH))-6-(j%2)*12, esc(p.label(med))) // staggered: neighbours' labels overlap
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", bx+barW/2, base+15, v.Name)
			for _, x := range r.Rounds {
				if x.Variant == v.Name {
					dy := base - int(math.Round(p.value(x)/maxV*plotH))
					fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="2.5" fill="#000" fill-opacity="0.6"/>`+"\n", bx+barW/2, dy)
				}
			}
		}
	}
	e := r.Env
	foot := []string{
		fmt.Sprintf("%s; %s; %s", e.Date, e.Machine, e.OS),
		fmt.Sprintf("Caddy %s, Go %s, wrk %s, nginx %s; tree %s", e.Caddy, e.Go, e.Wrk, e.Nginx, e.Tree),
		r.conditions(),
	}
	y := top + plotH + 50
	for _, line := range foot {
		for _, part := range wrap(line, 150) {
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#444">%s</text>`+"\n", left, y, esc(part))
			y += 17
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }

// wrap splits s at spaces into lines of at most n characters.
func wrap(s string, n int) []string {
	var lines []string
	for len(s) > n {
		cut := strings.LastIndexByte(s[:n], ' ')
		if cut <= 0 {
			cut = n
		}
		lines = append(lines, s[:cut])
		s = strings.TrimSpace(s[cut:])
	}
	return append(lines, s)
}
