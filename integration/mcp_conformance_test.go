package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The official MCP conformance suite (@modelcontextprotocol/conformance,
// server scenarios) run three ways, scenario by scenario:
//
//   - direct: against the suite's reference server (its "everything
//     server", integration/testdata/mcpconformance);
//   - per-app: against /zapier/mcp/{app} of a real Caddy, where the app's
//     MCP server (the fake Zapier's /mcp/{app}) is that reference server;
//   - aggregate: against the root /zapier/mcp/, whose only app is that
//     one: every scenario but prompts, resources and completion, which a
//     tools aggregate does not serve.
//
// A scenario that passes directly but not through the gateway (a failed
// check, or fewer successful checks than directly) fails the test; one that
// fails directly is logged, not compared. MCP_CONFORMANCE_SCENARIO=<name>
// runs that scenario alone and shows the suite's and the reference server's
// output. The suite connects as a plain MCP client, so between it and the
// gateway sits the partner's ingress (a reverse proxy in this test) that
// adds the identity headers; for the aggregate it also maps the suite's
// fixed tool names (test_simple_text, …) to the aggregate's
// <app>__<tool> names and back, and changes nothing else.
//
// The suite and a Node that runs it come from `make -f xcaddy.mk
// mcp-conformance-deps` (part of `make -f xcaddy.mk test`), in
// MCP_CONFORMANCE_DIR (default .build/mcp-conformance): without them the
// test fails, it never skips.

const (
	confApp    = "ConformanceAPI"
	confTenant = "conformance"
	confUser   = "agent"
)

// confOutOfAggregate are the scenario prefixes the aggregate does not
// serve: it is an MCP server of tools.
var confOutOfAggregate = []string{"completion-", "resources-", "prompts-"}

func TestMCPConformance(t *testing.T) {
	node, dir := conformanceTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	ref := startReferenceServer(t, ctx, node, dir)
	g := startMCPGateway(t, "")
	refURL, err := url.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	g.fake.RegisterMCPAppUpstream(confApp, "MCP conformance", refURL)
	g.mcpAuthorize(confTenant, confUser, confApp)
	perApp := confIngress(t, gatewayURL+"/zapier/mcp/"+confApp, "")
	aggregate := confIngress(t, gatewayURL+"/zapier/mcp/", confApp+"__")

	start := time.Now()
	direct := runConformance(t, ctx, node, dir, "direct", ref)
	if len(direct) == 0 {
		t.Fatal("the conformance suite ran no scenario against the reference server")
	}
	viaApp := runConformance(t, ctx, node, dir, "per-app", perApp)
	viaAggregate := runConformance(t, ctx, node, dir, "aggregate", aggregate)
	t.Logf("conformance: 3 runs of the suite in %s", time.Since(start).Round(time.Second))

	names := make([]string, 0, len(direct))
	for name := range direct {
		names = append(names, name)
	}
	slices.Sort(names)
	var table strings.Builder
	table.WriteString("| scenario | direct | per-app | aggregate |\n|---|---|---|---|\n")
	for _, name := range names {
		d := direct[name]
		inAggregate := !slices.ContainsFunc(confOutOfAggregate, func(p string) bool { return strings.HasPrefix(name, p) })
		agg := "out of scope"
		if inAggregate {
			agg = viaAggregate[name].String()
		}
		fmt.Fprintf(&table, "| %s | %s | %s | %s |\n", name, d, viaApp[name], agg)
		if !d.passed() {
			t.Logf("%s fails directly against the reference server (%s): not compared", name, d)
			continue
		}
		if !viaApp[name].passedLike(d) {
			t.Errorf("%s passes directly but not through /zapier/mcp/%s: %s (directly: %s)", name, confApp, viaApp[name], d)
		}
		if inAggregate && !viaAggregate[name].passedLike(d) {
			t.Errorf("%s passes directly but not through the aggregate /zapier/mcp/: %s (directly: %s)", name, viaAggregate[name], d)
		}
	}
	t.Logf("MCP conformance (@modelcontextprotocol/conformance %s):\n%s", conformanceVersion(dir), table.String())
}

// conformanceTools returns the Node binary and the npm prefix holding the
// conformance suite, failing the test when either is missing.
func conformanceTools(t *testing.T) (node, dir string) {
	t.Helper()
	dir = os.Getenv("MCP_CONFORMANCE_DIR")
	if dir == "" {
		root, err := filepath.Abs("..")
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, ".build", "mcp-conformance")
	}
	node = filepath.Join(dir, "node")
	cli := filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
	for _, f := range []string{node, cli} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the MCP conformance suite is not installed (%v): run `make -f xcaddy.mk mcp-conformance-deps` "+
				"(it needs npm), or set MCP_CONFORMANCE_DIR", err)
		}
	}
	return node, dir
}

