package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// Several sidecars: real Caddy processes (the built binary), each with its
// own HTTP and admin port, sharing one Caddy storage directory, in front of
// one fake Zapier, as a partner runs one sidecar per app host.

// sidecarPort is sidecar i's HTTP port; its admin port is the next one.
func sidecarPort(i int) int { return 19000 + portOffset + 2*i }

type fleetOptions struct {
	n           int    // sidecars; default 3
	zapierExtra string // extra lines inside the zapier global option
	siteExtra   string // extra lines inside the site block
	env         []string
	fake        fakezapier.Config
	extraSites  func(int) string // more site blocks for sidecar i, after its site
}

type fleet struct {
	t        *testing.T
	fake     *fakezapier.Server
	fakeURL  string
	storage  string
	sidecars []*sidecar
}

type sidecar struct {
	t         *testing.T
	name      string
	port      int
	adminPort int
	proc      *caddyProcess
	log       *syncBuffer // what the process wrote, readable while it runs
}

// syncBuffer is a buffer that can be read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startFleet starts the sidecars all at once on fresh shared storage and
// waits until each serves its JWKS. The fake's JWKS URL is sidecar 0's.
func startFleet(t *testing.T, opts fleetOptions) *fleet {
	t.Helper()
	watchContract(t) // openapi_test.go
	n := opts.n
	if n == 0 {
		n = 3
	}
	cfg := opts.fake
	cfg.ClientID, cfg.ClientSecret, cfg.Issuer = testClientID, testSecret, testIssuer
	cfg.JWKSURL = fmt.Sprintf("http://127.0.0.1:%d/.well-known/jwks.json", sidecarPort(0))
	cfg.Logf = t.Logf
	if cfg.RateLimits == nil {
		// Here every sidecar calls from 127.0.0.1, which a real fleet does
		// not: the per-IP limit is one per sidecar.
		limits := testRateLimits
		limits.PerIP *= n
		cfg.RateLimits = &limits
	}
	fake := fakezapier.New(cfg)
	t.Cleanup(fake.Close)
	checkNoThrottle(t, fake, new(bool))
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	f := &fleet{t: t, fake: fake, fakeURL: srv.URL, storage: t.TempDir()}
	bin := caddyBinary(t)
	for i := range n {
		s := &sidecar{t: t, name: fmt.Sprintf("sidecar-%d", i), port: sidecarPort(i), adminPort: sidecarPort(i) + 1}
		config := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(config, []byte(f.caddyfile(s, opts)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--config", config, "--adapter", "caddyfile")
		cmd.Env = append(append(os.Environ(), opts.env...),
			"ITEST_ZAPIER_SECRET="+testSecret, "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		s.proc, s.log = &caddyProcess{cmd: cmd, output: new(bytes.Buffer)}, new(syncBuffer)
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.proc.stop(t)
			if t.Failed() {
				t.Logf("%s output:\n%s", s.name, s.log)
			}
		})
		f.sidecars = append(f.sidecars, s)
	}
	for _, s := range f.sidecars {
		eventually(t, 30*time.Second, s.name+" to serve its JWKS", func() bool {
			status, _, _, err := send(request{path: "/.well-known/jwks.json", base: s.port, client: &http.Client{Timeout: time.Second}})
			return err == nil && status == http.StatusOK
		})
	}
	return f
}

func (f *fleet) caddyfile(s *sidecar, opts fleetOptions) string {
	extra := ""
	if opts.extraSites != nil {
		extra = opts.extraSites((s.port - sidecarPort(0)) / 2)
	}
	return fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	persist_config off
	grace_period 1ns
	storage file_system %s
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
`, s.adminPort, f.storage, testClientID, testIssuer, f.fakeURL, f.fakeURL, f.fakeURL, testBudget, opts.zapierExtra, s.port, f.fakeURL, opts.siteExtra, extra)
}

// jwks returns the sidecar's JWKS body.
func (s *sidecar) jwks() []byte {
	s.t.Helper()
	status, _, body, err := send(request{path: "/.well-known/jwks.json", base: s.port})
	if err != nil || status != http.StatusOK {
		s.t.Fatalf("%s jwks: %d %v %s", s.name, status, err, body)
	}
	return body
}

func (s *sidecar) kids() []string { return parseKids(s.t, s.jwks()) }

// echoAs calls the fake's echo route through this sidecar as an identity.
func (s *sidecar) echoAs(tenant, user string) echo {
	s.t.Helper()
	status, body, err := s.tryEcho(tenant, user)
	if err != nil || status != http.StatusOK {
		s.t.Fatalf("%s: echo as %s/%s: %d %v %s", s.name, tenant, user, status, err, body)
	}
	return decodeEcho(s.t, body)
}

func (s *sidecar) tryEcho(tenant, user string) (int, []byte, error) {
	status, _, body, err := send(request{path: "/zapier/api/v2/echo", tenant: tenant, user: user, base: s.port})
	return status, body, err
}

// admin calls the sidecar's admin endpoint.
func (s *sidecar) admin(method, path string) (int, []byte) {
	s.t.Helper()
	return s.adminJSON(method, path, nil)
}

// adminJSON calls the sidecar's admin endpoint with v as the JSON body.
func (s *sidecar) adminJSON(method, path string, v any) (int, []byte) {
	s.t.Helper()
	return adminJSON(s.t, fmt.Sprintf("http://localhost:%d", s.adminPort), method, path, v)
}

type rotated struct {
	Next struct {
		KID         string    `json:"kid"`
		State       string    `json:"state"`
		ActivatesAt time.Time `json:"activates_at"`
	} `json:"next"`
}

func (s *sidecar) rotate() rotated {
	s.t.Helper()
	status, body := s.admin(http.MethodPost, "/zapier/keys/rotate")
	if status != http.StatusOK {
		s.t.Errorf("%s: rotate: %d %s", s.name, status, body)
		return rotated{}
	}
	var r rotated
	if err := json.Unmarshal(body, &r); err != nil {
		s.t.Error(err)
	}
	return r
}

// keyStates is the kid → state map of the sidecar's /zapier/status.
func (s *sidecar) keyStates() map[string]string {
	s.t.Helper()
	status, body := s.admin(http.MethodGet, "/zapier/status")
	if status != http.StatusOK {
		s.t.Fatalf("%s: status: %d %s", s.name, status, body)
	}
	var st struct {
		Keys []struct{ KID, State string } `json:"keys"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		s.t.Fatal(err)
	}
	states := map[string]string{}
	for _, k := range st.Keys {
		states[k.KID] = k.State
	}
	return states
}

