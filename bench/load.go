package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// wrkResult is the BENCH_RESULT line identities.lua prints.
type wrkResult struct {
	Requests   int64
	DurationUS int64
	Errors     int64 // connect+read+write+timeout+non-2xx/3xx
	P50US      float64
	P90US      float64
	P99US      float64
	MaxUS      float64
	MeanUS     float64
	CPU        time.Duration // wrk's own user+system time
}

// runWrk drives url for d with the identity-cycling script.
func (b *bench) runWrk(url string, d time.Duration) (wrkResult, error) {
	args := []string{
		"-t", strconv.Itoa(b.threads), "-c", strconv.Itoa(b.connections),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--timeout", "5s",
		"-s", b.luaPath, url,
	}
	cmd := exec.Command(b.wrk, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("BENCH_IDENTITIES=%d", b.identities))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("running wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	res, err := parseWrk(string(out))
	res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, err
}

func parseWrk(out string) (wrkResult, error) {
	var line string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, "BENCH_RESULT ") {
			line = l
		}
	}
	if line == "" {
		return wrkResult{}, fmt.Errorf("wrk printed no BENCH_RESULT line:\n%s", out)
	}
	kv := map[string]float64{}
	for f := range strings.FieldsSeq(strings.TrimPrefix(line, "BENCH_RESULT ")) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return wrkResult{}, fmt.Errorf("parsing wrk field %q: %w", f, err)
		}
		kv[k] = x
	}
	return wrkResult{
		Requests:   int64(kv["requests"]),
		DurationUS: int64(kv["duration_us"]),
		Errors:     int64(kv["errors_connect"] + kv["errors_read"] + kv["errors_write"] + kv["errors_timeout"] + kv["errors_status"]),
		P50US:      kv["p50_us"],
		P90US:      kv["p90_us"],
		P99US:      kv["p99_us"],
		MaxUS:      kv["max_us"],
		MeanUS:     kv["mean_us"],
	}, nil
}

// round is one measured wrk run against one variant.
type round struct {
	Variant  string  `json:"variant"`
	Round    int     `json:"round"`
	Requests int64   `json:"requests"` // completed, as wrk counted them
	Proxied  int64   `json:"proxied"`  // served by the upstream during the run: the CPU divisor
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50US    float64 `json:"p50_us"`
	P90US    float64 `json:"p90_us"`
	P99US    float64 `json:"p99_us"`
	MaxUS    float64 `json:"max_us"`
	CPUTicks int64   `json:"cpu_ticks"`
	CPUUS    float64 `json:"cpu_us_per_request"`
	CPUUtil  float64 `json:"cpu_util"` // server CPU seconds per wall second
	Errors   int64   `json:"errors"`
	// OtherCPU is the CPU used meanwhile by processes other than the server,
	// wrk and this program, in CPUs (1.0 = one CPU busy the whole run): how
	// much the shared machine interfered with the round.
	OtherCPU float64 `json:"other_cpu"`
	Retries  int     `json:"retries"` // earlier attempts dropped for interference
	Noisy    bool    `json:"noisy"`   // kept despite interference: the quiet budget was spent
	// From the Go runtime of a Caddy variant (zero for nginx): exact
	// counts that explain a CPU difference where timing is noisy.
	AllocsPerReq float64 `json:"allocs_per_request,omitempty"`
	BytesPerReq  float64 `json:"bytes_per_request,omitempty"`
	GCs          int64   `json:"gc_cycles,omitempty"`
	HeapLiveMiB  float64 `json:"heap_live_mib,omitempty"` // after the last GC of the round
	LoadAvg      string  `json:"loadavg_before"`
	LoadEnd      string  `json:"loadavg_after"`
}

