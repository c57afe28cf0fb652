package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/zapgate/caddy-zapier/internal/version"
)

// fencedBlocks returns the bodies of a documentation file's ```lang blocks.
func fencedBlocks(t *testing.T, file, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?ms)^```"+regexp.QuoteMeta(lang)+"\n(.*?)^```").FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDeploymentPageRunsAsWritten checks what docs/deployment.md gives a
// reader to copy, as far as this machine can run it (no Docker, no
// Kubernetes): the Caddyfile, the systemd unit with its env file, the
// Kubernetes manifests' probes and the Dockerfile's versions.
func TestDeploymentPageRunsAsWritten(t *testing.T) {
	const page = "../docs/deployment.md"
	caddyfiles := fencedBlocks(t, page, "caddyfile")
	units := fencedBlocks(t, page, "ini")
	manifests := fencedBlocks(t, page, "yaml")
	dockerfiles := fencedBlocks(t, page, "dockerfile")
	if len(caddyfiles) != 1 || len(units) != 1 || len(manifests) != 1 || len(dockerfiles) != 1 {
		t.Fatalf("docs/deployment.md: %d caddyfile, %d ini, %d yaml, %d dockerfile blocks; want one each",
			len(caddyfiles), len(units), len(manifests), len(dockerfiles))
	}
	caddyfile, unit := caddyfiles[0], units[0]

	// The env file is the sh block of KEY=value lines.
	var envFile []string
	for _, b := range fencedBlocks(t, page, "sh") {
		if strings.HasPrefix(b, "ZAPIER_CLIENT_ID=") {
			envFile = strings.Fields(b)
		}
	}
	if len(envFile) == 0 {
		t.Fatal("docs/deployment.md has no env file block (ZAPIER_CLIENT_ID=…)")
	}

	// The Caddyfile: fmt-clean, and it validates without a warning.
	checkCaddyfileClean(t, "docs/deployment.md's Caddyfile", caddyfile, envFile)

	// The unit: systemd accepts it (with the paths it names made real),
	// and its ExecStart, run as `caddy validate`, accepts the Caddyfile.
	dir := t.TempDir()
	bin, conf, env := filepath.Join(dir, "caddy"), filepath.Join(dir, "Caddyfile"), filepath.Join(dir, "env")
	if err := os.Symlink(caddyBinary(t), bin); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env, []byte(strings.Join(envFile, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	local := strings.NewReplacer("/usr/local/bin/caddy", bin, "/etc/caddy-zapier/Caddyfile", conf, "/etc/caddy-zapier/env", env).Replace(unit)
	unitFile := filepath.Join(dir, "caddy-zapier.service")
	if err := os.WriteFile(unitFile, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := exec.Command(path, "verify", "--man=no", unitFile).CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// The build machine may have no caddy user; that is the
			// reader's to create, not the unit's to fix.
			if line != "" && !strings.Contains(line, "User=") && !strings.Contains(line, "Group=") && !strings.Contains(line, "user caddy") {
				t.Errorf("systemd-analyze verify: %s (%v)", line, err)
			}
		}
	} else {
		t.Log("systemd-analyze is not installed: the unit's syntax is not checked")
	}
	exec := regexp.MustCompile(`(?m)^ExecStart=(\S+) run (.*)$`).FindStringSubmatch(local)
	if exec == nil || exec[1] != bin {
		t.Fatalf("the unit's ExecStart is not `caddy run …`:\n%s", unit)
	}
	out, err := runCaddy(t, append(envFile, "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir()),
		append([]string{"validate"}, strings.Fields(exec[2])...)...)
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Errorf("the unit's ExecStart as caddy validate: %v\n%s", err, out)
	}
	if strings.Contains(unit, "--environ") {
		t.Error("the unit passes --environ, which logs the secrets")
	}

	// The manifests: the probes reach the Caddyfile's port and admin.
	port := regexp.MustCompile(`(?m)^:(\d+) \{`).FindStringSubmatch(caddyfile)
	admin := regexp.MustCompile(`(?m)^\tadmin (\S+)$`).FindStringSubmatch(caddyfile)
	if port == nil || admin == nil {
		t.Fatal("the Caddyfile has no `:port {` site or `admin` line")
	}
	dec := yaml.NewDecoder(strings.NewReader(manifests[0]))
	var pod bool
	for {
		var doc struct {
			Kind string
			Spec struct {
				Containers []struct {
					Name          string
					LivenessProbe struct {
						HTTPGet struct {
							Path string
							Port int
						} `yaml:"httpGet"`
					} `yaml:"livenessProbe"`
					ReadinessProbe struct {
						Exec struct{ Command []string }
					} `yaml:"readinessProbe"`
				}
			}
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "Pod" {
			continue
		}
		pod = true
		for _, c := range doc.Spec.Containers {
			if c.Name != "caddy-zapier" {
				continue
			}
			if c.LivenessProbe.HTTPGet.Path != "/.well-known/jwks.json" || "8081" != port[1] || c.LivenessProbe.HTTPGet.Port != 8081 {
				t.Errorf("liveness probe %+v, want /.well-known/jwks.json on the Caddyfile's port %s", c.LivenessProbe, port[1])
			}
			if got := strings.Join(c.ReadinessProbe.Exec.Command, " "); got != "caddy zapier status --address "+admin[1] {
				t.Errorf("readiness probe %q, want caddy zapier status on the admin address %s", got, admin[1])
			}
		}
	}
	if !pod {
		t.Error("the manifests have no Pod")
	}

	// The Dockerfile builds this release on the Caddy version xcaddy.mk builds.
	mk, err := os.ReadFile("../xcaddy.mk")
	if err != nil {
		t.Fatal(err)
	}
	caddyVersion := regexp.MustCompile(`(?m)^CADDY_VERSION\s*\?=\s*v(\S+)$`).FindSubmatch(mk)
	if caddyVersion == nil {
		t.Fatal("xcaddy.mk has no CADDY_VERSION")
	}
	for _, want := range []string{
		"FROM caddy:" + string(caddyVersion[1]) + "-builder AS builder",
		"xcaddy build v" + string(caddyVersion[1]) + " --with github.com/zapgate/caddy-zapier@v" + version.Version,
		"FROM caddy:" + string(caddyVersion[1]) + "\n",
	} {
		if !strings.Contains(dockerfiles[0], want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}
