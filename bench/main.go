// Command bench measures what the zapier_auth hot path costs next to a bare
// Caddy reverse proxy, with nginx as an outside reference, and writes the
// results (markdown, SVG chart, raw JSON) to a directory. It is what
// `make -f xcaddy.mk bench` runs.
//
//	A: Caddy reverse_proxy adding a static Authorization header
//	B: zapier_auth + the same reverse_proxy, 10,000 distinct identities, all
//	   cached (pre-warmed), a different identity on every request
//	C: nginx with proxy_set_header
//
// wrk drives each in alternating rounds (A B C, then C B A, ...). For every
// round the bench records wrk's requests/s and p50/p99, and the server's CPU
// time (utime+stime from /proc/<pid>/stat) divided by the number of requests
// its upstream port served. The servers are pinned to one CPU and the load
// generator, upstream and this program to another, so the client never takes
// the server's CPU. Rounds during which other processes were busy are
// measured again (the machine is shared).
//
// The per-request CPU of one build drifts by tens of percent within minutes
// on a shared VM, far more than the few µs the plugin costs, so the CPU
// difference is also measured side by side: A and B driven at the same time,
// both servers on the same CPU, where any drift hits both alike.
//
// It then runs the cold path (every identity new, a slow token endpoint) and
// the Go benchmarks of tokencache, jwks and caddymodule.
//
// Last, the budget section (budget.go; about 8 minutes): zapier_actions'
// POST run through the same Caddy binary against the fake Zapier enforcing
// Zapier's documented rate limits with time scaled by -budget-factor, at
// 0.5×, 1×, 2× and 5× the ideal run rate from 50 users in 5 tenants of
// unequal load, with and without run callbacks; results in budget.md,
// budget.json and budget.svg. -section=budget runs only it
// (make -f xcaddy.mk bench BENCH_FLAGS=-section=budget), -section=proxy
// everything else.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed identities.lua
var identitiesLua []byte

type bench struct {
	caddy, wrk, nginx string
	caddyBefore       string // optional second build, measured as B0
	root, outDir      string
	workDir           string
	luaPath           string

	rounds               int
	duration, warmup     time.Duration
	pairs                int
	pairDuration         time.Duration
	connections, threads int
	identities           int
	serverCPUs           string
	portBase             int

	coldInflight   []int
	coldIdentities int
	coldClients    int
	coldLatency    time.Duration

	goBench      bool
	goBenchCount int
	hitRounds    int
	profileDir   string

	// A round during which other processes used more than maxInterference
	// CPUs is measured again, until quietBudget is spent.
	maxInterference float64
	quietBudget     time.Duration
	quietDeadline   time.Time

	up     upstream
	coldUp *endpoint
}

