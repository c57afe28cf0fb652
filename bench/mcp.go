package main

// The MCP section (-section=mcp): what one tool call costs through the
// gateway, measured side by side with the same go-sdk client and the same
// go-sdk MCP server (the fake Zapier's, in this process):
//
//	direct     the client talks to the app's MCP server with the user's token
//	per-app    through zapier_mcp's /zapier/mcp/{app}
//	aggregate  through zapier_mcp's root, tool <app>__echo
//
// With -caddy-before, a second build is measured too, as per-app (before)
// and aggregate (before), in the same rounds (its own fake Zapier).
//
// For each concurrency (sequential: 1 session; -mcp-concurrency) the modes
// run in alternating rounds (direct, per-app, aggregate, …, then the reverse
// order), every session a different user, each worker calling echo in a
// loop. A round records calls/s, the latency quantiles and the gateway's
// CPU time (utime+stime of the Caddy process from /proc/<pid>/stat) per
// call; the figures are the medians over the rounds, the added latency and
// the throughput ratio taken within each round against its direct run.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

type mcpOptions struct {
	Rounds      int
	Duration    time.Duration
	Warmup      time.Duration
	Concurrency []int
	Label       string // names the result files: mcp-<label>.json/.md
	PortBase    int
	ServerCPUs  string
	Caddy       string `json:"-"`
	CaddyBefore string `json:"-"` // optional: a second build, measured as per-app (before) and aggregate (before) in the same rounds
	Extra       string // more zapier_mcp options
}

