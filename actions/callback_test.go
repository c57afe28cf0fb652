package actions

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// callbackSigner stands in for Zapier's callback signing key and its JWKS.
type callbackSigner struct {
	key  *ecdsa.PrivateKey
	jwks *httptest.Server
}

func newCallbackSigner(t *testing.T) *callbackSigner {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	coord := func(n *big.Int) string { return base64.RawURLEncoding.EncodeToString(n.FillBytes(make([]byte, 32))) }
	doc := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"zk1","use":"sig","alg":"ES256","x":%q,"y":%q}]}`, coord(key.X), coord(key.Y))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, doc)
	}))
	t.Cleanup(srv.Close)
	return &callbackSigner{key: key, jwks: srv}
}

// testCallbackAudience is the aud the test signer puts in callback tokens.
const testCallbackAudience = "https://app.example.com/zapier/actions/callback"

func (s *callbackSigner) sign(t *testing.T, runID string) string {
	claims := jwt.MapClaims{"sub": runID}
	if runID == "" {
		claims = jwt.MapClaims{}
	}
	return s.signClaims(t, claims)
}

func (s *callbackSigner) signClaims(t *testing.T, claims jwt.MapClaims) string {
	now := time.Now()
	claims["iat"], claims["exp"], claims["aud"] = now.Unix(), now.Add(5*time.Minute).Unix(), testCallbackAudience
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = "zk1"
	signed, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// callbackConfig is the callback options with signer's keys.
func callbackConfig(signer *callbackSigner) CallbackConfig {
	return CallbackConfig{URL: "https://app.example.com/zapier/actions/callback", JWKSURL: signer.jwks.URL, Audience: testCallbackAudience}
}

// withCallbacks turns run callbacks on for the env's handler.
func (e *actionsEnv) withCallbacks(signer *callbackSigner) {
	e.t.Helper()
	e.cfg.Callback = callbackConfig(signer)
	e.h = e.handler(e.cfg)
}

func deliver(t *testing.T, h *Handler, signature, body string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/callback", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Zapier-Callback-Signature", signature)
	}
	rec := httptest.NewRecorder()
	if err := h.Serve(rec, req); err != nil {
		t.Fatal(err)
	}
	return rec.Code
}

// A run waiting on one sidecar finishes from a callback that reached
// another sidecar sharing the storage, without polling Zapier.
func TestCallbackOnAnotherSidecarFinishesTheWaitingRun(t *testing.T) {
	signer := newCallbackSigner(t)
	e := newActionsEnv(t)
	e.withCallbacks(signer)
	e.api.set(func(s *stubAPI) { s.statuses = []string{"waiting"} })
	// The other sidecar: its own handler on the same storage.
	other := e.handler(e.cfg)
	done := make(chan actionsResponse, 1)
	go func() {
		done <- e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"send_message","wait":"20s"}`)
	}()
	// The run exists once the create call was made; deliver its result to
	// the other sidecar (retrying while the creator records the run).
	body := `{"data":{"type":"run","id":"run-1","status":"success","results":[{"id":7}],"errors":[]}}`
	for deadline := time.Now().Add(10 * time.Second); ; {
		if len(e.api.callsTo(http.MethodPost, "/v2/action-runs")) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run was never created")
		}
		time.Sleep(time.Millisecond)
	}
	if code := deliver(t, other, signer.sign(t, "run-1"), body); code != http.StatusOK {
		t.Fatalf("callback on the other sidecar: %d", code)
	}
	res := <-done
	if res.status != http.StatusOK || !strings.Contains(res.body, `"id":7`) {
		t.Fatalf("POST run: %d %s", res.status, res.body)
	}
	if n := len(e.api.callsTo(http.MethodGet, "/v2/action-runs/")); n != 0 {
		t.Errorf("%d polls despite the callback", n)
	}
	// Replayed, forged, unsigned and unknown deliveries change nothing.
	if code := deliver(t, e.h, signer.sign(t, "run-1"), body); code != http.StatusConflict {
		t.Errorf("replay: %d", code)
	}
	forger := newCallbackSigner(t)
	if code := deliver(t, e.h, forger.sign(t, "run-1"), strings.Replace(body, "success", "error", 1)); code != http.StatusUnauthorized {
		t.Errorf("forged: %d", code)
	}
	if code := deliver(t, e.h, "", body); code != http.StatusUnauthorized {
		t.Errorf("unsigned: %d", code)
	}
	if code := deliver(t, e.h, signer.sign(t, "run-1"), strings.Replace(body, "run-1", "run-2", 1)); code != http.StatusUnauthorized {
		t.Errorf("signature for another run: %d", code)
	}
	unknown := signer.sign(t, "run-9")
	if code := deliver(t, e.h, unknown, strings.Replace(body, "run-1", "run-9", 1)); code != http.StatusNotFound {
		t.Errorf("unknown run: %d", code)
	}
	// The same token again, on the other sidecar: a replay, refused before
	// anything else.
	if code := deliver(t, other, unknown, strings.Replace(body, "run-1", "run-9", 1)); code != http.StatusConflict {
		t.Errorf("token replayed on the other sidecar: %d", code)
	}
	// A token naming no run is refused (allow_missing_subject is off).
	if code := deliver(t, e.h, signer.sign(t, ""), strings.Replace(body, "run-1", "run-8", 1)); code != http.StatusUnauthorized {
		t.Errorf("token without sub: %d", code)
	}
	if res := e.do(http.MethodGet, "/runs/run-1", "alice", ""); res.status != http.StatusOK || !strings.Contains(res.body, `"id":7`) {
		t.Errorf("runs/run-1 after the refusals: %d %s", res.status, res.body)
	}
}

func TestCallbackOptionsRefused(t *testing.T) {
	for name, c := range map[string]CallbackConfig{
		"http":             {URL: "http://app.example.com/cb", JWKSURL: "https://z.example/jwks", Audience: "a"},
		"relative":         {URL: "/cb", JWKSURL: "https://z.example/jwks", Audience: "a"},
		"no jwks":          {URL: "https://app.example.com/cb"},
		"no audience":      {URL: "https://app.example.com/cb", JWKSURL: "https://z.example/jwks"},
		"jwks without url": {JWKSURL: "https://z.example/jwks"},
		"too long":         {URL: "https://app.example.com/" + strings.Repeat("a", 2048), JWKSURL: "https://z.example/jwks", Audience: "a"},
		"negative timeout": {URL: "https://app.example.com/cb", JWKSURL: "https://z.example/jwks", Audience: "a", Timeout: -time.Second},
	} {
		_, err := c.Verifier()
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "no audience" && !strings.Contains(err.Error(), "callback_audience") {
			t.Errorf("no audience: %v does not name the option", err)
		}
	}
	c := CallbackConfig{URL: "https://app.example.com/cb", JWKSURL: "https://z.example/jwks", Issuer: "i"}
	if v, err := c.Verifier(); err != nil || v == nil || c.Timeout != DefaultCallbackTimeout {
		t.Errorf("valid options: %v %v, timeout %s", v, err, c.Timeout)
	}
}
