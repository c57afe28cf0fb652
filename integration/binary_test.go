package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

var (
	caddyBinOnce sync.Once
	caddyBinPath string
	caddyBinErr  error
)

// caddyBinary is the Caddy built by `make -f xcaddy.mk build` (CADDY_BIN),
// or, when the tests run on their own, the same modules built from this
// module's go.mod.
func caddyBinary(t *testing.T) string {
	t.Helper()
	caddyBinOnce.Do(func() {
		if p := os.Getenv("CADDY_BIN"); p != "" {
			caddyBinPath, caddyBinErr = filepath.Abs(p)
			return
		}
		dir, err := os.MkdirTemp("", "caddy-zapier-bin-")
		if err != nil {
			caddyBinErr = err
			return
		}
		caddyBinPath = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyBinPath, "./cmd/caddy").CombinedOutput()
		if err != nil {
			caddyBinErr = fmt.Errorf("building caddy: %v\n%s", err, out)
		}
	})
	if caddyBinErr != nil {
		t.Fatal(caddyBinErr)
	}
	return caddyBinPath
}

func runCaddy(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestBinaryAdaptsAndValidatesTheExample(t *testing.T) {
	example, err := filepath.Abs("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"ZAPIER_CLIENT_ID=example-id", "ZAPIER_CLIENT_SECRET=example-secret-value",
		"XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()}

	out, err := runCaddy(t, env, "list-modules")
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, id := range []string{"zapier", "admin.api.zapier", "http.handlers.zapier_auth", "http.handlers.zapier_jwks"} {
		if !slices.Contains(strings.Fields(out), id) {
			t.Errorf("module %s is not in the binary", id)
		}
	}

	out, err = runCaddy(t, env, "adapt", "--config", example)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, out)
	}
	for _, want := range []string{`"zapier":{`, `"handler":"zapier_auth"`, `"handler":"zapier_jwks"`, `"client_secret":"{env.ZAPIER_CLIENT_SECRET}"`} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted config lacks %s", want)
		}
	}
	out, err = runCaddy(t, env, "validate", "--config", example)
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	if strings.Contains(out, "example-secret-value") {
		t.Error("validate printed the client secret")
	}

	// Without the credentials, validate names what is missing.
	out, err = runCaddy(t, []string{"ZAPIER_CLIENT_ID=", "ZAPIER_CLIENT_SECRET=",
		"XDG_DATA_HOME=" + t.TempDir(), "XDG_CONFIG_HOME=" + t.TempDir()}, "validate", "--config", example)
	if err == nil || !strings.Contains(out, "client_secret is required") || !strings.Contains(out, "client_id is required") {
		t.Errorf("validate without credentials: err %v\n%s", err, out)
	}
}

// caddyProcess is the built binary running a config, as a user would run it.
type caddyProcess struct {
	cmd    *exec.Cmd
	output *bytes.Buffer
}

// startCaddyProcess runs the built binary on Caddyfile.example, as the demo
// does, with env setting its {$VAR}s.
func startCaddyProcess(t *testing.T, env []string, dataDir string) *caddyProcess {
	t.Helper()
	example, err := filepath.Abs("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBinary(t), "run", "--config", example, "--adapter", "caddyfile")
	cmd.Env = append(append(os.Environ(), env...), "XDG_DATA_HOME="+dataDir, "XDG_CONFIG_HOME="+t.TempDir())
	p := &caddyProcess{cmd: cmd, output: new(bytes.Buffer)}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *caddyProcess) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		t.Errorf("caddy did not stop on SIGTERM:\n%s", p.output)
	}
}

// TestRestartedCaddyPublishesTheSameKeys runs the built binary on
// Caddyfile.example against the fake, as `make demo` does, and restarts it.
func TestRestartedCaddyPublishesTheSameKeys(t *testing.T) {
	port := 9060 + portOffset // clear of other offsets' gateway ports (9080+100k)
	fake := fakezapier.New(fakezapier.Config{
		ClientID: testClientID, ClientSecret: testSecret, Issuer: testIssuer,
		JWKSURL: fmt.Sprintf("http://127.0.0.1:%d/.well-known/jwks.json", port),
	})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	dataDir := t.TempDir()
	env := []string{
		"ZAPIER_CLIENT_ID=" + testClientID, "ZAPIER_CLIENT_SECRET=" + testSecret, "ZAPIER_ISSUER=" + testIssuer,
		"ZAPIER_TOKEN_URL=" + srv.URL + "/oauth/token", "ZAPIER_API_URL=" + srv.URL, "ZAPIER_CONNECT_URL=" + srv.URL,
		fmt.Sprintf("ZAPIER_GATEWAY_PORT=%d", port), fmt.Sprintf("ZAPIER_ADMIN=localhost:%d", 2990+portOffset),
	}

	jwksKids := func(p *caddyProcess) []string {
		var kids []string
		eventually(t, 15*time.Second, "caddy to serve the JWKS", func() bool {
			status, _, body, err := send(request{path: "/.well-known/jwks.json", client: &http.Client{Timeout: time.Second}, base: port})
			if err != nil || status != http.StatusOK {
				return false
			}
			kids = parseKids(t, body)
			return true
		})
		return kids
	}
	callAs := func(user string) {
		status, _, body, err := send(request{path: "/zapier/api/v2/echo", tenant: "restart", user: user, base: port})
		if err != nil || status != http.StatusOK {
			t.Fatalf("echo as %s: %d %v %s", user, status, err, body)
		}
	}

	first := startCaddyProcess(t, env, dataDir)
	before := jwksKids(first)
	callAs("before")
	first.stop(t)

	second := startCaddyProcess(t, env, dataDir)
	after := jwksKids(second)
	callAs("after")
	if len(before) != 1 || !slices.Equal(before, after) {
		t.Fatalf("kids before restart %v, after %v", before, after)
	}
	if jwts := fake.JWTs(); len(jwts) != 2 || jwts[1].KID != before[0] {
		t.Errorf("the restarted Caddy signed with %v, want %s", jwts, before[0])
	}
	if st := fake.Stats(); st.JWTFailures != 0 {
		t.Errorf("JWT failures: %d (%s)", st.JWTFailures, fake.LastJWTFailure())
	}
}