type mcpRound struct {
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Round       int     `json:"round"`
	Calls       int64   `json:"calls"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50US       float64 `json:"p50_us"`
	P99US       float64 `json:"p99_us"`
	CPUUSPerOp  float64 `json:"gateway_cpu_us_per_call"`
	GatewayBusy float64 `json:"gateway_cpu_util"`
}

type mcpSummary struct {
	Mode            string  `json:"mode"`
	Concurrency     int     `json:"concurrency"`
	RPS             float64 `json:"rps"`
	P50US           float64 `json:"p50_us"`
	AddedP50US      float64 `json:"added_p50_us"`
	ThroughputRatio float64 `json:"throughput_ratio"`
	CPUUSPerCall    float64 `json:"gateway_cpu_us_per_call"`
}

type mcpResults struct {
	Label    string       `json:"label"`
	Caddy    string       `json:"caddy"`  // the binary's file name
	Before   string       `json:"before"` // -caddy-before's file name
	Started  string       `json:"started"`
	Machine  string       `json:"machine"`
	Options  mcpOptions   `json:"options"`
	Rounds   []mcpRound   `json:"rounds"`
	Summary  []mcpSummary `json:"summary"`
	LoadEnd  string       `json:"load_end"`
	Protocol string       `json:"protocol_version"`
}

const mcpBenchApp = "SlackCLIAPI"

// tokenRecorder remembers the last bearer token the fake's MCP servers
// were sent: the user's token, for the direct runs.
type tokenRecorder struct {
	next http.Handler
	last atomic.Value
}

func (t *tokenRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/mcp/") {
		t.last.Store(r.Header.Get("Authorization"))
	}
	t.next.ServeHTTP(w, r)
}

// headerTransport adds fixed headers (identity, or a bearer token).
type headerTransport struct {
	base http.RoundTripper
	hdr  http.Header
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.hdr {
		r.Header[k] = v
	}
	return h.base.RoundTrip(r)
}

// mcpGateway is one Caddy with zapier_mcp and its own fake Zapier (the
// fake verifies the partner JWTs of one gateway's keys).
type mcpGateway struct {
	base    string
	srv     *server
	fake    *fakezapier.Server
	fakeSrv *http.Server
	fakeURL string
	rec     *tokenRecorder
}

func (g *mcpGateway) close() {
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

func startMCPGateway(ctx context.Context, o mcpOptions, name, binary, workDir string, off int) (*mcpGateway, error) {
	addr := func(k int) string { return fmt.Sprintf("127.0.0.1:%d", o.PortBase+off+k) }
	gwAddr, adminAddr, fakeAddr := addr(0), addr(1), addr(2)
	g := &mcpGateway{base: "http://" + gwAddr, fakeURL: "http://" + fakeAddr}
	callback := g.base + "/zapier/mcp/callback"
	g.fake = fakezapier.New(fakezapier.Config{ClientID: benchClientID, ClientSecret: benchClientSecret, Issuer: benchIssuer,
		JWKSURL: g.base + "/.well-known/jwks.json", AccessTokenTTL: 24 * time.Hour})
	g.fake.RegisterMCPApp(mcpBenchApp, "Slack")
	g.fake.SetMCPRedirectURIs(callback)
	g.fake.SetMCPAccessTTL(24 * time.Hour)
	g.rec = &tokenRecorder{next: g.fake}
	ln, err := net.Listen("tcp", fakeAddr)
	if err != nil {
		g.close()
		return nil, fmt.Errorf("listening for the fake Zapier: %w", err)
	}
	g.fakeSrv = &http.Server{Handler: g.rec, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = g.fakeSrv.Serve(ln) }()
	caddyfile := fmt.Sprintf(`{
	admin %[1]s
	persist_config off
	skip_install_trust
	zapier {
		client_id %[2]s
		client_secret %[3]s
		issuer %[4]s
		token_url http://%[5]s/oauth/token
		api_url http://%[5]s
		connect_url http://%[5]s
		return_origins %[6]s
	}
}
http://%[7]s {
	zapier_jwks /.well-known/jwks.json
	handle_path /zapier/mcp/* {
		zapier_mcp {
			callback_url %[8]s
			streams_per_identity 1000
			%[9]s
		}
	}
}
`, adminAddr, benchClientID, benchClientSecret, benchIssuer, fakeAddr, g.base, gwAddr, callback, o.Extra)
	dir := filepath.Join(workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		g.close()
		return nil, err
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		g.close()
		return nil, err
	}
	env := []string{"XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "HOME=" + dir}
	if g.srv, err = startServer(name, workDir, o.ServerCPUs, env, binary, "run", "--config", path, "--adapter", "caddyfile"); err != nil {
		g.close()
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitReady(readyCtx, g.base+"/.well-known/jwks.json", g.srv); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// authorize has users user0… authorize Slack (the browser flow) and make
// one call through the per-app route; it returns the tokens the fake saw.
func (g *mcpGateway) authorize(ctx context.Context, users int, rt http.RoundTripper) ([]string, error) {
	tokens := make([]string, users)
	for i := range users {
		user := fmt.Sprintf("user%d", i)
		if err := mcpAuthorize(g.base, "org", user); err != nil {
			return nil, fmt.Errorf("authorizing %s: %w", user, err)
		}
		s, err := mcpConnect(ctx, g.base+"/zapier/mcp/"+mcpBenchApp, identityHeader("org", user), rt)
		if err != nil {
			return nil, fmt.Errorf("%s's per-app session: %w", user, err)
		}
		_, err = s.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
		s.Close()
		if err != nil {
			return nil, err
		}
		tokens[i], _ = g.rec.last.Load().(string)
	}
	return tokens, nil
}

func runMCPSection(ctx context.Context, o mcpOptions, outDir string) error {
	var gateways []*mcpGateway
	users := slices.Max(o.Concurrency)
	workDir, err := os.MkdirTemp("", "zapier-bench-mcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(workDir)
	plain := &http.Transport{MaxIdleConnsPerHost: 512}

	type mode struct {
		name, endpoint, tool string
		hdr                  func(i int) http.Header
		srv                  *server // whose CPU is measured; nil: none
	}
	var modes []mode
	addGateway := func(name, binary, suffix string, off int) error {
		g, err := startMCPGateway(ctx, o, name, binary, workDir, off)
		if err != nil {
			return err
		}
		tokens, err := g.authorize(ctx, users, plain)
		if err != nil {
			g.close()
			return err
		}
		log.Printf("mcp: %d users authorized on %s", users, name)
		ident := func(i int) http.Header { return identityHeader("org", fmt.Sprintf("user%d", i)) }
		if len(modes) == 0 {
			modes = append(modes, mode{"direct", g.fakeURL + "/mcp/" + mcpBenchApp, "echo",
				func(i int) http.Header { return http.Header{"Authorization": {tokens[i]}} }, nil})
		}
		modes = append(modes,
			mode{"per-app" + suffix, g.base + "/zapier/mcp/" + mcpBenchApp, "echo", ident, g.srv},
			mode{"aggregate" + suffix, g.base + "/zapier/mcp/", mcpBenchApp + "__echo", ident, g.srv})
		gateways = append(gateways, g)
		return nil
	}
	defer func() {
		for _, g := range gateways {
			g.close()
		}
	}()
	if err := addGateway("caddy-mcp", o.Caddy, "", 50); err != nil {
		return err
	}
	if o.CaddyBefore != "" {
		if err := addGateway("caddy-mcp-before", o.CaddyBefore, " (before)", 55); err != nil {
			return err
		}
	}
	res := &mcpResults{Label: o.Label, Caddy: filepath.Base(o.Caddy), Before: baseName(o.CaddyBefore), Started: time.Now().UTC().Format(time.RFC3339), Options: o,
		Machine: fmt.Sprintf("%d CPUs, load %s", cpuCount(), loadAvg())}
	for _, conc := range o.Concurrency {
		sessions := map[string][]*mcp.ClientSession{}
		for _, m := range modes {
			for i := range conc {
				s, err := mcpConnect(ctx, m.endpoint, m.hdr(i), plain)
				if err != nil {
					return fmt.Errorf("%s session %d: %w", m.name, i, err)
				}
				defer s.Close()
				if res.Protocol == "" {
					res.Protocol = s.InitializeResult().ProtocolVersion
				}
				sessions[m.name] = append(sessions[m.name], s)
			}
		}
		for n := 1; n <= o.Rounds; n++ {
			order := slices.Clone(modes)
			if n%2 == 0 {
				slices.Reverse(order)
			}
			for _, m := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				_, _ = mcpLoad(ctx, sessions[m.name], m.tool, o.Warmup, m.srv)
				r, err := mcpLoad(ctx, sessions[m.name], m.tool, o.Duration, m.srv)
				if err != nil {
					return err
				}
				r.Mode, r.Concurrency, r.Round = m.name, conc, n
				log.Printf("mcp round %d, %d sessions, %s: %.0f calls/s, p50 %.0f µs, p99 %.0f µs, gateway CPU %.0f µs/call (%d errors)",
					n, conc, m.name, r.RPS, r.P50US, r.P99US, r.CPUUSPerOp, r.Errors)
				res.Rounds = append(res.Rounds, r)
			}
		}
	}
	res.summarize()
	res.LoadEnd = loadAvg()
	return res.write(outDir)
}

func baseName(path string) string {
	if path == "" {
		return ""
	}
	return filepath.Base(path)
}

func identityHeader(tenant, user string) http.Header {
	return http.Header{"X-Zapier-Tenant": {tenant}, "X-Zapier-User": {user}}
}

func mcpConnect(ctx context.Context, endpoint string, hdr http.Header, base http.RoundTripper) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "bench-agent", Version: "1.0.0"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: headerTransport{base: base, hdr: hdr}}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
}

// mcpAuthorize runs the MCP authorize flow for (tenant, user) in a
// browser whose front end adds the identity headers.
func mcpAuthorize(base, tenant, user string) error {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := base + "/zapier/mcp/authorize?app=" + mcpBenchApp + "&return_to=/done"
	for range 3 { // authorize → Zapier's authorize step → callback
		req, err := http.NewRequest(http.MethodGet, next, nil)
		if err != nil {
			return err
		}
		if strings.HasPrefix(next, base) {
			req.Header.Set("X-Zapier-Tenant", tenant)
			req.Header.Set("X-Zapier-User", user)
		}
		resp, err := browser.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("GET %s: %d", next, resp.StatusCode)
		}
		next = resp.Header.Get("Location")
	}
	done, err := url.Parse(next)
	if err != nil || done.Query().Get("zapier_mcp") != "success" {
		return fmt.Errorf("the authorize flow ended at %s", next)
	}
	return nil
}

// mcpLoad has every session call tool in a loop for d.
func mcpLoad(ctx context.Context, sessions []*mcp.ClientSession, tool string, d time.Duration, srv *server) (mcpRound, error) {
	ticks := func() (int64, error) {
		if srv == nil {
			return 0, nil
		}
		return srv.cpuTicks()
	}
	ticks0, err := ticks()
	if err != nil {
		return mcpRound{}, err
	}
	var calls, errs atomic.Int64
	lat := make([][]time.Duration, len(sessions))
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			params := &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hello"}}
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				res, err := s.CallTool(ctx, params)
				if err != nil || res.IsError {
					errs.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	ticks1, err := ticks()
	if err != nil {
		return mcpRound{}, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	r := mcpRound{Calls: calls.Load(), Errors: errs.Load(), Seconds: secs, P50US: q(0.5), P99US: q(0.99)}
	r.RPS = float64(r.Calls) / secs
	cpuUS := float64(ticks1-ticks0) * 1e6 / clockTicks
	if r.Calls > 0 {
		r.CPUUSPerOp = cpuUS / float64(r.Calls)
	}
	r.GatewayBusy = cpuUS / 1e6 / secs
	if r.Errors > 0 && r.Calls == 0 {
		return r, fmt.Errorf("every call failed")
	}
	return r, nil
}

func (r *mcpResults) summarize() {
	type key struct {
		mode string
		conc int
	}
	direct := map[[2]int]mcpRound{} // (concurrency, round) → direct's
	for _, x := range r.Rounds {
		if x.Mode == "direct" {
			direct[[2]int{x.Concurrency, x.Round}] = x
		}
	}
	var order []key
	vals := map[key]*[4][]float64{} // rps, p50, added p50, ratio; cpu below
	cpu := map[key][]float64{}
	for _, x := range r.Rounds {
		k := key{x.Mode, x.Concurrency}
		if vals[k] == nil {
			vals[k] = &[4][]float64{}
			order = append(order, k)
		}
		d := direct[[2]int{x.Concurrency, x.Round}]
		v := vals[k]
		v[0] = append(v[0], x.RPS)
		v[1] = append(v[1], x.P50US)
		v[2] = append(v[2], x.P50US-d.P50US)
		v[3] = append(v[3], ratio(x.RPS, d.RPS))
		cpu[k] = append(cpu[k], x.CPUUSPerOp)
	}
	for _, k := range order {
		v := vals[k]
		r.Summary = append(r.Summary, mcpSummary{Mode: k.mode, Concurrency: k.conc, RPS: median(v[0]), P50US: median(v[1]),
			AddedP50US: median(v[2]), ThroughputRatio: median(v[3]), CPUUSPerCall: median(cpu[k])})
	}
}

func (r *mcpResults) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# MCP: cost per tool call (%s)\n\n", r.Label)
	fmt.Fprintf(&b, "Same go-sdk client and server (protocol %s), %d alternating rounds of %s per mode and concurrency; %s; load at the end %s. Medians over the rounds; added p50 and throughput ratio against the direct run of the same round; gateway CPU from /proc/<pid>/stat of the Caddy process.\n\n",
		r.Protocol, r.Options.Rounds, r.Options.Duration, r.Machine, r.LoadEnd)
	b.WriteString("| sessions | mode | calls/s | p50 | added p50 | × direct throughput | gateway CPU per call |\n|---|---|---|---|---|---|---|\n")
	for _, s := range r.Summary {
		added, ratioS, cpu := fmt.Sprintf("%+.2f ms", s.AddedP50US/1000), fmt.Sprintf("%.2f×", s.ThroughputRatio), fmt.Sprintf("%.2f ms", s.CPUUSPerCall/1000)
		if s.Mode == "direct" {
			added, ratioS, cpu = "—", "1", "—"
		}
		fmt.Fprintf(&b, "| %d | %s | %.0f | %.2f ms | %s | %s | %s |\n", s.Concurrency, s.Mode, s.RPS, s.P50US/1000, added, ratioS, cpu)
	}
	return b.String()
}

func (r *mcpResults) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	name := "mcp"
	if r.Label != "" {
		name += "-" + r.Label
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	md := r.markdown()
	fmt.Print(md)
	return os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644)
}
