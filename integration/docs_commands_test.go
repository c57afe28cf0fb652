package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docBlock is one fenced sh block of a documentation page.
type docBlock struct {
	file string
	line int
	body string
}

// shellBlocks returns the ```sh and ```bash blocks of README.md and
// docs/*.md that run curl.
func shellBlocks(t *testing.T) []docBlock {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	fence := regexp.MustCompile("(?ms)^```(sh|bash)\n(.*?)^```")
	var blocks []docBlock
	for _, f := range append([]string{"../README.md"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fence.FindAllSubmatchIndex(b, -1) {
			body := string(b[m[4]:m[5]])
			if !regexp.MustCompile(`(?m)(^|\$\()curl `).MatchString(body) {
				continue
			}
			blocks = append(blocks, docBlock{file: strings.TrimPrefix(f, "../"), line: 1 + strings.Count(string(b[:m[0]]), "\n"), body: body})
		}
	}
	return blocks
}

// runnableLines keeps a block's curl commands (with their continuation
// lines), the shell variables they use, and mkdir/cd, as written; it leaves
// out what needs more than the demo (go, npx, caddy, which other tests
// run) and commands with a <placeholder> for the reader to fill in.
func runnableLines(body string) (run []string, left []string) {
	lines := strings.Split(body, "\n")
	for i := 0; i < len(lines); i++ {
		cmd := lines[i]
		for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
			i++
			cmd += "\n" + lines[i]
		}
		trimmed := strings.TrimSpace(cmd)
		first := strings.Fields(trimmed + " ")
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
		case regexp.MustCompile(`<[a-z][a-z ]*>`).MatchString(trimmed):
			left = append(left, trimmed)
		case first[0] == "curl" || first[0] == "mkdir" || first[0] == "cd" ||
			regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(trimmed):
			run = append(run, cmd)
		default:
			left = append(left, trimmed)
		}
	}
	return run, left
}

// TestDocumentedCurlCommandsRun runs every curl command of README.md and
// docs/*.md, as written, against the demo as `make -f xcaddy.mk demo` runs
// it (the partner app on :8080, the gateway on :8081, Caddy's admin on
// :2019; here on the test's ports, substituted). Every curl must get an
// answer below 400 (curl --fail), so a page whose commands stop working
// fails this test.
func TestDocumentedCurlCommandsRun(t *testing.T) {
	d := startDemo(t)
	ports := strings.NewReplacer(
		"localhost:8080", fmt.Sprintf("localhost:%d", demoPort),
		"localhost:8081", fmt.Sprintf("127.0.0.1:%d", gatewayPort),
		"localhost:2019", fmt.Sprintf("localhost:%d", adminPort),
	)
	blocks := shellBlocks(t)
	if len(blocks) == 0 {
		t.Fatal("no curl blocks found in README.md and docs/*.md")
	}
	var ran int
	for _, b := range blocks {
		run, left := runnableLines(b.body)
		for _, l := range left {
			t.Logf("%s:%d: not run here: %s", b.file, b.line, strings.SplitN(l, "\n", 2)[0])
		}
		if len(run) == 0 {
			continue
		}
		script := "set -eu -o pipefail\n" +
			// As written, except that every curl fails on an HTTP error.
			"curl() { command curl --fail-with-body \"$@\"; }\n" +
			ports.Replace(strings.Join(run, "\n")) + "\n"
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s:%d: the block fails (%v):\n%s\noutput:\n%s", b.file, b.line, err, strings.Join(run, "\n"), out)
			continue
		}
		ran++
	}
	if ran == 0 {
		t.Error("no documented curl command ran")
	}
	t.Logf("ran %d documented curl blocks against the demo (%s)", ran, d.origin)
}