func conformanceVersion(dir string) string {
	var pkg struct{ Version string }
	data, _ := os.ReadFile(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "package.json"))
	_ = json.Unmarshal(data, &pkg)
	return pkg.Version
}

// startReferenceServer runs the suite's reference server and returns its
// MCP endpoint once it listens.
func startReferenceServer(t *testing.T, ctx context.Context, node, dir string) string {
	t.Helper()
	// Node resolves the server's imports next to the file: a copy in a
	// directory whose node_modules is the suite's.
	work := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "mcpconformance", "everything-server.mts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "everything-server.mts"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "node_modules"), filepath.Join(work, "node_modules")); err != nil {
		t.Fatal(err)
	}
	port := confFreePort(t)
	cmd := exec.CommandContext(ctx, node, "everything-server.mts")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "NODE_NO_WARNINGS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if os.Getenv("MCP_CONFORMANCE_SCENARIO") != "" {
		cmd.Stderr = os.Stderr
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the reference server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan struct{})
	var readyOnce sync.Once
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if os.Getenv("MCP_CONFORMANCE_SCENARIO") != "" {
				fmt.Fprintln(os.Stderr, "reference server:", sc.Text())
			}
			if strings.Contains(sc.Text(), "running on") {
				readyOnce.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("the reference server did not start: %s", stderr.String())
	}
	return fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
}

func confFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// confIngress is the partner's ingress in front of target: it adds the
// identity headers and passes everything else, Host and Origin included,
// streaming responses as they come. With a prefix (the aggregate), a
// tools/call's name gets it and the responses lose it, so the suite's fixed
// tool names reach the aggregate's <app>__<tool> tools.
func confIngress(t *testing.T, target, prefix string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.URL.Path, pr.Out.URL.RawPath = u.Path, ""
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Zapier-Tenant", confTenant)
			pr.Out.Header.Set("X-Zapier-User", confUser)
			if prefix != "" && pr.Out.Body != nil && pr.Out.Body != http.NoBody {
				body, err := io.ReadAll(pr.Out.Body)
				_ = pr.Out.Body.Close()
				if err == nil {
					body = prefixToolCall(body, prefix)
				}
				pr.Out.Body = io.NopCloser(bytes.NewReader(body))
				pr.Out.ContentLength = int64(len(body))
				pr.Out.Header.Set("Content-Length", fmt.Sprint(len(body)))
			}
		},
		Transport:     validating(nil),
		FlushInterval: -1,
	}
	if prefix != "" {
		proxy.ModifyResponse = func(resp *http.Response) error {
			resp.Body = &unprefixReader{r: bufio.NewReader(resp.Body), c: resp.Body, prefix: []byte(`"` + prefix), to: []byte(`"`)}
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
			return nil
		}
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

// prefixToolCall puts prefix before the tool name of a tools/call request
// (one JSON-RPC message: the suite's client sends no batches).
func prefixToolCall(body []byte, prefix string) []byte {
	var msg map[string]json.RawMessage
	if json.Unmarshal(body, &msg) != nil || string(msg["method"]) != `"tools/call"` {
		return body
	}
	var params map[string]json.RawMessage
	var name string
	if json.Unmarshal(msg["params"], &params) != nil || json.Unmarshal(params["name"], &name) != nil {
		return body
	}
	params["name"], _ = json.Marshal(prefix + name)
	msg["params"], _ = json.Marshal(params)
	out, err := json.Marshal(msg)
	if err != nil {
		return body
	}
	return out
}

// unprefixReader passes a response line by line (an SSE event is out as
// soon as its lines are), replacing "<prefix> with ".
type unprefixReader struct {
	r          *bufio.Reader
	c          io.Closer
	prefix, to []byte
	pending    []byte
}

func (u *unprefixReader) Read(p []byte) (int, error) {
	for len(u.pending) == 0 {
		line, err := u.r.ReadBytes('\n')
		u.pending = bytes.ReplaceAll(line, u.prefix, u.to)
		if err != nil {
			if len(u.pending) > 0 {
				break
			}
			return 0, err
		}
	}
	n := copy(p, u.pending)
	u.pending = u.pending[n:]
	return n, nil
}

func (u *unprefixReader) Close() error { return u.c.Close() }

// confResult is one scenario's checks.
type confResult struct {
	ran       bool
	successes int
	warnings  int
	failures  []string
}

func (r confResult) passed() bool { return r.ran && len(r.failures) == 0 }

// passedLike is passed with at least as many successful checks as direct:
// a check the suite could not make through the gateway is not a pass.
func (r confResult) passedLike(direct confResult) bool {
	return r.passed() && r.successes >= direct.successes
}

func (r confResult) String() string {
	switch {
	case !r.ran:
		return "no result"
	case len(r.failures) > 0:
		return "FAIL: " + strings.Join(r.failures, "; ")
	case r.warnings > 0:
		return fmt.Sprintf("pass (%d checks, %d warnings)", r.successes, r.warnings)
	}
	return fmt.Sprintf("pass (%d checks)", r.successes)
}

var confResultDir = regexp.MustCompile(`^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$`)

// runConformance runs every server scenario of the suite against mcpURL
// and returns each scenario's result.
func runConformance(t *testing.T, ctx context.Context, node, dir, label, mcpURL string) map[string]confResult {
	t.Helper()
	out := t.TempDir()
	cli := filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
	args := []string{cli, "server", "--url", mcpURL, "--suite", "all", "-o", out}
	if one := os.Getenv("MCP_CONFORMANCE_SCENARIO"); one != "" { // one scenario, for debugging
		args = []string{cli, "server", "--url", mcpURL, "--scenario", one, "-o", out}
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = out
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	start := time.Now()
	err := cmd.Run() // exits 1 when a scenario fails: the checks tell
	t.Logf("conformance %s (%s): %s, exit %v", label, mcpURL, time.Since(start).Round(100*time.Millisecond), err)
	if ctx.Err() != nil {
		t.Fatalf("conformance %s did not finish: %s", label, log.String())
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]confResult{}
	for _, e := range entries {
		m := confResultDir.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		var checks []struct {
			ID, Description, Status, ErrorMessage string
		}
		data, err := os.ReadFile(filepath.Join(out, e.Name(), "checks.json"))
		if err == nil {
			err = json.Unmarshal(data, &checks)
		}
		r := confResult{ran: err == nil}
		for _, c := range checks {
			switch c.Status {
			case "SUCCESS":
				r.successes++
			case "WARNING":
				r.warnings++
			case "FAILURE":
				msg := c.ID
				if c.ErrorMessage != "" {
					msg += ": " + oneLine(c.ErrorMessage, 200)
				}
				r.failures = append(r.failures, msg)
			}
		}
		results[m[1]] = r
	}
	if t.Failed() || len(results) == 0 || os.Getenv("MCP_CONFORMANCE_SCENARIO") != "" {
		t.Logf("conformance %s output:\n%s", label, log.String())
	}
	return results
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
