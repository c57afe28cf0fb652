package main

// The budget section (-section=budget): POST run through the real Caddy
// binary against the fake Zapier with its documented rate limits, time
// scaled by -budget-factor, at offered loads of 0.5×, 1×, 2× and 5× the
// ideal run rate, with run callbacks, polling (both through
// /v2/action-runs) and through stored actions with callbacks. See
// budget_report.go for what is recorded and how the goals are judged.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// The app every user connects and runs.
const (
	budgetApp     = "SlackCLIAPI"
	budgetAppUUID = "81f613aa-c98a-4383-a5fc-195e68647217"
	budgetAction  = "send_message"
)

// budgetOptions are the section's flags. Durations are Zapier's (the
// documented minute); they are divided by Factor on this run's clock.
type budgetOptions struct {
	Factor          float64
	Windows         int
	Loads           []float64
	Modes           []string // "callbacks", "polling", "stored"
	PerIP, Partner  int      // the fake's limits per window (Zapier's documented 60 and 150)
	GatewayPerIP    int      // the gateway's api_budget; default the same
	GatewayPartner  int
	MaxWait         time.Duration // Zapier time; default 10s (the gateway's default)
	Delay           time.Duration // the action's run time, Zapier time
	Wait            time.Duration // POST run's wait, Zapier time
	PollInterval    time.Duration // Zapier time; the gateway's defaults 500ms/5s
	MaxPollInterval time.Duration
	CallbackTimeout time.Duration // Zapier time; the gateway's default 20s
	Latency         time.Duration // real, on every /v2 answer
	Users, Tenants  int
	Weights         []int
	Arrivals        string // poisson or uniform
	Seed            uint64
	PortBase        int
	// The gateway's end-user rate limits (rate_limit identity/tenant), per
	// Zapier minute and scaled like the rest; 0 turns one off.
	IdentityLimit, TenantLimit int
	Tree                       string
	Keep                       string // an earlier budget.json whose other modes are kept
}

func (o budgetOptions) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) / o.Factor)
}

func (o budgetOptions) window() time.Duration { return o.scaled(time.Minute) }

// budgetRun is one section run.
type budgetRun struct {
	opts    budgetOptions
	caddy   string
	cpus    string
	workDir string
}

func runBudgetSection(ctx context.Context, b *bench, o budgetOptions) error {
	if o.Factor < 1 || o.Windows < 1 || o.Users < o.Tenants || o.Tenants < 1 || len(o.Weights) != o.Tenants || len(o.Loads) == 0 {
		return fmt.Errorf("budget section: bad options (factor ≥ 1, windows ≥ 1, users ≥ tenants, one weight per tenant): %+v", o)
	}
	o.GatewayPerIP = cmpInt(o.GatewayPerIP, o.PerIP)
	o.GatewayPartner = cmpInt(o.GatewayPartner, o.Partner)
	caddyBin, err := filepath.Abs(b.caddy)
	if err != nil {
		return err
	}
	b.caddy = caddyBin
	work, err := os.MkdirTemp("", "zapier-bench-budget-")
	if err != nil {
		return err
	}
	r := &budgetRun{opts: o, caddy: caddyBin, cpus: b.serverCPUs, workDir: work}
	keep := true // the gateways' logs stay when the section fails
	defer func() {
		if keep {
			log.Printf("budget: gateway logs kept in %s", work)
			return
		}
		os.RemoveAll(work)
	}()

	res := &budgetResults{Env: collectEnv(b)}
	if o.Tree != "" {
		res.Env.Tree = o.Tree
	}
	res.Config = budgetConfig{
		Factor: o.Factor, WindowScaledMS: ms(o.window()), PerIP: o.PerIP, Partner: o.Partner,
		GatewayPerIP: o.GatewayPerIP, GatewayPartner: o.GatewayPartner,
		MaxWaitScaledMS: ms(o.scaled(o.MaxWait)), APILatencyMS: ms(o.Latency), DelayScaledMS: ms(o.scaled(o.Delay)),
		WaitScaledMS: ms(o.scaled(o.Wait)), PollScaledMS: []float64{ms(o.scaled(o.PollInterval)), ms(o.scaled(o.MaxPollInterval))},
		CallbackTimeout: ms(o.scaled(o.CallbackTimeout)), Users: o.Users, Tenants: o.Tenants, Weights: o.Weights,
		Windows: o.Windows, Loads: o.Loads, Arrivals: o.Arrivals, IdentityLimit: o.IdentityLimit, TenantLimit: o.TenantLimit,
		WaitSource: "caddy_zapier_budget_wait_seconds from the gateway's /metrics (admin endpoint), difference over each level, " +
			"interpolated within its buckets (…, 500 ms, 1 s, 2.5 s, …) as Prometheus's histogram_quantile does; it observes granted requests only",
	}
	log.Printf("budget: %s", res.Env.Machine)
	for _, name := range o.Modes {
		m, err := r.mode(ctx, name)
		if err != nil {
			return fmt.Errorf("budget section, %s: %w", name, err)
		}
		res.Modes = append(res.Modes, *m)
	}
	keep = false
	res.Env.LoadEnd = loadAvg()
	if o.Keep != "" {
		if err := res.keepModes(o.Keep); err != nil {
			return err
		}
	}
	if err := res.write(b.outDir); err != nil {
		return err
	}
	fmt.Println()
	fmt.Print(res.markdown())
	log.Printf("budget results written to %s (budget.md, budget.json, budget.svg)", b.outDir)
	return nil
}

func cmpInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// insecureClient trusts any certificate: the gateway's comes from Caddy's
// internal CA (tls internal).
func insecureClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the bench's own gateway
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}
}

type budgetGateway struct {
	base, admin string
	fake        *fakezapier.Server
	fakeSrv     *http.Server
	srv         *server
}

func (g *budgetGateway) close() {
	if g.srv != nil {
		g.srv.stop()
	}
	if g.fakeSrv != nil {
		_ = g.fakeSrv.Close()
	}
	if g.fake != nil {
		g.fake.Close()
	}
}

// start runs the fake and the gateway for one mode.
func (r *budgetRun) start(ctx context.Context, mode string) (*budgetGateway, error) {
	o := r.opts
	addr := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", o.PortBase+off) }
	httpsAddr, httpAddr, adminAddr, fakeAddr := addr(40), addr(41), addr(42), addr(43)
	g := &budgetGateway{base: "https://" + httpsAddr, admin: "http://" + adminAddr}

	limits := fakezapier.RateLimits{PerIP: o.PerIP, PerPartner: o.Partner}.Scaled(o.Factor)
	insecure := insecureClient(10 * time.Second)
	g.fake = fakezapier.New(fakezapier.Config{
		ClientID: benchClientID, ClientSecret: benchClientSecret, Issuer: benchIssuer,
		JWKSURL:            g.base + "/.well-known/jwks.json",
		AccessTokenTTL:     24 * time.Hour,
		MaxRecorded:        200_000, // every /v2 call, for the per-tenant counts
		RateLimits:         &limits,
		HTTPClient:         insecure,
		CallbackAllowHosts: []string{"127.0.0.1"},
		CallbackHTTPClient: insecure,
	})
	g.fake.SetAPILatency(o.Latency)
	g.fake.RegisterApp(budgetApp, budgetAppUUID)
	g.fake.SetActions(budgetAppUUID, fakezapier.ActionSpec{Key: budgetAction, Title: "Send Channel Message",
		Delay: o.scaled(o.Delay), Inputs: []map[string]any{fakezapier.InputField("text", "Text", true)}})
	ln, err := net.Listen("tcp", fakeAddr)
	if err != nil {
		g.close()
		return nil, fmt.Errorf("listening for the fake Zapier: %w", err)
	}
	g.fakeSrv = &http.Server{Handler: g.fake, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = g.fakeSrv.Serve(ln) }()

	name := "budget-" + mode
	dir := filepath.Join(r.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		g.close()
		return nil, err
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(r.caddyfile(mode, httpsAddr, httpAddr, adminAddr, fakeAddr)), 0o644); err != nil {
		g.close()
		return nil, err
	}
	env := []string{"XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "HOME=" + dir}
	if g.srv, err = startServer("caddy-"+name, r.workDir, r.cpus, env, r.caddy, "run", "--config", path, "--adapter", "caddyfile"); err != nil {
		g.close()
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := insecureClient(2 * time.Second)
	for {
		resp, err := client.Get(g.base + "/.well-known/jwks.json")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		if g.srv.cmd.ProcessState != nil {
			g.close()
			return nil, fmt.Errorf("%s exited; see %s", g.srv.name, g.srv.log.Name())
		}
		select {
		case <-readyCtx.Done():
			logTail := tail(g.srv.log.Name(), 20)
			g.close()
			return nil, fmt.Errorf("gateway did not answer on %s: %v\n%s", g.base, err, logTail)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// caddyfile is the gateway: zapier_connect for the redirect flow that
// stores each user's connection, zapier_actions for POST run, on HTTPS
// with Caddy's internal CA (a callback_url must be https). The callbacks
// and polling modes run through /v2/action-runs (run_via action_runs), the
// stored mode through stored actions with callbacks (run_via stored).
func (r *budgetRun) caddyfile(mode, httpsAddr, httpAddr, adminAddr, fakeAddr string) string {
	o := r.opts
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	_, httpPort, _ := net.SplitHostPort(httpAddr)
	base := "https://" + httpsAddr
	cb := "run_via action_runs"
	if mode != "polling" {
		cb = fmt.Sprintf("run_callback_url %s/zapier/actions/callback\n\t\t\tcallback_jwks_url http://%s%s\n\t\t\tcallback_issuer %s\n\t\t\tcallback_timeout %s",
			base, fakeAddr, fakezapier.CallbackJWKSPath, fakezapier.CallbackIssuer, o.scaled(o.CallbackTimeout))
		if mode == "stored" {
			cb += "\n\t\t\trun_via stored"
		} else {
			cb += "\n\t\t\trun_via action_runs"
		}
	}
	return fmt.Sprintf(`{
	admin %[1]s
	http_port %[2]s
	https_port %[3]s
	persist_config off
	skip_install_trust
	zapier {
		client_id %[4]s
		client_secret %[5]s
		issuer %[6]s
		token_url http://%[7]s/oauth/token
		api_url http://%[7]s
		connect_url http://%[7]s
		callback_url %[8]s/zapier/connect/callback
		return_origins %[8]s
		api_budget {
			per_ip %[9]d/%[10]s
			partner %[11]d/%[10]s
			max_wait %[12]s
		}
		rate_limit {
			identity %[18]s
			tenant %[19]s
		}
	}
}

%[8]s {
	tls internal
	zapier_jwks /.well-known/jwks.json
	handle_path /zapier/connect/* {
		zapier_connect {
			app %[13]s %[14]s
		}
	}
	handle_path /zapier/actions/* {
		zapier_actions {
			app %[13]s %[14]s
			poll_interval %[15]s
			max_poll_interval %[16]s
			%[17]s
		}
	}
}
`, adminAddr, httpPort, httpsPort, benchClientID, benchClientSecret, benchIssuer, fakeAddr, base,
		o.GatewayPerIP, o.window(), o.GatewayPartner, o.scaled(o.MaxWait), budgetApp, budgetAppUUID,
		o.scaled(o.PollInterval), o.scaled(o.MaxPollInterval), cb, perWindow(o.IdentityLimit, o.window()), perWindow(o.TenantLimit, o.window()))
}

// perWindow is a rate_limit value: "<n> <window>", or off for 0.
func perWindow(n int, window time.Duration) string {
	if n <= 0 {
		return "off"
	}
	return fmt.Sprintf("%d %s", n, window)
}

type budgetUser struct{ tenant, user string }

func (r *budgetRun) users() [][]budgetUser {
	o := r.opts
	out := make([][]budgetUser, o.Tenants)
	for i := range o.Users {
		t := i % o.Tenants
		out[t] = append(out[t], budgetUser{tenant: fmt.Sprintf("tenant-%d", t+1), user: fmt.Sprintf("user-%02d", i+1)})
	}
	return out
}

// connect runs the redirect Connect flow for u as a browser would, with the
// identity headers a partner front end adds: start → Connect UI (the fake
// approves) → the gateway's callback, which verifies and stores the
// connection. A step refused for lack of budget is retried after its
// Retry-After.
func (g *budgetGateway) connect(ctx context.Context, u budgetUser) error {
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		retry, err := g.connectOnce(u)
		if err == nil {
			return nil
		}
		last = err
		if retry <= 0 {
			retry = 500 * time.Millisecond
		}
		time.Sleep(retry)
	}
	return fmt.Errorf("connecting %s/%s: %w", u.tenant, u.user, last)
}

func (g *budgetGateway) connectOnce(u budgetUser) (time.Duration, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return 0, err
	}
	browser := insecureClient(30 * time.Second)
	browser.Jar = jar
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(rawURL string, identity bool) (string, time.Duration, error) {
		req, err := http.NewRequest(http.MethodGet, rawURL, nil)
		if err != nil {
			return "", 0, err
		}
		if identity {
			req.Header.Set("X-Zapier-Tenant", u.tenant)
			req.Header.Set("X-Zapier-User", u.user)
		}
		resp, err := browser.Do(req)
		if err != nil {
			return "", 0, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			return "", time.Duration(ra) * time.Second, fmt.Errorf("GET %s: %d %s", req.URL.Path, resp.StatusCode, bytes.TrimSpace(body))
		}
		return resp.Header.Get("Location"), 0, nil
	}
	toConnect, ra, err := get(g.base+"/zapier/connect/start?app="+budgetApp+"&return_to=/done", true)
	if err != nil {
		return ra, err
	}
	callback, ra, err := get(toConnect, false)
	if err != nil {
		return ra, err
	}
	doneURL, ra, err := get(callback, true)
	if err != nil {
		return ra, err
	}
	done, err := url.Parse(doneURL)
	if err != nil {
		return 0, err
	}
	if q := done.Query(); done.Path != "/done" || q.Get("zapier_connect") != "success" || q.Get("zapier_connection_id") == "" {
		return 0, fmt.Errorf("connect flow ended at %s", done)
	}
	return 0, nil
}

// apiPath reports whether p is a Zapier API route the budget counts: the
// Workflow API (/v2) or the Actions API's stored actions (/actions/v1).
func apiPath(p string) bool {
	return strings.HasPrefix(p, "/v2") || strings.HasPrefix(p, "/actions/v1/")
}

// storedRunPath reports whether p is a stored action's run route.
func storedRunPath(p string) bool {
	return strings.HasPrefix(p, "/actions/v1/stored-actions/") && strings.HasSuffix(p, "/run")
}

func v2Calls(counts map[string]int) int {
	n := 0
	for k, v := range counts {
		if _, p, _ := strings.Cut(k, " "); apiPath(p) {
			n += v
		}
	}
	return n
}

// mode measures one gateway configuration at every load.
func (r *budgetRun) mode(ctx context.Context, name string) (*budgetMode, error) {
	o := r.opts
	m := &budgetMode{Name: name, Callbacks: name != "polling"}
	switch name {
	case "stored":
		m.CallsPerRun = 1 // at steady state: each user's first run also creates the stored action
	case "callbacks":
		m.CallsPerRun = 2
	default:
		m.ExpectedPolls = expectedPolls(o.scaled(o.Delay), o.scaled(o.PollInterval), o.scaled(o.MaxPollInterval), o.Latency)
		m.CallsPerRun = float64(2 + m.ExpectedPolls)
	}
	m.IdealPerMin = idealRunsPerMin(o.PerIP, o.Partner, m.CallsPerRun)
	log.Printf("budget %s: ideal %.1f runs per Zapier minute (%g calls per run); starting the fake and the gateway", m.Name, m.IdealPerMin, m.CallsPerRun)

	g, err := r.start(ctx, name)
	if err != nil {
		return nil, err
	}
	defer g.close()

	start := time.Now()
	tenants := r.users()
	for _, us := range tenants {
		for _, u := range us {
			if err := g.connect(ctx, u); err != nil {
				return nil, err
			}
		}
	}
	m.ConnectCalls = v2Calls(g.fake.CallCounts())
	log.Printf("budget %s: %d users connected in %s (%d /v2 calls, %d 429s)", m.Name, o.Users,
		time.Since(start).Round(time.Millisecond), m.ConnectCalls, g.fake.ThrottledCount())
	if name == "stored" {
		// Steady state: each user's first run creates its stored action
		// (and looks the action's type up); that is done here, once.
		before := v2Calls(g.fake.CallCounts())
		if err := r.warmUp(ctx, g, tenants); err != nil {
			return nil, err
		}
		m.WarmupCalls = v2Calls(g.fake.CallCounts()) - before
		log.Printf("budget %s: one run per user created the stored actions (%d calls, %d 429s)", m.Name, m.WarmupCalls, g.fake.ThrottledCount())
	}

	maxLoad := 0.0
	for _, l := range o.Loads {
		maxLoad = math.Max(maxLoad, l)
	}
	for i, load := range o.Loads {
		// A quiet window first, so each level starts with the budget the
		// previous one left unspent, not borrowed.
		if err := sleepCtx(ctx, o.window()+o.window()/10); err != nil {
			return nil, err
		}
		l, err := r.level(ctx, g, m, tenants, load, uint64(i))
		if err != nil {
			return nil, err
		}
		l.evaluate(m, o.scaled(o.MaxWait), maxLoad)
		met, total := l.goalsMet()
		log.Printf("budget %s %g×: offered %.1f/min, completed %.1f/min (%.2f of ideal), %d 429s, %.2f calls/run, Jain %.3f, p99 wait %.0f ms, 200/202/503 %d/%d/%d, %d client errors, created %d answered %d; goals %d/%d",
			m.Name, load, l.OfferedPerMin, l.CompletedPerMin, l.Ratio, l.Throttled, l.CallsPerRun, l.Jain, l.WaitP99MS,
			l.OK, l.Accepted, l.Shed, l.ClientErrors, l.RunsCreated, l.RunsAnswered, met, total)
		m.Levels = append(m.Levels, *l)
	}
	return m, nil
}

// warmUp runs the action once for every user, a few at a time, until each
// is answered 200 (a 503 waits its Retry-After).
func (r *budgetRun) warmUp(ctx context.Context, g *budgetGateway, tenants [][]budgetUser) error {
	client := insecureClient(2 * time.Minute)
	defer client.CloseIdleConnections()
	var users []budgetUser
	for _, us := range tenants {
		users = append(users, us...)
	}
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for attempt := 0; attempt < 50; attempt++ {
				a := postRun(ctx, client, g.base, u, r.opts.scaled(r.opts.Wait), -1-i)
				switch {
				case a.err != nil:
					errs <- a.err
					return
				case a.status == http.StatusOK || a.status == http.StatusAccepted:
					return
				case a.status == http.StatusServiceUnavailable || a.status == http.StatusTooManyRequests:
					if err := sleepCtx(ctx, time.Duration(max(a.retryAfter, 1))*time.Second); err != nil {
						errs <- err
						return
					}
				default:
					errs <- fmt.Errorf("warm-up run of %s: HTTP %d %s", u.user, a.status, a.code)
					return
				}
			}
			errs <- fmt.Errorf("warm-up run of %s: refused 50 times", u.user)
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runAnswer is what the bench saw of one POST run.
type runAnswer struct {
	tenant     int
	at         time.Duration // sent, from the level's start
	status     int
	retryAfter int // seconds; -1 without the header
	runID      string
	runStatus  string
	code       string
	latency    time.Duration
	err        error
}

// arrivals is the level's send times and tenants: a Poisson (or evenly
// spaced) stream at rate per second, tenants by smooth weighted round
// robin, so each gets exactly its weight's share.
func arrivals(rate float64, span time.Duration, weights []int, poisson bool, seed uint64) ([]time.Duration, []int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var at []time.Duration
	var who []int
	current := make([]int, len(weights))
	total := 0
	for _, w := range weights {
		total += w
	}
	t := 0.0
	for {
		gap := 1 / rate
		if poisson {
			gap = rng.ExpFloat64() / rate
		}
		t += gap
		d := time.Duration(t * float64(time.Second))
		if d >= span {
			return at, who
		}
		best := 0
		for i, w := range weights {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		at = append(at, d)
		who = append(who, best)
	}
}

// level drives one offered load for a warm-up window and o.Windows measured
// windows, waits for every answer and reads what the fake and the gateway
// counted.
func (r *budgetRun) level(ctx context.Context, g *budgetGateway, m *budgetMode, tenants [][]budgetUser, load float64, seq uint64) (*budgetLevel, error) {
	o := r.opts
	win := o.window()
	ratePerSec := load * m.IdealPerMin / win.Seconds()
	span := time.Duration(o.Windows+1) * win
	at, who := arrivals(ratePerSec, span, o.Weights, o.Arrivals != "uniform", o.Seed+seq*7919+boolSeed(m.Callbacks))

	countsBefore := g.fake.CallCounts()
	throttledBefore := g.fake.ThrottledCount()
	runsBefore := map[string]bool{}
	for _, run := range g.fake.ActionRuns() {
		runsBefore[run.ID] = true
	}
	delivBefore := deliveredCallbacks(g.fake)
	metricsBefore, err := scrapeBudgetMetrics(g.admin)
	if err != nil {
		return nil, err
	}

	wait := o.scaled(o.Wait)
	client := insecureClient(wait + 30*time.Second)
	next := make([]int, len(tenants))
	answers := make([]runAnswer, len(at))
	var wg sync.WaitGroup
	begin := time.Now()
	log.Printf("budget %s %g×: %d requests over %s (%.2f/s)", m.Name, load, len(at), span, ratePerSec)
	for i := range at {
		if err := sleepCtx(ctx, time.Until(begin.Add(at[i]))); err != nil {
			return nil, err
		}
		t := who[i]
		u := tenants[t][next[t]%len(tenants[t])]
		next[t]++
		wg.Add(1)
		go func(i int, u budgetUser, t int) {
			defer wg.Done()
			answers[i] = postRun(ctx, client, g.base, u, wait, i)
			answers[i].tenant, answers[i].at = t, at[i]
		}(i, u, t)
	}
	wg.Wait()
	// Callbacks of runs answered 202 may still come; they cost no /v2 call.
	_ = sleepCtx(ctx, o.scaled(o.Delay)+200*time.Millisecond)
	client.CloseIdleConnections()

	metricsAfter, err := scrapeBudgetMetrics(g.admin)
	if err != nil {
		return nil, err
	}
	countsAfter := g.fake.CallCounts()
	end := time.Now()

	l := &budgetLevel{Load: load, Requests: len(at), OtherStatus: map[string]int{}, CallsByRoute: map[string]int{},
		TenantOffered: make([]int, len(tenants)), TenantCompleted: make([]int, len(tenants)), BudgetShed: map[string]int{}}
	l.Throttled = g.fake.ThrottledCount() - throttledBefore
	for k, v := range countsAfter {
		if d := v - countsBefore[k]; d != 0 {
			if _, p, _ := strings.Cut(k, " "); apiPath(p) {
				l.CallsByRoute[k] = d
				l.V2Calls += d
			}
		}
	}
	created := map[string]bool{}
	for _, run := range g.fake.ActionRuns() {
		if !runsBefore[run.ID] {
			created[run.ID] = true
		}
	}
	l.RunsCreated = len(created)
	r.tenantCalls(l, g.fake.Requests(), begin, end)
	l.Callbacks = deliveredCallbacks(g.fake) - delivBefore

	measureFrom := win
	answered := map[string]int{}
	var latencies []float64
	for _, a := range answers {
		measured := a.at >= measureFrom
		if measured {
			l.Measured++
			l.TenantOffered[a.tenant]++
		}
		switch {
		case a.err != nil:
			l.ClientErrors++
			if l.ClientErrors <= 3 {
				log.Printf("budget %s %g×: client error: %v", m.Name, load, a.err)
			}
			continue
		case a.status == http.StatusOK || a.status == http.StatusAccepted:
			if a.runID != "" {
				answered[a.runID]++
			}
			if a.status == http.StatusAccepted {
				l.Accepted++
				continue
			}
			l.OK++
			if a.runStatus != "success" {
				l.RunErrors++
				continue
			}
			l.CompletedAll++
			latencies = append(latencies, ms(a.latency))
			if measured {
				l.Completed++
				l.TenantCompleted[a.tenant]++
			}
		case a.status == http.StatusServiceUnavailable && a.retryAfter >= 0:
			l.Shed++
			l.RetryAfterMaxS = max(l.RetryAfterMaxS, a.retryAfter)
		case a.status == http.StatusServiceUnavailable:
			l.ShedNoRetry++
		default:
			l.OtherStatus[fmt.Sprintf("%d %s", a.status, a.code)]++
		}
	}
	l.RunsAnswered = len(answered)
	for id, n := range answered {
		if n > 1 {
			l.DuplicateRuns += n - 1
		}
		if !created[id] {
			l.UnknownRuns++
		}
	}
	measuredMin := float64(o.Windows) // each window is one Zapier minute
	l.OfferedPerMin = float64(l.Measured) / measuredMin
	l.CompletedPerMin = float64(l.Completed) / measuredMin
	l.Ratio = ratio(l.CompletedPerMin, m.IdealPerMin)
	l.CallsPerRun = ratio(float64(l.V2Calls), float64(l.CompletedAll))
	fair := make([]float64, len(l.TenantCompleted))
	for i, c := range l.TenantCompleted {
		fair[i] = float64(c)
	}
	l.Jain = jain(fair)
	l.LatencyP50MS, l.LatencyP99MS = quantileOf(latencies, 0.5), quantileOf(latencies, 0.99)

	les, cum := metricsAfter.waitDelta(metricsBefore)
	if p99, le, ok := histQuantile(0.99, les, cum); ok {
		l.WaitP99MS, l.WaitP99Le = p99*1000, le
		l.WaitCount = int(cum[len(cum)-1])
		l.WaitMaxLe = histMaxBucket(les, cum)
	}
	for reason, v := range metricsAfter.shed {
		if d := int(v - metricsBefore.shed[reason]); d != 0 {
			l.BudgetShed[reason] = d
		}
	}
	return l, nil
}

// tenantCalls counts the level's /v2 calls per tenant and route from what
// the fake recorded: where each tenant's share of the budget went.
func (r *budgetRun) tenantCalls(l *budgetLevel, recs []fakezapier.RecordedRequest, begin, end time.Time) {
	n := r.opts.Tenants
	l.TenantCalls, l.TenantLookups, l.TenantCreates, l.TenantPolls = make([]int, n), make([]int, n), make([]int, n), make([]int, n)
	for _, rec := range recs {
		if rec.Time.Before(begin) || !rec.Time.Before(end) {
			continue
		}
		num, ok := strings.CutPrefix(rec.Tenant, "tenant-")
		t, err := strconv.Atoi(num)
		if !ok || err != nil || t < 1 || t > n {
			continue
		}
		t--
		l.TenantCalls[t]++
		p := strings.TrimSuffix(rec.Path, "/")
		switch {
		case rec.Method == http.MethodGet && p == "/v2/actions",
			rec.Method == http.MethodPost && p == "/actions/v1/stored-actions": // a stored action's create
			l.TenantLookups[t]++
		case rec.Method == http.MethodPost && (p == "/v2/action-runs" || storedRunPath(p)):
			l.TenantCreates[t]++
		case rec.Method == http.MethodGet && (strings.HasPrefix(p, "/v2/action-runs/") || strings.Contains(p, "/runs/")):
			l.TenantPolls[t]++
		}
	}
	// How evenly the calls spread over the level: the most in any tenth
	// of a window, against the tenth's share of the budget.
	var times []time.Time
	for _, rec := range recs {
		if !rec.Time.Before(begin) && rec.Time.Before(end) {
			times = append(times, rec.Time)
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	l.PeakTenthCalls = peakIn(times, r.opts.window()/10)
	l.PeakWindowCalls = peakIn(times, r.opts.window())
	for _, rec := range recs {
		if rec.Status == http.StatusTooManyRequests && !rec.Time.Before(begin) && rec.Time.Before(end) {
			// How many calls reached the fake in the window before it.
			n := 0
			for _, t := range times {
				if t.After(rec.Time.Add(-r.opts.window())) && !t.After(rec.Time) {
					n++
				}
			}
			l.ThrottledAt = append(l.ThrottledAt, fmt.Sprintf("%.3fs after the level's start, %d arrivals in the window before it", rec.Time.Sub(begin).Seconds(), n))
		}
	}
	calls := make([]float64, n)
	for i, c := range l.TenantCalls {
		calls[i] = float64(c)
	}
	l.CallJain = jain(calls)
}

// peakIn is the most of the sorted times that fall in any span of length d.
func peakIn(times []time.Time, d time.Duration) int {
	best, lo := 0, 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func boolSeed(b bool) uint64 {
	if b {
		return 1 << 20
	}
	return 0
}

func deliveredCallbacks(f *fakezapier.Server) int {
	n := 0
	for _, d := range f.CallbackDeliveries() {
		if d.Delivered {
			n++
		}
	}
	return n
}

// postRun sends one POST run as u and reads the answer.
func postRun(ctx context.Context, client *http.Client, base string, u budgetUser, wait time.Duration, n int) runAnswer {
	body, _ := json.Marshal(map[string]any{
		"app": budgetApp, "action": budgetAction,
		"inputs": map[string]string{"text": fmt.Sprintf("bench message %d", n)},
		"wait":   wait.String(),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/zapier/actions/run", bytes.NewReader(body))
	if err != nil {
		return runAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Zapier-Tenant", u.tenant)
	req.Header.Set("X-Zapier-User", u.user)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return runAnswer{err: err, latency: time.Since(start)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := runAnswer{status: resp.StatusCode, latency: time.Since(start), retryAfter: -1, err: err}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v >= 0 {
			a.retryAfter = v
		}
	}
	var v struct {
		Run struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"run"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &v) == nil {
		a.runID, a.runStatus, a.code = v.Run.ID, v.Run.Status, v.Error.Code
	}
	if (a.status == http.StatusOK || a.status == http.StatusAccepted) && a.runID == "" && a.err == nil {
		a.err = fmt.Errorf("%d without a run: %.200s", a.status, data)
	}
	return a
}

// budgetMetrics is what the gateway's /metrics says about the budget.
type budgetMetrics struct {
	buckets map[float64]float64 // le → cumulative count
	shed    map[string]float64
}

func scrapeBudgetMetrics(admin string) (budgetMetrics, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		return budgetMetrics{}, fmt.Errorf("gateway /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return budgetMetrics{}, fmt.Errorf("gateway /metrics: %d", resp.StatusCode)
	}
	return parseBudgetMetrics(resp.Body)
}

// parseBudgetMetrics reads caddy_zapier_budget_wait_seconds_bucket and
// caddy_zapier_budget_shed_total from a Prometheus text exposition.
func parseBudgetMetrics(rd io.Reader) (budgetMetrics, error) {
	m := budgetMetrics{buckets: map[float64]float64{}, shed: map[string]float64{}}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var labels, value string
		switch {
		case strings.HasPrefix(line, "caddy_zapier_budget_wait_seconds_bucket{"):
			labels, value = splitSample(line)
			le := labelValue(labels, "le")
			x, err := strconv.ParseFloat(le, 64) // also "+Inf"
			if err != nil {
				return m, fmt.Errorf("bucket %q: %w", line, err)
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return m, fmt.Errorf("bucket %q: %w", line, err)
			}
			m.buckets[x] = v
		case strings.HasPrefix(line, "caddy_zapier_budget_shed_total{"):
			labels, value = splitSample(line)
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return m, fmt.Errorf("shed %q: %w", line, err)
			}
			m.shed[labelValue(labels, "reason")] = v
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if len(m.buckets) == 0 {
		return m, errors.New("the gateway's /metrics has no caddy_zapier_budget_wait_seconds histogram (is api_budget on?)")
	}
	return m, nil
}

func splitSample(line string) (labels, value string) {
	open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || end < open {
		return "", ""
	}
	fields := strings.Fields(line[end+1:])
	if len(fields) == 0 {
		return line[open+1 : end], ""
	}
	return line[open+1 : end], fields[0]
}

func labelValue(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// waitDelta is the histogram's buckets observed since before, in ascending
// order of their upper bounds.
func (m budgetMetrics) waitDelta(before budgetMetrics) (les, cum []float64) {
	for le := range m.buckets {
		les = append(les, le)
	}
	slices.Sort(les)
	cum = make([]float64, len(les))
	for i, le := range les {
		cum[i] = m.buckets[le] - before.buckets[le]
	}
	return les, cum
}
