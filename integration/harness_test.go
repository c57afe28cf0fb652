package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	// The plugin under test.
	_ "github.com/zapgate/caddy-zapier"
	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

const (
	testClientID = "itest-client"
	testSecret   = "itest-secret-do-not-leak"
	testIssuer   = "https://accounts.itest.example"
)

// Ports. ITEST_PORT_OFFSET shifts every port the tests listen on, so two
// runs of this package on one machine do not load configs into each other's
// Caddy.
var (
	portOffset  = envInt("ITEST_PORT_OFFSET", 0)
	gatewayPort = 9080 + portOffset
	httpsPort   = 9443 + portOffset
	adminPort   = 2999 + portOffset
	adminAddr   = fmt.Sprintf("http://localhost:%d", adminPort)
	gatewayURL  = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
)

// The client secret reaches the in-process Caddy the way it should in
// production: through the environment, never in the config text.
func init() {
	_ = os.Setenv("ITEST_ZAPIER_SECRET", testSecret)
}

func envInt(name string, def int) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return def
	}
	return v
}

// gateway is a real Caddy (in process, through caddytest) configured by
// Caddyfile in front of a fake Zapier started by the test.
type gateway struct {
	t          *testing.T
	tester     *caddytest.Tester
	fake       *fakezapier.Server
	fakeURL    string
	storageDir string
	opts       gatewayOptions
	throttleOK bool // the test draws 429s from the fake on purpose
}

type gatewayOptions struct {
	globalExtra string // extra lines in the global options block
	gracePeriod string // default 1ns
	zapierExtra string // extra lines inside the zapier global option
	siteExtra   string // extra lines inside the site block
	storageDir  string // reuse keys from an earlier gateway
	fake        fakezapier.Config
	fakeFront   func(http.Handler) http.Handler // optional middleware in front of the fake
	budget      string                          // api_budget lines; default testBudget
	extraSites  string                          // more site blocks after the gateway's
	preStart    func(fakeURL string)            // runs once the fake listens, before Caddy starts
	// noLimits runs without Zapier's limits and without a budget, for the
	// load tests, which drive far more than Zapier allows on purpose.
	noLimits bool
	// expectThrottle lets the fake's rate limits answer 429 in this test;
	// otherwise any 429 they draw fails it.
	expectThrottle bool
}

// Every test runs against Zapier's documented limits, with the window and
// cooldown scaled from a minute to a second, and the gateway's budget set
// to the same limits scaled alike, with some headroom for scheduling delays
// under -race. A gateway that ever exceeds its budget draws a 429, and
// checkNoThrottle fails the test.
var (
	testRateLimits = fakezapier.DocumentedRateLimits.Scaled(60)
	testBudget     = "api_budget {\n\t\t\tper_ip 50/1s\n\t\t\tpartner 125/1s\n\t\t\tmax_wait 10s\n\t\t}"
	noBudget       = "api_budget off"
)

// budgetLines is the api_budget option of this gateway.
func (g *gateway) budgetLines() string {
	if g.opts.noLimits {
		return noBudget
	}
	return cmp.Or(g.opts.budget, testBudget)
}

// checkNoThrottle fails t if the fake's rate limits answered 429, unless
// *allowed is true by then.
func checkNoThrottle(t *testing.T, fake *fakezapier.Server, allowed *bool) {
	t.Cleanup(func() {
		if n := fake.ThrottledCount(); n > 0 && !*allowed {
			t.Errorf("gateway traffic drew %d 429s from the fake's rate limits (%v)", n, fake.CallCounts())
		}
	})
}

