package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// Run callbacks across sidecars (issue 22 item 7): a callback signature is
// bound to one run and good for one delivery, on every sidecar sharing the
// storage.
//
// Zapier calls only https URLs, so each sidecar also serves zapier_actions
// on an HTTPS site of its own (a self-signed certificate, see
// cbSelfSignedCert), on sidecarPort(n+i), a port the OpenAPI check
// recognises as a gateway's. Every sidecar has the same
// configuration, as behind one public name: run_callback_url is sidecar
// 0's HTTPS site, where Zapier delivers; a replay is sent to another
// sidecar's HTTPS site, as a load balancer would route it.

const cbFleetSize = 2

// cbFleetURL is the callback route on sidecar i's HTTPS site.
func cbFleetURL(i int) string {
	return fmt.Sprintf("https://localhost:%d/zapier/actions/callback", sidecarPort(cbFleetSize+i))
}

// startCallbackFleet starts cbFleetSize sidecars with run callbacks, the
// fake's catalog set to specs, and connections stored for org/alice and
// org/bob. actionsExtra adds lines to every zapier_actions block.
func startCallbackFleet(t *testing.T, actionsExtra string, specs ...fakezapier.ActionSpec) *fleet {
	t.Helper()
	// The fake's callback JWKS URL is known only once startFleet has made
	// it, after the sidecars' configuration is written: serve it from here.
	var fake atomic.Pointer[fakezapier.Server]
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := fake.Load()
		if f == nil || r.URL.Path != fakezapier.CallbackJWKSPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.CallbackJWKS())
	}))
	t.Cleanup(jwks.Close)
	cert, key := cbSelfSignedCert(t)

	actions := actionsSite(fmt.Sprintf("run_callback_url %s\n\t\t\tcallback_jwks_url %s%s\n\t\t\tcallback_issuer %s\n\t\t\tcallback_timeout 30s\n\t\t\t%s",
		cbFleetURL(0), jwks.URL, fakezapier.CallbackJWKSPath, fakezapier.CallbackIssuer, actionsExtra))
	f := startFleet(t, fleetOptions{
		n:         cbFleetSize,
		siteExtra: actions,
		extraSites: func(i int) string {
			return fmt.Sprintf("https://localhost:%d {\n\ttls %s %s\n%s\n}", sidecarPort(cbFleetSize+i), cert, key, actions)
		},
		fake: fakezapier.Config{
			CallbackAllowHosts: []string{"localhost"},
			// What is under test is the signature, not the TLS chain.
			CallbackHTTPClient: &http.Client{Transport: validating(&http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}})},
			CallbackRetryBase:  50 * time.Millisecond,
		},
	})
	fake.Store(f.fake)
	f.fake.RegisterApp(actApp, actAppUUID)
	f.fake.SetActions(actAppUUID, specs...)
	for _, user := range []string{"alice", "bob"} {
		cbSeedConnection(t, f, "org", user)
	}
	return f
}

// cbSelfSignedCert writes a self-signed certificate for localhost and its
// key, and returns their paths. The sidecars load it (tls cert key) rather
// than each issuing one from Caddy's internal CA: two Caddy processes
// creating that CA in one fresh storage at the same moment race (one reads
// the intermediate certificate before the other has written its key).
func cbSelfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// cbSeedConnection stores a connection for (tenant, user) as zapier_connect
// would have (its legacy key, which the store migrates on read).
func cbSeedConnection(t *testing.T, f *fleet, tenant, user string) {
	t.Helper()
	conn := f.fake.AddConnection(tenant, user, actAppUUID, "Slack")
	dir := filepath.Join(f.storage, "zapier", "connections", trgKeyPart(tenant), trgKeyPart(user))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(map[string]any{"connection_id": conn, "app": actApp, "app_uuid": actAppUUID,
		"created": time.Now().UTC(), "last_verified": time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(dir, trgKeyPart(actAppUUID)), rec, 0o600); err != nil {
		t.Fatal(err)
	}
}

// cbDo calls a zapier_actions route of sidecar s as org/user.
func cbDo(t *testing.T, s *sidecar, method, route, user, body string) (int, []byte) {
	t.Helper()
	r := request{method: method, path: "/zapier/actions/" + route, tenant: "org", user: user, body: body, base: s.port}
	if body != "" {
		r.header = http.Header{"Content-Type": {"application/json"}}
	}
	status, _, raw, err := send(r)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, route, s.name, err)
	}
	return status, raw
}

