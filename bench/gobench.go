package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// goBenchmark is the median of one Go benchmark's runs, metric by unit
// (ns/op, B/op, allocs/op, B/entry).
type goBenchmark struct {
	Name    string             `json:"name"`
	Metrics map[string]float64 `json:"metrics"`
}

// goBenchSuites are the benchmarks the results report, per package.
var goBenchSuites = []struct{ pkg, pattern string }{
	{"./tokencache/", "GetHit|MapBaseline|MemoryPerEntry|GCCycle"},
	{"./jwks/", "MintES256$|SignES256Raw"},
	{"./caddymodule/", "AuthServeHTTP|ExtractIdentity"},
}

func runGoBenchmarks(ctx context.Context, root string, count int) ([]goBenchmark, error) {
	var all []goBenchmark
	for _, s := range goBenchSuites {
		out, err := goBenchCommand(ctx, root, "go", "test", "-run", "^$", "-bench", s.pattern, "-benchmem", "-count", strconv.Itoa(count), s.pkg)
		if err != nil {
			return nil, fmt.Errorf("running the Go benchmarks in %s: %w\n%s", s.pkg, err, out)
		}
		all = append(all, parseGoBench(string(out))...)
	}
	return all, nil
}

// goBenchCommand runs a Go benchmark command in root and returns its output.
func goBenchCommand(ctx context.Context, root string, args ...string) ([]byte, error) {
	if os.Getenv("BENCH_PINNED") != "" {
		// Undo the bench's own pinning: Go benchmarks run as
		// `go test -bench` would, on every CPU.
		args = append([]string{"taskset", "-c", fmt.Sprintf("0-%d", cpuCount()-1)}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	return cmd.Output()
}

// hitRoundPattern selects the hot-key hit benchmarks at every size, and the
// plain map beside them, for runHitRounds.
const hitRoundPattern = `^Benchmark(GetHit|MapBaseline)$/^entries=/^hot1k$`

// runHitRounds runs the hot-key cache-hit benchmarks rounds times, every
// size in every round, and returns each round's ns/op by benchmark name.
// Consecutive -count runs of one size drift with the machine (on a shared
// VM by 20% or more within minutes); sizes measured in the same round see
// the same machine, so their ratio within a round is what the flatness goal
// is judged on. The test binary is built once; each round is a new process,
// as a `go test` run would be.
func runHitRounds(ctx context.Context, root string, rounds int) ([]map[string]float64, error) {
	dir, err := os.MkdirTemp("", "zapier-hit-rounds-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "tokencache.test")
	if out, err := goBenchCommand(ctx, root, "go", "test", "-c", "-o", bin, "./tokencache/"); err != nil {
		return nil, fmt.Errorf("building the tokencache benchmarks: %w\n%s", err, out)
	}
	var res []map[string]float64
	for range rounds {
		out, err := goBenchCommand(ctx, root, bin, "-test.run", "^$", "-test.bench", hitRoundPattern, "-test.benchtime", "300ms")
		if err != nil {
			return nil, fmt.Errorf("running the hit rounds: %w\n%s", err, out)
		}
		round := map[string]float64{}
		for _, b := range parseGoBench(string(out)) {
			if !strings.HasSuffix(b.Name, "/parallel") {
				round[b.Name] = b.Metrics["ns/op"]
			}
		}
		res = append(res, round)
	}
	return res, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseGoBench reads `go test -bench` output and keeps, for every benchmark
// and unit, the median of its -count runs.
func parseGoBench(out string) []goBenchmark {
	samples := map[string]map[string][]float64{}
	var order []string
	for line := range strings.SplitSeq(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		name := strings.TrimPrefix(m[1], "Benchmark")
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
			order = append(order, name)
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	res := make([]goBenchmark, 0, len(order))
	for _, name := range order {
		gb := goBenchmark{Name: name, Metrics: map[string]float64{}}
		for unit, vs := range samples[name] {
			gb.Metrics[unit] = median(vs)
		}
		res = append(res, gb)
	}
	return res
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