// variant is one server under test.
type variant struct {
	name, title string
	url         string
	srv         *server
	admin       string      // Caddy's admin address (pprof and memory statistics); empty for nginx
	up          *endpoint   // the upstream port only this variant proxies to
	fake        *fakeZapier // the token endpoint of a zapier_auth variant
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	b := &bench{}
	var clientCPUs, coldInflight string
	flag.StringVar(&b.caddy, "caddy", ".build/caddy", "Caddy binary with the plugin (make -f xcaddy.mk build)")
	flag.StringVar(&b.caddyBefore, "caddy-before", "", "optional second Caddy build (e.g. before an optimisation), measured as B0 in the same alternating rounds")
	flag.StringVar(&b.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&b.nginx, "nginx", "", "nginx binary (default: nginx on PATH or /usr/sbin/nginx)")
	flag.StringVar(&b.root, "root", ".", "module root, for the Go benchmarks")
	flag.StringVar(&b.outDir, "out", "bench/results", "where results.md, chart.svg and results.json go")
	flag.IntVar(&b.rounds, "rounds", 6, "measured rounds per variant (alternating; at least 3)")
	flag.DurationVar(&b.duration, "duration", 8*time.Second, "length of one measured wrk run")
	flag.DurationVar(&b.warmup, "warmup", 2*time.Second, "unmeasured wrk run before each measured one")
	flag.IntVar(&b.pairs, "pairs", 20, "side-by-side runs of A and B (and B0 and B) for the CPU difference; 0 skips them")
	flag.DurationVar(&b.pairDuration, "pair-duration", 5*time.Second, "length of one side-by-side run")
	flag.IntVar(&b.connections, "connections", 50, "wrk connections")
	flag.IntVar(&b.threads, "threads", 1, "wrk threads")
	flag.IntVar(&b.identities, "identities", 10_000, "distinct identities B cycles through, all cached")
	flag.StringVar(&b.serverCPUs, "server-cpus", "0", "CPU list the servers are pinned to (taskset); empty: no pinning")
	flag.StringVar(&clientCPUs, "client-cpus", "1", "CPU list wrk, the upstream and this program are pinned to; empty: no pinning")
	flag.IntVar(&b.portBase, "port-base", 18000, "first of the ports the bench listens on (base+2 .. base+25)")
	flag.StringVar(&coldInflight, "cold-inflight", "16,64", "max_inflight values for the cold-path runs; empty skips them")
	flag.IntVar(&b.coldIdentities, "cold-identities", 10_000, "cold identities per cold-path run")
	flag.IntVar(&b.coldClients, "cold-clients", 200, "concurrent clients in the cold-path run")
	flag.DurationVar(&b.coldLatency, "cold-latency", 50*time.Millisecond, "token endpoint latency in the cold-path run")
	flag.BoolVar(&b.goBench, "gobench", true, "run the Go benchmarks (tokencache, jwks, caddymodule)")
	flag.StringVar(&b.profileDir, "profile", "", "also write a CPU profile of each Caddy variant under load to this directory (go tool pprof)")
	flag.IntVar(&b.goBenchCount, "gobench-count", 5, "go test -count for the Go benchmarks (medians are reported)")
	flag.IntVar(&b.hitRounds, "hit-rounds", 9, "rounds of the hot-key cache-hit benchmarks, every size per round, that the flatness goal is judged on; 0 skips them")
	flag.Float64Var(&b.maxInterference, "max-interference", 0.15, "re-run a round when other processes used more than this many CPUs during it; 0 accepts every round")
	flag.DurationVar(&b.quietBudget, "quiet-budget", 15*time.Minute, "total time spent waiting for a quiet machine and re-running noisy rounds; then noisy rounds are kept (and marked)")
	rerender := flag.String("rerender", "", "only rewrite results.md and chart.svg in -out from this results.json")
	section := flag.String("section", "all", "what to measure: proxy (A/B/C, cold path, Go benchmarks), budget (POST run under Zapier's rate limits; see budget.go), all (both), or mcp (cost per MCP tool call, direct vs per-app vs aggregate; see mcp.go; not part of all)")
	bo := budgetOptions{}
	var loads, weights, modes string
	flag.Float64Var(&bo.Factor, "budget-factor", 10, "budget section: Zapier's windows, cooldown and the gateway's durations divided by this (10: one minute = 6 s)")
	flag.IntVar(&bo.Windows, "budget-windows", 5, "budget section: measured windows per load, after one warm-up window")
	flag.StringVar(&loads, "budget-loads", "0.5,1,2,5", "budget section: offered loads, × the ideal run rate (budget ÷ calls per run)")
	flag.StringVar(&modes, "budget-modes", "callbacks,polling,stored", "budget section: gateway configurations: callbacks (run_callback_url), polling (both through /v2/action-runs), stored (stored actions with callbacks)")
	flag.IntVar(&bo.PerIP, "budget-per-ip", 60, "budget section: the fake's per-IP limit per window, and the gateway's per_ip")
	flag.IntVar(&bo.Partner, "budget-partner", 150, "budget section: the fake's partner limit per window, and the gateway's partner")
	flag.IntVar(&bo.GatewayPerIP, "budget-gateway-per-ip", 0, "budget section: the gateway's per_ip when not -budget-per-ip")
	flag.IntVar(&bo.GatewayPartner, "budget-gateway-partner", 0, "budget section: the gateway's partner when not -budget-partner")
	flag.DurationVar(&bo.MaxWait, "budget-max-wait", 10*time.Second, "budget section: api_budget max_wait in Zapier time (divided by -budget-factor)")
	flag.DurationVar(&bo.Delay, "budget-action-delay", 10*time.Second, "budget section: how long a run takes at Zapier, in Zapier time")
	flag.DurationVar(&bo.Wait, "budget-wait", 60*time.Second, "budget section: POST run's wait, in Zapier time")
	flag.DurationVar(&bo.PollInterval, "budget-poll-interval", 500*time.Millisecond, "budget section: poll_interval in Zapier time (the gateway's default)")
	flag.DurationVar(&bo.MaxPollInterval, "budget-max-poll-interval", 5*time.Second, "budget section: max_poll_interval in Zapier time (the gateway's default)")
	flag.DurationVar(&bo.CallbackTimeout, "budget-callback-timeout", 20*time.Second, "budget section: callback_timeout in Zapier time (the gateway's default)")
	flag.DurationVar(&bo.Latency, "budget-latency", 50*time.Millisecond, "budget section: latency the fake adds to every /v2 answer (not scaled)")
	flag.IntVar(&bo.Users, "budget-users", 50, "budget section: users, spread over the tenants")
	flag.IntVar(&bo.Tenants, "budget-tenants", 5, "budget section: tenants")
	flag.StringVar(&weights, "budget-weights", "8,4,2,1,1", "budget section: each tenant's share of the offered load")
	flag.StringVar(&bo.Arrivals, "budget-arrivals", "poisson", "budget section: arrival process, poisson or uniform")
	flag.IntVar(&bo.IdentityLimit, "budget-identity-limit", 20, "budget section: the gateway's rate_limit identity per Zapier minute, scaled (its default 20/1m); 0: off")
	flag.IntVar(&bo.TenantLimit, "budget-tenant-limit", 200, "budget section: the gateway's rate_limit tenant per Zapier minute, scaled (its default 200/1m); 0: off")
	flag.Uint64Var(&bo.Seed, "budget-seed", 1, "budget section: seed of the arrival process")
	flag.StringVar(&bo.Tree, "budget-tree", "", "budget section: the source the Caddy binary was built from, when not -root's checkout (recorded in budget.md)")
	rerenderBudgetJSON := flag.String("rerender-budget", "", "only rewrite budget.md and budget.svg in -out from this budget.json")
	flag.StringVar(&bo.Keep, "budget-keep", "", "budget section (and -rerender-budget): keep the modes this run does not measure from this earlier budget.json (same setup), marked with the run that measured them")
	mo := mcpOptions{}
	var mcpConc string
	flag.IntVar(&mo.Rounds, "mcp-rounds", 5, "mcp section: alternating rounds per mode and concurrency")
	flag.DurationVar(&mo.Duration, "mcp-duration", 5*time.Second, "mcp section: length of one measured run")
	flag.DurationVar(&mo.Warmup, "mcp-warmup", time.Second, "mcp section: unmeasured run before each measured one")
	flag.StringVar(&mcpConc, "mcp-concurrency", "1,50", "mcp section: concurrent sessions (each a different user)")
	flag.StringVar(&mo.Label, "mcp-label", "", "mcp section: results go to mcp-<label>.md and .json in -out")
	flag.StringVar(&mo.Extra, "mcp-extra", "", "mcp section: more zapier_mcp options (e.g. \"token_cache_ttl off\")")
	flag.Parse()
	if *section == "mcp" {
		// The MCP section (mcp.go): direct vs per-app vs aggregate.
		var err error
		if mo.Concurrency, err = parseInts(mcpConc); err != nil {
			log.Fatalf("-mcp-concurrency: %v", err)
		}
		if clientCPUs != "" && runtime.GOOS == "linux" && os.Getenv("BENCH_PINNED") == "" {
			pinSelf(clientCPUs)
		}
		mo.PortBase, mo.ServerCPUs = b.portBase, b.serverCPUs
		if mo.Caddy, err = filepath.Abs(b.caddy); err != nil {
			log.Fatal(err)
		}
		if b.caddyBefore != "" {
			if mo.CaddyBefore, err = filepath.Abs(b.caddyBefore); err != nil {
				log.Fatal(err)
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := runMCPSection(ctx, mo, b.outDir); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *rerender != "" {
		if err := rerenderResults(*rerender, b.outDir); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *rerenderBudgetJSON != "" {
		if err := rerenderBudget(*rerenderBudgetJSON, bo.Keep, b.outDir); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *section != "all" && *section != "proxy" && *section != "budget" {
		log.Fatalf("-section: %q is not proxy, budget or all", *section)
	}
	var err error
	if bo.Loads, err = parseFloats(loads); err != nil {
		log.Fatalf("-budget-loads: %v", err)
	}
	if bo.Weights, err = parseInts(weights); err != nil {
		log.Fatalf("-budget-weights: %v", err)
	}
	for _, m := range strings.Split(modes, ",") {
		if m = strings.TrimSpace(m); m != "callbacks" && m != "polling" && m != "stored" {
			log.Fatalf("-budget-modes: %q is not callbacks, polling or stored", m)
		}
		bo.Modes = append(bo.Modes, strings.TrimSpace(m))
	}
	bo.PortBase = b.portBase

	if clientCPUs != "" && runtime.GOOS == "linux" && os.Getenv("BENCH_PINNED") == "" {
		pinSelf(clientCPUs) // does not return on success
	}
	for _, s := range strings.Split(coldInflight, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			log.Fatalf("-cold-inflight: %q is not a positive number", s)
		}
		b.coldInflight = append(b.coldInflight, n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var proxyErr error
	if *section != "budget" {
		// Its results are written before an error is returned; the budget
		// section still runs after one.
		proxyErr = b.run(ctx)
		if proxyErr != nil && (*section == "proxy" || ctx.Err() != nil) {
			log.Fatal(proxyErr)
		}
	}
	if *section != "proxy" {
		if err := runBudgetSection(ctx, b, bo); err != nil {
			log.Fatal(err)
		}
	}
	if proxyErr != nil {
		log.Fatal(proxyErr)
	}
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// pinSelf re-executes this program under taskset, so every thread of it
// (and wrk, which it starts) stays off the servers' CPU.
func pinSelf(cpus string) {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		log.Printf("taskset not found: not pinning (results will be noisier)")
		return
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatalf("finding this executable: %v", err)
	}
	env := append(os.Environ(), "BENCH_PINNED="+cpus)
	err = syscall.Exec(taskset, append([]string{"taskset", "-c", cpus, self}, os.Args[1:]...), env)
	log.Fatalf("re-executing under taskset: %v", err)
}

func (b *bench) run(ctx context.Context) error {
	var err error
	if b.caddy, err = filepath.Abs(b.caddy); err != nil {
		return err
	}
	if b.caddyBefore != "" {
		if b.caddyBefore, err = filepath.Abs(b.caddyBefore); err != nil {
			return err
		}
	}
	if b.nginx == "" {
		b.nginx = findNginx()
	}
	if b.wrk, err = exec.LookPath(b.wrk); err != nil {
		return fmt.Errorf("wrk is needed (apt-get install wrk): %w", err)
	}
	if b.workDir, err = os.MkdirTemp("", "zapier-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.workDir)
	b.luaPath = filepath.Join(b.workDir, "identities.lua")
	if err := os.WriteFile(b.luaPath, identitiesLua, 0o644); err != nil {
		return err
	}

	env := collectEnv(b)
	log.Printf("%s; load average %s", env.Machine, env.LoadStart)

	defer b.up.close()

	variants, cleanup, err := b.startVariants(ctx)
	defer cleanup()
	if err != nil {
		return err
	}

	for _, v := range variants {
		if v.fake == nil {
			continue
		}
		log.Printf("pre-warming %s with %d identities", v.name, b.identities)
		start := time.Now()
		if err := prewarm(ctx, v.url, b.identities, 32); err != nil {
			return fmt.Errorf("pre-warming %s: %w", v.name, err)
		}
		n := v.fake.Stats().Exchanges
		log.Printf("pre-warmed %s in %s: %d exchanges", v.name, time.Since(start).Round(time.Millisecond), n)
		if n != b.identities {
			return fmt.Errorf("pre-warming %s made %d exchanges for %d identities", v.name, n, b.identities)
		}
	}

	res := &results{Env: env, Identities: b.identities, Connections: b.connections, Threads: b.threads,
		Duration: b.duration.String(), Warmup: b.warmup.String(), ServerCPUs: b.serverCPUs, ClientCPUs: os.Getenv("BENCH_PINNED")}
	b.quietDeadline = time.Now().Add(b.quietBudget)
	for n := 1; n <= b.rounds; n++ {
		// A B C … then … C B A: A and B always run next to each other, and
		// a slow drift of the machine favours neither.
		for k := range variants {
			v := variants[k]
			if n%2 == 0 {
				v = variants[len(variants)-1-k]
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := b.quietRound(ctx, v, n)
			if err != nil {
				return err
			}
			log.Printf("round %d %s: %.0f req/s, p50 %.0f µs, p99 %.0f µs, CPU %.1f µs/req, %.1f allocs %.0f B/req, %d GCs, live heap %.1f MiB (%d requests, server busy %.0f%%, others %.2f CPUs, load %s)",
				n, v.name, r.RPS, r.P50US, r.P99US, r.CPUUS, r.AllocsPerReq, r.BytesPerReq, r.GCs, r.HeapLiveMiB, r.Proxied, 100*r.CPUUtil, r.OtherCPU, r.LoadAvg)
			res.Rounds = append(res.Rounds, r)
		}
	}
	// Side by side: the CPU difference with the host's drift cancelled.
	pairs := [][2]*variant{{variants[0], variants[1]}}
	if len(variants) > 3 {
		pairs = append(pairs, [2]*variant{variants[3], variants[1]})
	}
	for n := 1; n <= b.pairs; n++ {
		for _, pv := range pairs {
			p, err := b.sideBySide(ctx, pv[0], pv[1], n)
			if err != nil {
				return err
			}
			log.Printf("side by side %d: %s %.1f µs/req, %s %.1f µs/req, difference %+.1f µs (others %.2f CPUs)",
				n, p.Base, p.BaseUS, p.Other, p.OtherUS, p.DeltaUS, p.OtherCPU)
			res.Pairs = append(res.Pairs, p)
		}
	}
	if b.profileDir != "" {
		if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
			return err
		}
		for _, v := range variants {
			if err := b.profile([]*variant{v}, b.profileDir, ""); err != nil {
				return fmt.Errorf("profiling %s: %w", v.name, err)
			}
		}
		if err := b.profile(pairs[0][:], b.profileDir, "-side-by-side"); err != nil {
			return fmt.Errorf("profiling A and B side by side: %w", err)
		}
		log.Printf("CPU profiles in %s (go tool pprof -top <file>; A and B side by side: go tool pprof -diff_base A-side-by-side.pprof B-side-by-side.pprof)", b.profileDir)
	}
	for _, v := range variants {
		res.Variants = append(res.Variants, variantInfo{Name: v.name, Title: v.title})
		if v.fake != nil {
			res.MeasureExchanges += v.fake.Stats().Exchanges - b.identities
		}
	}
	cleanup()

	for _, n := range b.coldInflight {
		log.Printf("cold path: %d identities, %d clients, token latency %s, max_inflight %d",
			b.coldIdentities, b.coldClients, b.coldLatency, n)
		c, err := b.cold(ctx, n)
		if err != nil {
			return err
		}
		log.Printf("cold path: %d exchanges in %.2f s (ideal %.2f s, ratio %.2f, %d failed)",
			c.Exchanges, c.WallSeconds, c.IdealSecs, c.Ratio, c.Failed)
		res.Cold = append(res.Cold, c)
	}

	var goBenchErr error
	if b.goBench {
		if b.maxInterference > 0 {
			b.waitQuiet(ctx)
		}
		log.Printf("running the Go benchmarks (-count %d)", b.goBenchCount)
		if res.GoBench, goBenchErr = runGoBenchmarks(ctx, b.root, b.goBenchCount); goBenchErr != nil {
			// Still write the load results: they took most of the run.
			goBenchErr = fmt.Errorf("Go benchmarks: %w", goBenchErr)
			log.Print(goBenchErr)
		}
		if goBenchErr == nil && b.hitRounds > 0 {
			log.Printf("running %d rounds of the cache-hit benchmarks at every size", b.hitRounds)
			if res.HitRounds, goBenchErr = runHitRounds(ctx, b.root, b.hitRounds); goBenchErr != nil {
				goBenchErr = fmt.Errorf("hit rounds: %w", goBenchErr)
				log.Print(goBenchErr)
			}
		}
	}
	res.Env.LoadEnd = loadAvg()
	res.summarize()
	if err := res.write(b.outDir); err != nil {
		return err
	}
	fmt.Println()
	fmt.Print(res.markdown())
	log.Printf("results written to %s", b.outDir)
	return goBenchErr
}

// startVariants starts A, B and C (and B0 with -caddy-before), each
// zapier_auth variant with its own fake Zapier.
func (b *bench) startVariants(ctx context.Context) ([]*variant, func(), error) {
	var variants []*variant
	cleanup := func() {
		for _, v := range variants {
			if v.srv != nil {
				v.srv.stop()
			}
			if v.fake != nil {
				v.fake.close()
			}
		}
		variants = nil
	}
	addr := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", b.portBase+off) }
	add := func(name, title, listen string, srv *server, up *endpoint, fake *fakeZapier) {
		variants = append(variants, &variant{name: name, title: title, url: "http://" + listen + "/zapier/api/v2/echo", srv: srv, up: up, fake: fake})
	}
	// Each Caddy gets an admin endpoint on localhost: /debug/pprof gives
	// its allocation and GC counts for every round, and CPU profiles.
	admin := func(k int) string { return addr(30 + k) }
	// gateway starts a zapier_auth variant: a fake Zapier, then Caddy.
	gateway := func(name, title, binary string, listen, fakeAddr string, up *endpoint) error {
		fz, err := startFakeZapier(fakeAddr, "http://"+listen+"/.well-known/jwks.json")
		if err != nil {
			return err
		}
		k := len(variants)
		srv, err := b.startCaddy(name, binary, caddyfileB(listen, up.addr, fakeAddr, admin(k), 16))
		add(name, title, listen, srv, up, fz)
		variants[k].admin = admin(k)
		return err
	}
	ups := make([]*endpoint, 4)
	for i := range ups {
		var err error
		if ups[i], err = b.up.listen(addr(21 + i)); err != nil {
			return nil, cleanup, err
		}
	}

	srv, err := b.startCaddy("A", b.caddy, caddyfileA(addr(10), ups[0].addr, admin(0)))
	if err != nil {
		return nil, cleanup, err
	}
	add("A", "Caddy reverse_proxy + static header", addr(10), srv, ups[0], nil)
	variants[0].admin = admin(0)
	if err := gateway("B", "zapier_auth + reverse_proxy (cache hit)", b.caddy, addr(11), addr(2), ups[1]); err != nil {
		return nil, cleanup, err
	}

	nginxDir := filepath.Join(b.workDir, "nginx")
	if err := os.MkdirAll(nginxDir, 0o755); err != nil {
		return nil, cleanup, err
	}
	conf := filepath.Join(nginxDir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(nginxDir, addr(12), ups[2].addr)), 0o644); err != nil {
		return nil, cleanup, err
	}
	srv, err = startServer("C", b.workDir, b.serverCPUs, nil, b.nginx, "-p", nginxDir, "-c", conf, "-e", filepath.Join(nginxDir, "error.log"))
	if err != nil {
		return nil, cleanup, err
	}
	srv.withChildren = true
	add("C", "nginx proxy_set_header", addr(12), srv, ups[2], nil)

	if b.caddyBefore != "" {
		if err := gateway("B0", "B built from -caddy-before", b.caddyBefore, addr(14), addr(4), ups[3]); err != nil {
			return nil, cleanup, err
		}
	}

	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, v := range variants {
		if err := waitReady(readyCtx, strings.Replace(v.url, "/zapier/api/v2/echo", "/.well-known/jwks.json", 1), v.srv); err != nil {
			return nil, cleanup, err
		}
	}
	return variants, cleanup, nil
}

// startCaddy runs the Caddy binary on a Caddyfile, with its own data and
// config directories (B's signing keys live there).
func (b *bench) startCaddy(name, binary, caddyfile string) (*server, error) {
	dir := filepath.Join(b.workDir, "caddy-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	env := []string{"XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "HOME=" + dir}
	return startServer("caddy-"+name, b.workDir, b.serverCPUs, env, binary, "run", "--config", path, "--adapter", "caddyfile")
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	return "/usr/sbin/nginx"
}