func startGateway(t *testing.T, opts gatewayOptions) *gateway {
	t.Helper()
	cfg := opts.fake
	cfg.ClientID, cfg.ClientSecret, cfg.Issuer = testClientID, testSecret, testIssuer
	cfg.JWKSURL = gatewayURL + "/.well-known/jwks.json"
	cfg.Logf = t.Logf
	if cfg.CallbackHTTPClient == nil { // what the fake POSTs to the gateway is validated too
		cfg.CallbackHTTPClient = &http.Client{Transport: validating(nil)}
	}
	if cfg.RateLimits == nil && !opts.noLimits {
		cfg.RateLimits = &testRateLimits
	}
	fake := fakezapier.New(cfg)
	t.Cleanup(fake.Close)
	var fakeHandler http.Handler = fake
	if opts.fakeFront != nil {
		fakeHandler = opts.fakeFront(fake)
	}
	srv := httptest.NewServer(fakeHandler)
	t.Cleanup(srv.Close)

	g := &gateway{t: t, fake: fake, fakeURL: srv.URL, storageDir: opts.storageDir, opts: opts, throttleOK: opts.expectThrottle}
	checkNoThrottle(t, fake, &g.throttleOK)
	if g.storageDir == "" {
		g.storageDir = storageDir(t)
	}
	if opts.preStart != nil {
		opts.preStart(srv.URL)
	}
	watchContract(t) // openapi_test.go
	g.tester = caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	g.tester.InitServer(g.caddyfile(opts), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	waitForSingleListener(t, gatewayPort)
	return g
}

// waitForSingleListener waits until the previous config's listener on port
// is closed, then drops the default client's pooled connections. Caddy binds each config's socket with SO_REUSEPORT, so for a
// moment after a reload the kernel may hand a new connection to the old
// socket, which then resets it; a test firing 200 requests at once would
// see that as failures that have nothing to do with the gateway.
func waitForSingleListener(t *testing.T, port int) {
	t.Helper()
	want := fmt.Sprintf(":%04X ", port)
	eventually(t, 10*time.Second, "a single listener on the gateway port", func() bool {
		n := 0
		for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			data, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(data), "\n")[1:] {
				fields := strings.Fields(line)
				if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", want) && fields[3] == "0A" {
					n++
				}
			}
		}
		return n <= 1
	})
	// The old server closes the connections it kept alive: drop them from
	// the client's pool, so a request that cannot be resent (a POST) is not
	// sent on one in the instant it closes.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func (g *gateway) caddyfile(opts gatewayOptions) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	grace_period %s
	skip_install_trust
	persist_config off
	storage file_system %s
	%s
	zapier {
		client_id %s
		client_secret {env.ITEST_ZAPIER_SECRET}
		issuer %s
		token_url %s/oauth/token
		api_url %s
		connect_url %s
		%s
		%s
	}
}
:%d {
	zapier_jwks /.well-known/jwks.json
	handle_path /zapier/api/* {
		zapier_auth
		reverse_proxy %s
	}
	%s
}
%s
`, adminPort, gatewayPort, httpsPort, cmp.Or(opts.gracePeriod, "1ns"), g.storageDir, opts.globalExtra, testClientID, testIssuer, g.fakeURL, g.fakeURL, g.fakeURL,
		g.budgetLines(), opts.zapierExtra, gatewayPort, g.fakeURL, opts.siteExtra, opts.extraSites)
}

// reload loads the gateway's config again with siteExtra in its site block,
// the way `caddy reload` does: a POST to the admin endpoint's /load.
func (g *gateway) reload(siteExtra string) error {
	opts := g.opts
	opts.siteExtra = siteExtra
	resp, err := plainClient.Post(adminAddr+"/load", "text/caddyfile", strings.NewReader(g.caddyfile(opts)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("reload: %d %s", resp.StatusCode, body)
	}
	return nil
}

// echo is what the fake's /v2/echo route reports about the request it got.
type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
	Tenant  string              `json:"tenant"`
	User    string              `json:"user"`
}

func (e echo) header(name string) string {
	if v := e.Headers[http.CanonicalHeaderKey(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

type request struct {
	method       string
	path         string
	tenant, user string
	header       http.Header
	body         string
	client       *http.Client
	base         int    // port of another gateway than the in-process one
	host         string // the Host header, when not the URL's
}

// plainClient validates its traffic to the gateway against the OpenAPI
// document (openapi_test.go), as send does for every client.
var plainClient = &http.Client{Timeout: 30 * time.Second, Transport: validating(nil)}

// do sends a request to the gateway and returns the status and body.
func (g *gateway) do(r request) (int, http.Header, []byte) {
	g.t.Helper()
	status, hdr, body, err := send(r)
	if err != nil {
		g.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return status, hdr, body
}

func send(r request) (int, http.Header, []byte, error) {
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	base := gatewayURL
	if r.base != 0 {
		base = fmt.Sprintf("http://127.0.0.1:%d", r.base)
	}
	req, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	if r.host != "" {
		req.Host = r.host
	}
	for k, vs := range r.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.tenant != "" {
		req.Header.Set("X-Zapier-Tenant", r.tenant)
	}
	if r.user != "" {
		req.Header.Set("X-Zapier-User", r.user)
	}
	client := r.client
	if client == nil {
		client = plainClient
	}
	resp, err := validatingClient(client).Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// echoAs calls the fake's echo route through the gateway as an identity.
func (g *gateway) echoAs(tenant, user string) echo {
	g.t.Helper()
	status, _, body := g.do(request{path: "/zapier/api/v2/echo", tenant: tenant, user: user})
	if status != http.StatusOK {
		g.t.Fatalf("echo as %s/%s: status %d: %s", tenant, user, status, body)
	}
	return decodeEcho(g.t, body)
}

func decodeEcho(t *testing.T, body []byte) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decoding echo %q: %v", body, err)
	}
	return e
}

// admin calls Caddy's admin endpoint.
func admin(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	return adminJSON(t, adminAddr, method, path, nil)
}

// adminJSON calls an admin endpoint at base with v as the JSON body (none
// when nil): the admin routes naming an identity take it in the body.
func adminJSON(t *testing.T, base, method, path string, v any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if v != nil {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

type jwkSet struct {
	Keys []map[string]any `json:"keys"`
}

func (s jwkSet) kids() []string {
	var kids []string
	for _, k := range s.Keys {
		kids = append(kids, fmt.Sprint(k["kid"]))
	}
	return kids
}

func (g *gateway) jwks() (jwkSet, []byte) {
	g.t.Helper()
	status, _, body := g.do(request{path: "/.well-known/jwks.json"})
	if status != http.StatusOK {
		g.t.Fatalf("jwks: status %d: %s", status, body)
	}
	var s jwkSet
	if err := json.Unmarshal(body, &s); err != nil {
		g.t.Fatalf("decoding jwks: %v", err)
	}
	return s, body
}

func parseKids(t *testing.T, jwksBody []byte) []string {
	t.Helper()
	var s jwkSet
	if err := json.Unmarshal(jwksBody, &s); err != nil {
		t.Fatalf("decoding jwks: %v", err)
	}
	return s.kids()
}

// clientFrom returns an HTTP client whose connections come from localIP, to
// test trusted_sources with a real peer address.
func clientFrom(localIP string) *http.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}},
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lookupCount scrapes caddy_zapier_token_lookups_total{result=…} from the
// admin endpoint's /metrics.
func lookupCount(t *testing.T, result string) float64 {
	t.Helper()
	return scrapeMetric(t, "caddy_zapier_token_lookups_total", `result="`+result+`"`)
}

// scrapeMetric returns the value of the first sample of name whose labels
// contain labelMatch, or 0 when there is none yet.
func scrapeMetric(t *testing.T, name, labelMatch string) float64 {
	t.Helper()
	status, body := admin(t, http.MethodGet, "/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: status %d", status)
	}
	return metricValue(t, body, name, labelMatch)
}

// metricValue finds the sample in a /metrics body (see scrapeMetric).
func metricValue(t *testing.T, body []byte, name, labelMatch string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, labelMatch) {
			continue
		}
		fields := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(fields[len(fields)-1], &v); err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		return v
	}
	return 0
}

// storageDir is a Caddy storage root for one test. Not t.TempDir: Caddy may
// still write to it (locks, the local CA) while the next test's config loads.
func storageDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "caddy-zapier-itest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		time.AfterFunc(5*time.Second, func() { _ = os.RemoveAll(dir) })
	})
	return dir
}