// measure runs one warm-up and one measured wrk run against v.
func (b *bench) measure(v *variant, n int) (round, error) {
	if b.warmup > 0 {
		if _, err := b.runWrk(v.url, b.warmup); err != nil {
			return round{}, err
		}
	}
	load := loadAvg()
	memBefore, err := v.memStats()
	if err != nil {
		return round{}, err
	}
	servedBefore := v.up.served.Load()
	ticksBefore, err := v.srv.cpuTicks()
	if err != nil {
		return round{}, err
	}
	machineBefore, selfBefore := machineBusyTicks(), selfTicks()
	start := time.Now()
	res, err := b.runWrk(v.url, b.duration)
	if err != nil {
		return round{}, err
	}
	wall := time.Since(start)
	ticksAfter, err := v.srv.cpuTicks()
	if err != nil {
		return round{}, err
	}
	machineTicks, ownTicks := machineBusyTicks()-machineBefore, selfTicks()-selfBefore
	proxied := v.up.served.Load() - servedBefore
	memAfter, err := v.memStats()
	if err != nil {
		return round{}, err
	}
	r := round{
		Variant:  v.name,
		Round:    n,
		Requests: res.Requests,
		Proxied:  proxied,
		Seconds:  float64(res.DurationUS) / 1e6,
		P50US:    res.P50US,
		P90US:    res.P90US,
		P99US:    res.P99US,
		MaxUS:    res.MaxUS,
		CPUTicks: ticksAfter - ticksBefore,
		Errors:   res.Errors,
		LoadAvg:  load,
		LoadEnd:  loadAvg(),
	}
	if r.Seconds > 0 {
		r.RPS = float64(res.Requests) / r.Seconds
	}
	cpuSeconds := float64(r.CPUTicks) / clockTicks
	if proxied > 0 {
		r.CPUUS = cpuSeconds * 1e6 / float64(proxied)
		r.AllocsPerReq = float64(memAfter.Mallocs-memBefore.Mallocs) / float64(proxied)
		r.BytesPerReq = float64(memAfter.TotalAlloc-memBefore.TotalAlloc) / float64(proxied)
	}
	r.GCs = int64(memAfter.NumGC - memBefore.NumGC)
	r.HeapLiveMiB = float64(memAfter.HeapMarked) / (1 << 20)
	r.CPUUtil = cpuSeconds / wall.Seconds()
	others := float64(machineTicks-ownTicks-r.CPUTicks)/clockTicks - res.CPU.Seconds()
	r.OtherCPU = max(others, 0) / wall.Seconds()
	if r.Errors > 0 {
		return r, fmt.Errorf("%s round %d: %d failed requests (see %s)", v.name, n, r.Errors, v.srv.log.Name())
	}
	return r, nil
}

// quietly runs measure, which reports how many CPUs other processes used
// while it ran. On a shared machine they take CPU from the server and
// pollute its caches, so it first waits for the machine to be quiet, and
// measures again when others were busy during the run, until the quiet
// budget is spent; a run kept anyway is reported noisy.
func (b *bench) quietly(ctx context.Context, what string, measure func() (float64, error)) (retries int, noisy bool, err error) {
	for ; ; retries++ {
		if b.maxInterference > 0 {
			b.waitQuiet(ctx)
		}
		others, err := measure()
		if err != nil || b.maxInterference <= 0 || others <= b.maxInterference {
			return retries, false, err
		}
		if time.Now().After(b.quietDeadline) || ctx.Err() != nil {
			return retries, true, nil
		}
		log.Printf("%s: other processes used %.2f CPUs meanwhile; measuring again", what, others)
	}
}

// quietRound measures one alternating round of v.
func (b *bench) quietRound(ctx context.Context, v *variant, n int) (round, error) {
	var r round
	retries, noisy, err := b.quietly(ctx, fmt.Sprintf("round %d %s", n, v.name), func() (float64, error) {
		var err error
		r, err = b.measure(v, n)
		return r.OtherCPU, err
	})
	r.Retries, r.Noisy = retries, noisy
	return r, err
}

// pairRound is one side-by-side run: two variants driven at the same time,
// their servers sharing one CPU, so whatever the host does meanwhile (other
// VMs, frequency changes) slows both alike and cancels out of the
// difference in CPU per request.
type pairRound struct {
	Round    int     `json:"round"`
	Base     string  `json:"base"`
	Other    string  `json:"other"`
	BaseUS   float64 `json:"base_cpu_us_per_request"`
	OtherUS  float64 `json:"other_cpu_us_per_request"`
	DeltaUS  float64 `json:"delta_us"` // Other − Base
	BaseReqs int64   `json:"base_requests"`
	OthReqs  int64   `json:"other_requests"`
	BaseRPS  float64 `json:"base_rps"`
	OtherRPS float64 `json:"other_rps"`
	OtherCPU float64 `json:"other_cpu"` // interference, as in round
	Retries  int     `json:"retries"`
	Noisy    bool    `json:"noisy"`
}

func (b *bench) sideBySide(ctx context.Context, base, other *variant, n int) (pairRound, error) {
	var p pairRound
	retries, noisy, err := b.quietly(ctx, fmt.Sprintf("side by side %d %s/%s", n, base.name, other.name), func() (float64, error) {
		var err error
		p, err = b.measurePair(base, other, n)
		return p.OtherCPU, err
	})
	p.Retries, p.Noisy = retries, noisy
	return p, err
}