// cbRun is POST run of send_message on s as org/user with wait.
func cbRun(t *testing.T, s *sidecar, user, wait string) (int, actRun) {
	t.Helper()
	status, body := cbDo(t, s, http.MethodPost, "run", user, `{"app":"`+actApp+`","action":"send_message","inputs":{"text":"hi"},"wait":"`+wait+`"}`)
	if status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("POST run on %s: %d %s", s.name, status, body)
	}
	return status, actDecodeRun(t, body)
}

// cbStatus is runs/{id} on s as org/user: the HTTP status and the run.
func cbStatus(t *testing.T, s *sidecar, user, runID string) (int, actRun) {
	t.Helper()
	status, body := cbDo(t, s, http.MethodGet, "runs/"+runID, user, "")
	if status != http.StatusOK && status != http.StatusAccepted {
		t.Fatalf("runs/%s on %s: %d %s", runID, s.name, status, body)
	}
	return status, actDecodeRun(t, body)
}

// cbRefused checks that a callback POST was answered status with code.
func cbRefused(t *testing.T, what string, err error, status int) {
	t.Helper()
	var se *fakezapier.CallbackStatusError
	if !errors.As(err, &se) || se.Status != status {
		t.Errorf("%s: %v, want HTTP %d", what, err, status)
	}
}

// A run completes through its callback on sidecar A; the same signed
// callback replayed to sidecar B, as sent or with another result, is
// refused with 409 callback_replayed, and the run's stored result is
// unchanged on both. A signature whose sub names another run, or no run,
// cannot complete a run on either sidecar; one whose sub names it can.
func TestRunCallbackReplayedToAnotherSidecarIsRefused(t *testing.T) {
	f := startCallbackFleet(t, "", fakezapier.ActionSpec{Key: "send_message", Delay: 300 * time.Millisecond})
	a, b := f.sidecars[0], f.sidecars[1]

	status, run := cbRun(t, a, "alice", "20s")
	if status != http.StatusOK || run.Status != "success" {
		t.Fatalf("POST run on %s: %d %+v", a.name, status, run)
	}
	if d := f.fake.CallbackDeliveries(); len(d) != 1 || !d[0].Delivered || d[0].URL != cbFleetURL(0) || d[0].LastStatus != http.StatusOK {
		t.Fatalf("the run did not finish through its callback on %s: %+v", a.name, d)
	}
	if n := f.fake.CallCounts()["GET /v2/action-runs/{id}"]; n != 0 {
		t.Fatalf("the run was polled %d times", n)
	}
	body, token, err := f.fake.SentCallback(run.ID)
	if err != nil {
		t.Fatal(err)
	}

	// The same token to B: as sent, and with another result.
	cbRefused(t, "the callback replayed to "+b.name, f.fake.PostCallback(cbFleetURL(1), body, token), http.StatusConflict)
	cbRefused(t, "the callback replayed to "+b.name+" with an error result",
		f.fake.PostCallback(cbFleetURL(1), fakezapier.CallbackBody(run.ID, "error", nil), token), http.StatusConflict)
	cbRefused(t, "the callback replayed to "+a.name, f.fake.PostCallback(cbFleetURL(0), body, token), http.StatusConflict)
	for _, s := range f.sidecars {
		status, got := cbStatus(t, s, "alice", run.ID)
		if status != http.StatusOK || got.Status != "success" || string(got.Results) != string(run.Results) || string(got.Errors) != string(run.Errors) {
			t.Errorf("runs/{id} on %s after the replays: %d %+v, want %+v", s.name, status, got, run)
		}
	}
	if n := f.fake.CallCounts()["GET /v2/action-runs/{id}"]; n != 0 {
		t.Errorf("runs/{id} polled Zapier %d times despite the stored result", n)
	}

	// Bob's run, whose own callback never comes (it runs for an hour).
	f.fake.SetActions(actAppUUID, fakezapier.ActionSpec{Key: "send_message", Delay: time.Hour})
	f.fake.SetCallbackFault(fakezapier.CallbackDrop)
	status, bobRun := cbRun(t, b, "bob", "0s")
	if status != http.StatusAccepted {
		t.Fatalf("bob's run: %d %+v", status, bobRun)
	}
	forged := fakezapier.CallbackBody(bobRun.ID, "error", nil)
	for i, s := range f.sidecars {
		cbRefused(t, "alice's token for bob's run on "+s.name, f.fake.PostCallback(cbFleetURL(i), forged, token), http.StatusUnauthorized)
		cbRefused(t, "a fresh token for alice's run, for bob's run, on "+s.name, f.fake.PostCallback(cbFleetURL(i), forged, f.fake.SignCallback(run.ID)), http.StatusUnauthorized)
		cbRefused(t, "a token without sub on "+s.name, f.fake.PostCallback(cbFleetURL(i), forged, f.fake.SignCallback("")), http.StatusUnauthorized)
	}
	for _, s := range f.sidecars {
		if status, got := cbStatus(t, s, "bob", bobRun.ID); status != http.StatusAccepted || got.Status == "error" || got.Status == "success" {
			t.Errorf("bob's run on %s after the refused callbacks: %d %+v", s.name, status, got)
		}
	}

	// A token naming bob's run completes it, on B; A answers from storage.
	result := map[string]any{"delivered": "bound"}
	if err := f.fake.PostCallback(cbFleetURL(1), fakezapier.CallbackBody(bobRun.ID, "success", result), f.fake.SignCallback(bobRun.ID)); err != nil {
		t.Fatalf("bob's own callback on %s: %v", b.name, err)
	}
	if status, got := cbStatus(t, a, "bob", bobRun.ID); status != http.StatusOK || got.Status != "success" || string(got.Results) != `[{"delivered":"bound"}]` {
		t.Errorf("bob's run on %s after its callback on %s: %d %+v (results %s)", a.name, b.name, status, got, got.Results)
	}
}

