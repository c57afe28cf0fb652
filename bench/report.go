package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	}
}

// cpuCount counts the machine's CPUs from /proc/cpuinfo: runtime.NumCPU
// sees only the CPUs this process is pinned to.
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
	RPS, P50US, P99US, CPUUS, CPUUtil float64
}

type goal struct {
	What     string `json:"what"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

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
	Cold             []coldResult  `json:"cold"`
	GoBench          []goBenchmark `json:"go_benchmarks"`

	Summary  map[string]summary `json:"summary"`
	ThruBA   float64            `json:"throughput_b_over_a"`
	P99BA    float64            `json:"p99_b_over_a"`
	CPUDelta float64            `json:"cpu_us_b_minus_a"`
	// Paired: the median over rounds of B's value against A's in the same
	// round, which cancels slow drifts in machine load.
	PairedThruBA   float64 `json:"paired_throughput_b_over_a"`
	PairedP99BA    float64 `json:"paired_p99_b_over_a"`
	PairedCPUDelta float64 `json:"paired_cpu_us_b_minus_a"`
	Goals          []goal  `json:"goals"`
}

func (r *results) summarize() {
	r.Summary = map[string]summary{}
	for _, v := range r.Variants {
		var rps, p50, p99, cpu, util []float64
		for _, x := range r.Rounds {
			if x.Variant == v.Name {
				rps, p50, p99 = append(rps, x.RPS), append(p50, x.P50US), append(p99, x.P99US)
				cpu, util = append(cpu, x.CPUUS), append(util, x.CPUUtil)
			}
		}
		r.Summary[v.Name] = summary{median(rps), median(p50), median(p99), median(cpu), median(util)}
	}
	a, b := r.Summary["A"], r.Summary["B"]
	r.ThruBA, r.P99BA, r.CPUDelta = ratio(b.RPS, a.RPS), ratio(b.P99US, a.P99US), b.CPUUS-a.CPUUS
	var thru, p99, cpu []float64
	for _, ra := range r.Rounds {
		if ra.Variant != "A" {
			continue
		}
		for _, rb := range r.Rounds {
			if rb.Variant == "B" && rb.Round == ra.Round {
				thru, p99, cpu = append(thru, ratio(rb.RPS, ra.RPS)), append(p99, ratio(rb.P99US, ra.P99US)), append(cpu, rb.CPUUS-ra.CPUUS)
			}
		}
	}
	r.PairedThruBA, r.PairedP99BA, r.PairedCPUDelta = median(thru), median(p99), median(cpu)
	r.Goals = r.goals()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func (r *results) goals() []goal {
	g := []goal{
		{"CPU zapier_auth adds per cache-hit request (B − A)", "≤ 3 µs",
			fmt.Sprintf("%+.1f µs (paired %+.1f µs)", r.CPUDelta, r.PairedCPUDelta), r.CPUDelta <= 3},
		{"throughput B/A", "≥ 0.97", fmt.Sprintf("%.3f (paired %.3f)", r.ThruBA, r.PairedThruBA), r.ThruBA >= 0.97},
		{"p99 latency B/A", "≤ 1.10", fmt.Sprintf("%.3f (paired %.3f)", r.P99BA, r.PairedP99BA), r.P99BA <= 1.10},
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
		g = append(g, goal{fmt.Sprintf("cache hit flat 1k → 100k → 1M entries (%s keys)", pattern), "within 20%, 0 allocs",
			measured, spread <= 20 && allocs == 0})
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
		interference = fmt.Sprintf("; other processes used a median of %.2f CPUs (max %.2f) during the rounds", median(others), slicesMax(others))
	}
	pin := "not pinned"
	if r.ServerCPUs != "" {
		pin = fmt.Sprintf("servers pinned to CPU %s, wrk + upstream + bench to CPU %s", r.ServerCPUs, r.ClientCPUs)
	}
	return fmt.Sprintf("wrk -t%d -c%d, %s measured after %s warm-up per round, %d distinct identities cycled by every variant; %s; load average %s at start, %s at end%s",
		r.Threads, r.Connections, r.Duration, r.Warmup, r.Identities, pin, r.Env.LoadStart, r.Env.LoadEnd, interference)
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
		fmt.Fprintf(&b, "\nBefore/after: B0 (the -caddy-before build) adds %+.1f µs CPU per request over A (throughput %.3f× A, p99 %.3f× A); B adds %+.1f µs (%.3f×, %.3f×).\n",
			b0.CPUUS-a.CPUUS, ratio(b0.RPS, a.RPS), ratio(b0.P99US, a.P99US), r.CPUDelta, r.ThruBA, r.P99BA)
	}
	fmt.Fprintf(&b, "\n## Goals\n\n| goal | target | measured | |\n|---|---|---|---|\n")
	for _, g := range r.Goals {
		mark := "met"
		if !g.Met {
			mark = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.What, g.Target, g.Measured, mark)
	}
	fmt.Fprintf(&b, "\n## Rounds\n\n\"other CPUs\" is the CPU that processes other than the server, wrk and the bench used during the round (1.00 = one CPU the whole time): interference from the rest of the machine.\n\n")
	fmt.Fprintf(&b, "| round | variant | requests/s | p50 | p90 | p99 | CPU per request | requests counted | server CPU busy | other CPUs | load average before → after |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, x := range r.Rounds {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %.1f µs | %s | %.0f%% | %.2f | %s → %s |\n",
			x.Round, x.Variant, thousands(x.RPS), fmtUS(x.P50US), fmtUS(x.P90US), fmtUS(x.P99US), x.CPUUS, thousands(float64(x.Proxied)), 100*x.CPUUtil, x.OtherCPU, x.LoadAvg, x.LoadEnd)
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

// mainTable is the comparison (medians), also pasted into the README.
func (r *results) mainTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| median of %d rounds |", r.roundsPer())
	for _, v := range r.Variants {
		fmt.Fprintf(&b, " %s: %s |", v.Name, v.Title)
	}
	b.WriteString(" B vs A |\n|---|")
	b.WriteString(strings.Repeat("--:|", len(r.Variants)+1) + "\n")
	row := func(label string, cell func(summary) string, vsA string) {
		fmt.Fprintf(&b, "| %s |", label)
		for _, v := range r.Variants {
			fmt.Fprintf(&b, " %s |", cell(r.Summary[v.Name]))
		}
		fmt.Fprintf(&b, " %s |\n", vsA)
	}
	a, bb := r.Summary["A"], r.Summary["B"]
	row("requests/s", func(s summary) string { return thousands(s.RPS) }, fmt.Sprintf("%.3f×", r.ThruBA))
	row("p50 latency", func(s summary) string { return fmtUS(s.P50US) }, fmt.Sprintf("%.3f×", ratio(bb.P50US, a.P50US)))
	row("p99 latency", func(s summary) string { return fmtUS(s.P99US) }, fmt.Sprintf("%.3f×", r.P99BA))
	row("server CPU per request", func(s summary) string { return fmt.Sprintf("%.1f µs", s.CPUUS) }, fmt.Sprintf("%+.1f µs", r.CPUDelta))
	row("server CPU busy", func(s summary) string { return fmt.Sprintf("%.0f%%", 100*s.CPUUtil) }, "")
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
		width, panelW, top, plotH, left = 960, 230, 104, 220, 20
	)
	height := top + plotH + 150
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">caddy-zapier: cost of zapier_auth on a cache hit (medians of %d rounds; dots are rounds)</text>`+"\n", left, r.roundsPer())
	x := left
	for _, v := range r.Variants {
		fmt.Fprintf(&b, `<rect x="%d" y="38" width="12" height="12" fill="%s"/><text x="%d" y="49">%s: %s</text>`+"\n", x, colors[v.Name], x+16, v.Name, esc(v.Title))
		x += (width - 2*left) / len(r.Variants)
	}
	summaryLine := fmt.Sprintf("B/A throughput %.3f, B/A p99 %.3f, zapier_auth adds %+.1f µs CPU per request (B − A)", r.ThruBA, r.P99BA, r.CPUDelta)
	fmt.Fprintf(&b, `<text x="%d" y="70" font-size="13">%s</text>`+"\n", left, esc(summaryLine))

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
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="11">%s</text>`+"\n", bx+barW/2, base-h-5, esc(p.label(med)))
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