func (b *bench) measurePair(base, other *variant, n int) (pairRound, error) {
	both := func(d time.Duration) ([2]wrkResult, error) {
		var res [2]wrkResult
		var errs [2]error
		var wg sync.WaitGroup
		for i, v := range []*variant{base, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i], errs[i] = b.runWrk(v.url, d)
			}()
		}
		wg.Wait()
		return res, errors.Join(errs[:]...)
	}
	if b.warmup > 0 {
		if _, err := both(b.warmup); err != nil {
			return pairRound{}, err
		}
	}
	type sample struct{ served, ticks int64 }
	take := func() (s [2]sample, err error) {
		for i, v := range []*variant{base, other} {
			s[i].served = v.up.served.Load()
			if s[i].ticks, err = v.srv.cpuTicks(); err != nil {
				return s, err
			}
		}
		return s, nil
	}
	before, err := take()
	if err != nil {
		return pairRound{}, err
	}
	machineBefore, selfBefore := machineBusyTicks(), selfTicks()
	start := time.Now()
	res, err := both(b.pairDuration)
	if err != nil {
		return pairRound{}, err
	}
	wall := time.Since(start)
	after, err := take()
	if err != nil {
		return pairRound{}, err
	}
	if res[0].Errors+res[1].Errors > 0 {
		return pairRound{}, fmt.Errorf("side by side %d: %d and %d failed requests", n, res[0].Errors, res[1].Errors)
	}
	perRequest := func(i int) (float64, int64) {
		reqs := after[i].served - before[i].served
		if reqs == 0 {
			return 0, 0
		}
		return float64(after[i].ticks-before[i].ticks) / clockTicks * 1e6 / float64(reqs), reqs
	}
	p := pairRound{Round: n, Base: base.name, Other: other.name}
	p.BaseUS, p.BaseReqs = perRequest(0)
	p.OtherUS, p.OthReqs = perRequest(1)
	p.DeltaUS = p.OtherUS - p.BaseUS
	rps := func(w wrkResult) float64 { return float64(w.Requests) / (float64(w.DurationUS) / 1e6) }
	p.BaseRPS, p.OtherRPS = rps(res[0]), rps(res[1])
	ours := (after[0].ticks - before[0].ticks) + (after[1].ticks - before[1].ticks)
	others := float64(machineBusyTicks()-machineBefore-(selfTicks()-selfBefore)-ours)/clockTicks - res[0].CPU.Seconds() - res[1].CPU.Seconds()
	p.OtherCPU = max(others, 0) / wall.Seconds()
	return p, nil
}

// goMemStats are the runtime counters a Caddy variant reports.
type goMemStats struct {
	Mallocs, TotalAlloc, NumGC, HeapMarked uint64
}

// memStats reads v's runtime memory statistics from the "# runtime.MemStats"
// part of its heap profile (debug=1); nginx has none and reports zeros.
// The live heap after the last GC is derived from the next GC's goal and
// GOGC; with GOGC=off the goal says nothing about it, and it stays zero.
func (v *variant) memStats() (goMemStats, error) {
	var st goMemStats
	if v.admin == "" {
		return st, nil
	}
	resp, err := http.Get("http://" + v.admin + "/debug/pprof/heap?debug=1")
	if err != nil {
		return st, fmt.Errorf("reading %s's memory statistics: %w", v.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("reading %s's memory statistics: status %d, %v", v.name, resp.StatusCode, err)
	}
	fields := map[string]*uint64{"Mallocs": &st.Mallocs, "TotalAlloc": &st.TotalAlloc, "NumGC": &st.NumGC, "NextGC": &st.HeapMarked}
	for line := range strings.SplitSeq(string(body), "\n") {
		name, val, ok := strings.Cut(strings.TrimPrefix(line, "# "), " = ")
		if p := fields[name]; ok && p != nil {
			*p, _ = strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		}
	}
	if st.Mallocs == 0 {
		return st, fmt.Errorf("%s's heap profile has no memory statistics", v.name)
	}
	st.HeapMarked = liveFromGoal(st.HeapMarked, os.Getenv("GOGC"))
	return st, nil
}

// liveFromGoal is the marked heap that gives the GC goal nextGC under
// GOGC=gogc (goal = live × (1 + GOGC/100)), or 0 when GOGC is off.
func liveFromGoal(nextGC uint64, gogc string) uint64 {
	pct := 100
	if gogc != "" {
		n, err := strconv.Atoi(gogc)
		if err != nil || n < 0 { // "off"
			return 0
		}
		pct = n
	}
	return nextGC * 100 / uint64(100+pct)
}

// waitQuiet returns once other processes use less than maxInterference CPUs
// over a second (nothing of the bench runs meanwhile), or the budget is spent.
func (b *bench) waitQuiet(ctx context.Context) {
	for time.Now().Before(b.quietDeadline) && ctx.Err() == nil {
		machine, self := machineBusyTicks(), selfTicks()
		time.Sleep(time.Second)
		others := float64(machineBusyTicks()-machine-(selfTicks()-self)) / clockTicks
		if others <= b.maxInterference {
			return
		}
	}
}

// prewarm sends one request per identity, concurrently, so every identity's
// token is in B's cache before anything is measured.
func prewarm(ctx context.Context, url string, identities, clients int) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 60 * time.Second}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= identities || ctx.Err() != nil {
					return
				}
				if err := identityRequest(ctx, client, url, i, "user"); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// identityRequest sends one GET as identity i (tenant-%03d, <prefix>-%05d):
