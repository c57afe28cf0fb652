package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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
		args := []string{"go", "test", "-run", "^$", "-bench", s.pattern, "-benchmem", "-count", strconv.Itoa(count), s.pkg}
		if os.Getenv("BENCH_PINNED") != "" {
			// Undo the bench's own pinning: Go benchmarks run as
			// `go test -bench` would, on every CPU.
			args = append([]string{"taskset", "-c", fmt.Sprintf("0-%d", cpuCount()-1)}, args...)
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = root
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("running the Go benchmarks in %s: %w\n%s", s.pkg, err, out)
		}
		all = append(all, parseGoBench(string(out))...)
	}
	return all, nil
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