// With allow_missing_subject a token without sub is accepted, but only
// once across the sidecars: spent on A for alice's run, it cannot complete
// bob's run on B.
func TestRunCallbackWithoutSubjectIsSpentOnceAcrossSidecars(t *testing.T) {
	f := startCallbackFleet(t, "allow_missing_subject", fakezapier.ActionSpec{Key: "send_message", Delay: time.Hour})
	a, b := f.sidecars[0], f.sidecars[1]
	f.fake.SetCallbackFault(fakezapier.CallbackDrop)
	_, aliceRun := cbRun(t, a, "alice", "0s")
	_, bobRun := cbRun(t, b, "bob", "0s")

	token := f.fake.SignCallback("")
	if err := f.fake.PostCallback(cbFleetURL(0), fakezapier.CallbackBody(aliceRun.ID, "success", map[string]any{"for": "alice"}), token); err != nil {
		t.Fatalf("a token without sub, allowed, on %s: %v", a.name, err)
	}
	cbRefused(t, "the same token for bob's run on "+b.name,
		f.fake.PostCallback(cbFleetURL(1), fakezapier.CallbackBody(bobRun.ID, "success", map[string]any{"for": "bob"}), token), http.StatusConflict)

	if status, got := cbStatus(t, b, "alice", aliceRun.ID); status != http.StatusOK || string(got.Results) != `[{"for":"alice"}]` {
		t.Errorf("alice's run on %s: %d %+v (results %s)", b.name, status, got, got.Results)
	}
	for _, s := range f.sidecars {
		if status, got := cbStatus(t, s, "bob", bobRun.ID); status != http.StatusAccepted || got.Status == "success" {
			t.Errorf("bob's run on %s after the replayed token: %d %+v (results %s)", s.name, status, got, got.Results)
		}
	}
}