// the same names identities.lua uses for the "user" prefix.
func identityRequest(ctx context.Context, client *http.Client, url string, i int, prefix string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Zapier-Tenant", fmt.Sprintf("tenant-%03d", i%100))
	req.Header.Set("X-Zapier-User", fmt.Sprintf("%s-%05d", prefix, i))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("identity %d: status %d: %s", i, resp.StatusCode, body)
	}
	return nil
}

// coldResult is one cold-path run: every identity new to the cache.
type coldResult struct {
	Identities  int     `json:"identities"`
	Clients     int     `json:"clients"`
	LatencyMS   float64 `json:"token_latency_ms"`
	MaxInflight int     `json:"max_inflight"`
	Exchanges   int     `json:"exchanges"`
	WallSeconds float64 `json:"wall_seconds"`
	IdealSecs   float64 `json:"ideal_seconds"` // identities × latency / max_inflight
	Ratio       float64 `json:"ratio"`
	Failed      int64   `json:"failed"`
}

// cold starts a fresh gateway whose token endpoint answers after latency,
// and sends one request for each of `identities` new identities from
// `clients` concurrent clients.
func (b *bench) cold(ctx context.Context, maxInflight int) (coldResult, error) {
	res := coldResult{Identities: b.coldIdentities, Clients: b.coldClients, LatencyMS: float64(b.coldLatency) / 1e6, MaxInflight: maxInflight}
	gatewayAddr := fmt.Sprintf("127.0.0.1:%d", b.portBase+13)
	fakeAddr := fmt.Sprintf("127.0.0.1:%d", b.portBase+3)
	fz, err := startFakeZapier(fakeAddr, "http://"+gatewayAddr+"/.well-known/jwks.json")
	if err != nil {
		return res, err
	}
	defer fz.close()
	fz.SetTokenDelay(b.coldLatency)

	if b.coldUp == nil {
		if b.coldUp, err = b.up.listen(fmt.Sprintf("127.0.0.1:%d", b.portBase+25)); err != nil {
			return res, err
		}
	}
	srv, err := b.startCaddy(fmt.Sprintf("cold-%d", maxInflight), b.caddy, caddyfileB(gatewayAddr, b.coldUp.addr, fakeAddr, "off", maxInflight))
	if err != nil {
		return res, err
	}
	defer srv.stop()
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitReady(readyCtx, "http://"+gatewayAddr+"/.well-known/jwks.json", srv); err != nil {
		return res, err
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.coldClients}, Timeout: 2 * time.Minute}
	url := "http://" + gatewayAddr + "/zapier/api/v2/echo"
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range b.coldClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.coldIdentities {
					return
				}
				if err := identityRequest(ctx, client, url, i, "cold"); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "cold path: %v\n", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	res.WallSeconds = time.Since(start).Seconds()
	res.Exchanges = fz.Stats().Exchanges
	res.Failed = failed.Load()
	res.IdealSecs = float64(b.coldIdentities) * b.coldLatency.Seconds() / float64(maxInflight)
	res.Ratio = res.WallSeconds / res.IdealSecs
	return res, nil
}

// machineBusyTicks is the CPU time every CPU spent busy, from the first
// line of /proc/stat (user nice system idle iowait irq softirq steal ...).
func machineBusyTicks() int64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return busy
}

// selfTicks is this program's CPU time: the upstream, the fake Zapier, the
// bookkeeping.
func selfTicks() int64 {
	t, _ := procCPUTicks(os.Getpid())
	return t
}

// profile takes CPU profiles of the given Caddy variants (through their
// admin endpoints) while wrk drives them all at once, into
// dir/<variant><suffix>.pprof. Profiling two variants together puts them
// under the same machine conditions, as the side-by-side runs do.
func (b *bench) profile(vs []*variant, dir, suffix string) error {
	errs := make(chan error, 2*len(vs))
	served := make([]int64, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		if v.admin == "" {
			continue
		}
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", v.admin, int(b.duration.Seconds()))
		wg.Go(func() { errs <- b.saveProfile(url, filepath.Join(dir, v.name+suffix+".pprof")) })
		served[i] = v.up.served.Load()
		wg.Go(func() {
			_, err := b.runWrk(v.url, b.duration+time.Second)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for i, v := range vs {
		if v.admin != "" {
			log.Printf("profile of %s%s: about %d requests", v.name, suffix, v.up.served.Load()-served[i])
		}
	}
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (b *bench) saveProfile(url, path string) error {
	resp, err := (&http.Client{Timeout: b.duration + 30*time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