// all runs f for every sidecar at the same moment and waits for them.
func (f *fleet) all(fn func(i int, s *sidecar)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range f.sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i, s)
		}()
	}
	close(start)
	wg.Wait()
}

func TestSidecarsPublishOneKeySet(t *testing.T) {
	f := startFleet(t, fleetOptions{})
	first := f.sidecars[0].jwks()
	if kids := parseKids(t, first); len(kids) != 1 {
		t.Fatalf("three sidecars started together on empty storage publish %v, want one key", kids)
	}
	for _, s := range f.sidecars[1:] {
		if body := s.jwks(); !bytes.Equal(body, first) {
			t.Errorf("%s publishes %s, sidecar-0 %s", s.name, body, first)
		}
	}
	for _, s := range f.sidecars {
		s.echoAs("one-set", s.name)
	}
	for _, jwt := range f.fake.JWTs() {
		if jwt.KID != parseKids(t, first)[0] {
			t.Errorf("%s/%s was signed with %s", jwt.Tenant, jwt.User, jwt.KID)
		}
	}
}

// A rotation asked of one sidecar reaches the others within key_sync: here
// 1s, where the default would be 1m, so a sidecar that ignored key_sync
// would miss the deadline below.
func TestRotationOnOneSidecarReachesAllWithinKeySync(t *testing.T) {
	f := startFleet(t, fleetOptions{zapierExtra: "key_rotation 0\n\t\tkey_overlap 1h\n\t\tkey_sync 1s"})
	before := f.sidecars[0].kids()
	next := f.sidecars[0].rotate().Next.KID
	done := time.Now()
	if next == "" || slices.Contains(before, next) {
		t.Fatalf("rotate answered kid %q (published before: %v)", next, before)
	}
	for _, s := range f.sidecars[1:] {
		eventually(t, 15*time.Second, s.name+" to publish the next key", func() bool {
			return slices.Contains(s.kids(), next)
		})
		t.Logf("%s published the next key %s after the rotation", s.name, time.Since(done).Round(10*time.Millisecond))
		if states := s.keyStates(); states[next] != "next" || states[before[0]] != "active" {
			t.Errorf("%s status: %v", s.name, states)
		}
	}
	for _, s := range f.sidecars {
		if !bytes.Equal(s.jwks(), f.sidecars[0].jwks()) {
			t.Errorf("%s publishes another set than sidecar-0", s.name)
		}
	}
}

// Three sidecars asked to rotate at the same moment: the storage lock makes
// them agree on one next key.
func TestSimultaneousRotationsCreateOneNextKey(t *testing.T) {
	f := startFleet(t, fleetOptions{zapierExtra: "key_rotation 0\n\t\tkey_overlap 1h\n\t\tkey_sync 1s"})
	before := f.sidecars[0].kids()
	answers := make([]string, len(f.sidecars))
	f.all(func(i int, s *sidecar) { answers[i] = s.rotate().Next.KID })
	for i, kid := range answers {
		if kid == "" || kid != answers[0] {
			t.Fatalf("sidecar-%d scheduled %q; the answers were %v, want one next key", i, kid, answers)
		}
	}
	want := append(slices.Clone(before), answers[0])
	for _, s := range f.sidecars {
		eventually(t, 15*time.Second, s.name+" to publish the two keys", func() bool {
			return slices.Equal(s.kids(), want)
		})
	}
}

// Every pair: a JWT minted by one sidecar verifies against the JWKS served
// by another, before and after a rotation, both in the fake (its own
// verifier, fetching the JWKS over HTTP) and with go-jose.
func TestJWTFromAnySidecarVerifiesAgainstAnyOther(t *testing.T) {
	f := startFleet(t, fleetOptions{zapierExtra: "key_rotation 0\n\t\tkey_overlap 4s\n\t\tjwt_ttl 4s\n\t\tkey_sync 1s"})
	matrix := func(round string) string {
		var kid string
		for i, signer := range f.sidecars {
			for j, publisher := range f.sidecars {
				if i == j {
					continue
				}
				f.fake.SetJWKSURL(fmt.Sprintf("http://127.0.0.1:%d/.well-known/jwks.json", publisher.port))
				user := fmt.Sprintf("%s-signed-by-%d-published-by-%d", round, i, j)
				signer.echoAs("matrix", user)
				jwts := f.fake.JWTs()
				last := jwts[len(jwts)-1]
				if last.User != user {
					t.Fatalf("the fake's last JWT is %s's, want %s's", last.User, user)
				}
				verifyWithGoJOSE(t, last.Raw, publisher.jwks())
				if kid == "" {
					kid = last.KID
				} else if last.KID != kid {
					t.Errorf("%s: sidecars sign with %s and %s at once", round, kid, last.KID)
				}
			}
		}
		return kid
	}
	first := matrix("before")

	r := f.sidecars[0].rotate()
	time.Sleep(time.Until(r.Next.ActivatesAt) + 100*time.Millisecond) // the next key signs from then on
	if after := matrix("after"); after != r.Next.KID || after == first {
		t.Errorf("after the rotation the sidecars sign with %s, want the next key %s", after, r.Next.KID)
	}
	if st := f.fake.Stats(); st.JWTFailures != 0 {
		t.Fatalf("the fake refused %d JWTs: %s", st.JWTFailures, f.fake.LastJWTFailure())
	}
}

// verifyWithGoJOSE checks a compact JWT against a JWKS body with go-jose,
// which shares no code with the signer nor with the fake's verifier.
func verifyWithGoJOSE(t *testing.T, raw string, jwksBody []byte) {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwksBody, &set); err != nil {
		t.Fatalf("go-jose cannot parse the JWKS: %v", err)
	}
	tok, err := josejwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("go-jose cannot parse the JWT: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s is not in the JWKS (%d matches)", tok.Headers[0].KeyID, len(keys))
	}
	var claims josejwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("go-jose: the signature does not verify: %v", err)
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{Issuer: testIssuer, Time: time.Now()}, 0); err != nil {
		t.Errorf("go-jose: claims: %v", err)
	}
}
