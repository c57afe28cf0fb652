package fakezapier

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// received is one callback POST as the test receiver got it.
type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is an https callback endpoint that answers the queued statuses
// in turn (200 once the queue is empty) and reports each request.
type receiver struct {
	*httptest.Server
	got   chan received
	mu    sync.Mutex
	queue []int
	hold  chan struct{} // if non-nil, requests wait on it (or their context)
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	rc := &receiver{got: make(chan received, 16), queue: statuses}
	rc.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.got <- received{header: r.Header.Clone(), body: body, at: time.Now()}
		rc.mu.Lock()
		hold := rc.hold
		status := http.StatusOK
		if len(rc.queue) > 0 {
			status, rc.queue = rc.queue[0], rc.queue[1:]
		}
		rc.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				// Abort: returning would send an implicit 200.
				panic(http.ErrAbortHandler)
			}
		}
		if status == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", status)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// answer sets the statuses of the next requests.
func (rc *receiver) answer(statuses ...int) {
	rc.mu.Lock()
	rc.queue = statuses
	rc.mu.Unlock()
}

// holdUntil makes requests wait until release is closed.
func (rc *receiver) holdUntil(release chan struct{}) {
	rc.mu.Lock()
	rc.hold = release
	rc.mu.Unlock()
}

func (rc *receiver) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no callback within 5s")
		return received{}
	}
}

func (rc *receiver) none(t *testing.T) {
	t.Helper()
	select {
	case r := <-rc.got:
		t.Fatalf("unexpected callback %s", r.body)
	default:
	}
}

// cbEnv is an env whose fake trusts rc and may call 127.0.0.1.
func cbEnv(t *testing.T, rc *receiver, mutate ...func(*Config)) *env {
	e := newEnv(t, append([]func(*Config){func(c *Config) {
		c.CallbackAllowHosts = []string{"127.0.0.1"}
		c.CallbackHTTPClient = rc.Client()
		c.CallbackRetryBase = time.Millisecond
	}}, mutate...)...)
	t.Cleanup(e.fz.Close)
	return e
}

// startRun creates a run of key (delay one minute on the fake's clock) with
// the given callback_url placement and returns its id.
func (e *env) startRun(tok, conn, key, callback string) string {
	e.t.Helper()
	body := fmt.Sprintf(`{"data":{"action":%q,"authentication":%q,"inputs":{"text":"hi"},"callback_url":%q}}`,
		e.actionID(tok, testApp, key), conn, callback)
	res := e.api(http.MethodPost, "/v2/action-runs", tok, body)
	if res.status != http.StatusOK {
		e.t.Fatalf("create run: HTTP %d %s", res.status, res.raw)
	}
	return res.body["data"].(map[string]any)["id"].(string)
}

func (e *env) callbackSetup() (tok, conn string) {
	tok = e.exchange(e.key("ES256"), "org", "alice")
	conn = e.fz.AddConnection("org", "alice", testApp, "Slack")
	delay := 7
	e.fz.SetActions(testApp,
		ActionSpec{Key: "send", Delay: time.Minute, Results: []map[string]any{{"ok": true, "n": 1}}},
		ActionSpec{Key: "fails", Delay: time.Minute, Errors: []RunError{{Code: "throttled", Title: "Slow", Detail: "later", Delay: &delay}}})
	return tok, conn
}

func (e *env) delivery(runID string) CallbackDelivery {
	for _, d := range e.fz.CallbackDeliveries() {
		if d.RunID == runID {
			return d
		}
	}
	e.t.Fatalf("no delivery for run %s", runID)
	return CallbackDelivery{}
}

func (e *env) waitDone(runID string) CallbackDelivery {
	e.t.Helper()
	waitFor(e.t, "the callback of "+runID+" to finish", func() bool { return e.delivery(runID).Done })
	return e.delivery(runID)
}

// verifyCallbackJWT checks tok against the fake's served JWKS with
// crypto/rsa only, at now; it returns the claims.
func (e *env) verifyCallbackJWT(tok string, now time.Time) (map[string]any, error) {
	e.t.Helper()
	res := e.api(http.MethodGet, "/.well-known/jwks.json", "", "")
	if res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "application/json") {
		e.t.Fatalf("JWKS: HTTP %d %v", res.status, res.header)
	}
	var set struct{ Keys []map[string]string }
	if err := json.Unmarshal([]byte(res.raw), &set); err != nil || len(set.Keys) != 1 {
		e.t.Fatalf("JWKS %s: %v", res.raw, err)
	}
	jwk := set.Keys[0]
	if jwk["kty"] != "RSA" || jwk["use"] != "sig" || jwk["alg"] != "RS256" || jwk["kid"] == "" || jwk["d"] != "" {
		e.t.Fatalf("JWK %v", jwk)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			e.t.Fatalf("base64url %q: %v", s, err)
		}
		return b
	}
	var header map[string]string
	if err := json.Unmarshal(dec(parts[0]), &header); err != nil {
		e.t.Fatal(err)
	}
	if header["alg"] != "RS256" {
		return nil, fmt.Errorf("alg %q", header["alg"])
	}
	if header["kid"] != jwk["kid"] {
		return nil, errors.New("unknown kid")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(dec(jwk["n"])), E: int(new(big.Int).SetBytes(dec(jwk["e"])).Int64())}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], dec(parts[2])); err != nil {
		return nil, errors.New("bad signature")
	}
	var claims map[string]any
	if err := json.Unmarshal(dec(parts[1]), &claims); err != nil {
		e.t.Fatal(err)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 300 {
		return claims, fmt.Errorf("exp-iat = %v", exp-iat)
	}
	if float64(now.Unix()) >= exp {
		return claims, errors.New("expired")
	}
	return claims, nil
}

func TestCallbackDeliveryShapeAndSignature(t *testing.T) {
	rc := newReceiver(t)
	e := cbEnv(t, rc)
	tok, conn := e.callbackSetup()
	ok := e.startRun(tok, conn, "send", rc.URL+"/zapier/callbacks")
	failed := e.startRun(tok, conn, "fails", rc.URL+"/zapier/callbacks")
	e.advance(59 * time.Second)
	rc.none(t) // not before the terminal state (best effort: nothing has arrived yet)
	e.advance(time.Second)

	byID := map[string]received{}
	for range 2 {
		r := rc.next(t)
		var env struct{ Data map[string]any }
		if err := json.Unmarshal(r.body, &env); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		byID[env.Data["id"].(string)] = r
	}
	for _, runID := range []string{ok, failed} {
		r, found := byID[runID]
		if !found {
			t.Fatalf("no callback for %s", runID)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		// The body is the polling view plus the id.
		poll := e.api(http.MethodGet, "/v2/action-runs/"+runID, tok, "")
		var want, got map[string]map[string]any
		_ = json.Unmarshal([]byte(poll.raw), &want)
		_ = json.Unmarshal(r.body, &got)
		want["data"]["id"] = runID
		if wb, _ := json.Marshal(want); !bytes.Equal(wb, mustMarshal(t, got)) {
			t.Errorf("callback body %s, want %s", r.body, wb)
		}
		claims, err := e.verifyCallbackJWT(r.header.Get("Zapier-Callback-Signature"), e.now())
		if err != nil {
			t.Fatalf("signature: %v", err)
		}
		if claims["sub"] != runID || int64(claims["iat"].(float64)) > e.now().Unix() || int64(claims["iat"].(float64)) < e.now().Unix()-5 {
			t.Errorf("claims %v", claims)
		}
		if d := e.waitDone(runID); d.Attempts != 1 || d.LastStatus != 200 || !d.Delivered || d.Err != "" || d.URL != rc.URL+"/zapier/callbacks" || d.Fault != CallbackOK {
			t.Errorf("delivery %+v", d)
		}
	}
	if !strings.Contains(string(byID[failed].body), `"status":"error"`) || !strings.Contains(string(byID[failed].body), `"code":"throttled"`) ||
		!strings.Contains(string(byID[ok].body), `"results":[{"n":1,"ok":true}]`) {
		t.Errorf("bodies %s / %s", byID[ok].body, byID[failed].body)
	}
	if n := e.fz.CallCounts()["GET /.well-known/jwks.json"]; n < 2 {
		t.Errorf("JWKS calls %d", n)
	}
	if r := e.api(http.MethodPost, "/.well-known/jwks.json", "", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST to the JWKS: HTTP %d", r.status)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCallbackRetries(t *testing.T) {
	// 5xx is retried with exponential backoff, byte-identical, then success.
	rc := newReceiver(t, 503, 500, 200)
	e := cbEnv(t, rc, func(c *Config) { c.CallbackRetryBase = 40 * time.Millisecond })
	tok, conn := e.callbackSetup()
	id := e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute)
	a1, a2, a3 := rc.next(t), rc.next(t), rc.next(t)
	if g := a2.at.Sub(a1.at); g < 40*time.Millisecond {
		t.Errorf("first backoff %s, want ≥ 40ms", g)
	}
	if g := a3.at.Sub(a2.at); g < 80*time.Millisecond {
		t.Errorf("second backoff %s, want ≥ 80ms", g)
	}
	for _, a := range []received{a2, a3} {
		if !bytes.Equal(a.body, a1.body) || a.header.Get("Zapier-Callback-Signature") != a1.header.Get("Zapier-Callback-Signature") {
			t.Errorf("retry differs from the first attempt")
		}
	}
	if d := e.waitDone(id); d.Attempts != 3 || d.LastStatus != 200 || !d.Delivered || d.Err != "" {
		t.Errorf("delivery %+v", d)
	}
	rc.none(t)

	// Three 5xx: given up after 3 attempts.
	rc = newReceiver(t, 502, 502, 502, 502)
	e = cbEnv(t, rc)
	tok, conn = e.callbackSetup()
	id = e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute)
	rc.next(t)
	rc.next(t)
	rc.next(t)
	if d := e.waitDone(id); d.Attempts != 3 || d.LastStatus != 502 || d.Delivered || d.Err != "HTTP 502" {
		t.Errorf("delivery %+v", d)
	}
	rc.none(t)

	// Network errors are retried: nothing listens on a closed server's port.
	dead := httptest.NewTLSServer(http.NotFoundHandler())
	deadURL := dead.URL + "/cb"
	dead.Close()
	e = cbEnv(t, rc)
	tok, conn = e.callbackSetup()
	id = e.startRun(tok, conn, "send", deadURL)
	e.advance(time.Minute)
	if d := e.waitDone(id); d.Attempts != 3 || d.LastStatus != 0 || d.Delivered || d.Err == "" {
		t.Errorf("delivery to a closed port %+v", d)
	}

	// Timeouts are retried.
	rc = newReceiver(t)
	rc.holdUntil(make(chan struct{})) // never released: every attempt times out
	e = cbEnv(t, rc, func(c *Config) { c.CallbackTimeout = 50 * time.Millisecond })
	tok, conn = e.callbackSetup()
	id = e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute)
	if d := e.waitDone(id); d.Attempts != 3 || d.Delivered || !strings.Contains(d.Err, "deadline") {
		t.Errorf("delivery to a slow receiver %+v", d)
	}
}

func TestCallbackNoRetryOn4xxOr3xx(t *testing.T) {
	for _, status := range []int{400, 401, 404, 410, 429, 302} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			rc := newReceiver(t, status, 200)
			e := cbEnv(t, rc)
			tok, conn := e.callbackSetup()
			id := e.startRun(tok, conn, "send", rc.URL+"/cb")
			e.advance(time.Minute)
			rc.next(t)
			d := e.waitDone(id)
			if d.Attempts != 1 || d.LastStatus != status || d.Delivered || d.Err != fmt.Sprintf("HTTP %d", status) {
				t.Errorf("delivery %+v", d)
			}
			rc.none(t) // neither a retry nor the redirect target
		})
	}
}

func TestCallbackFaults(t *testing.T) {
	rc := newReceiver(t)
	e := cbEnv(t, rc)
	tok, conn := e.callbackSetup()
	for fault, want := range map[CallbackFault]string{
		CallbackOK:           "",
		CallbackBadSignature: "bad signature",
		CallbackExpired:      "expired",
		CallbackUnknownKid:   "unknown kid",
		CallbackNoSignature:  "missing",
	} {
		e.fz.SetCallbackFault(fault)
		id := e.startRun(tok, conn, "send", rc.URL+"/cb")
		e.advance(time.Minute)
		r := rc.next(t)
		sig, present := r.header["Zapier-Callback-Signature"]
		var err error
		if !present {
			err = errors.New("missing")
		} else {
			_, err = e.verifyCallbackJWT(sig[0], e.now())
		}
		if got := fmt.Sprint(err); (want == "" && err != nil) || (want != "" && got != want) {
			t.Errorf("%v: verification error %v, want %q", fault, err, want)
		}
		if !strings.Contains(string(r.body), `"id":"`+id+`"`) {
			t.Errorf("%v: body %s", fault, r.body)
		}
		if d := e.waitDone(id); !d.Delivered || d.Fault != fault {
			t.Errorf("%v: delivery %+v", fault, d)
		}
	}

	// CallbackDrop: never sent; the run can still be polled.
	e.fz.SetCallbackFault(CallbackDrop)
	id := e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute)
	if d := e.waitDone(id); d.Attempts != 0 || d.Delivered || d.Fault != CallbackDrop || !strings.Contains(d.Err, "dropped") {
		t.Errorf("dropped delivery %+v", d)
	}
	rc.none(t)
	if r := e.api(http.MethodGet, "/v2/action-runs/"+id, tok, ""); !strings.Contains(r.raw, `"status":"success"`) {
		t.Errorf("polling a run whose callback was dropped: %s", r.raw)
	}
	if err := e.fz.ResendCallback(id); err == nil {
		t.Error("ResendCallback of a dropped callback succeeded")
	}
	if CallbackDrop.String() != "drop" || CallbackFault(99).String() != "CallbackFault(99)" {
		t.Error("CallbackFault.String")
	}
}

func TestResendAndForgedCallbacks(t *testing.T) {
	rc := newReceiver(t)
	e := cbEnv(t, rc)
	tok, conn := e.callbackSetup()
	id := e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute)
	first := rc.next(t)
	e.waitDone(id)

	// A replay is byte-identical, even once the signature has expired.
	e.advance(10 * time.Minute)
	if err := e.fz.ResendCallback(id); err != nil {
		t.Fatal(err)
	}
	again := rc.next(t)
	if !bytes.Equal(first.body, again.body) || first.header.Get("Zapier-Callback-Signature") != again.header.Get("Zapier-Callback-Signature") ||
		again.header.Get("Content-Type") != "application/json" {
		t.Errorf("resend differs:\n%s %v\n%s %v", first.body, first.header, again.body, again.header)
	}
	if d := e.delivery(id); d.Attempts != 1 {
		t.Errorf("ResendCallback changed the delivery: %+v", d)
	}
	rc.answer(409)
	var se *CallbackStatusError
	if err := e.fz.ResendCallback(id); !errors.As(err, &se) || se.Status != 409 {
		t.Errorf("resend answered 409: %v", err)
	}
	rc.next(t)
	if err := e.fz.ResendCallback("no-such-run"); err == nil {
		t.Error("ResendCallback of an unknown run succeeded")
	}

	// A forgery carries the published kid and valid claims, but another key.
	if err := e.fz.SendForgedCallback(rc.URL+"/cb", id, "error"); err != nil {
		t.Fatal(err)
	}
	forged := rc.next(t)
	tokStr := forged.header.Get("Zapier-Callback-Signature")
	if _, err := e.verifyCallbackJWT(tokStr, e.now()); fmt.Sprint(err) != "bad signature" {
		t.Errorf("forged callback verification: %v", err)
	}
	var env struct {
		Data struct {
			Type, ID, Status string
			Results, Errors  []any
		}
	}
	if err := json.Unmarshal(forged.body, &env); err != nil || env.Data.Type != "run" || env.Data.ID != id || env.Data.Status != "error" ||
		len(env.Data.Errors) != 1 || env.Data.Results == nil {
		t.Errorf("forged body %s", forged.body)
	}
	rc.answer(401)
	if err := e.fz.SendForgedCallback(rc.URL+"/cb", id, "success"); !errors.As(err, &se) || se.Status != 401 {
		t.Errorf("forgery refused with 401: %v", err)
	}
	rc.next(t)
}

func TestCloseStopsCallbacks(t *testing.T) {
	rc := newReceiver(t)
	release := make(chan struct{})
	rc.holdUntil(release)
	e := cbEnv(t, rc, func(c *Config) { c.CallbackTimeout = time.Hour })
	tok, conn := e.callbackSetup()
	inFlight := e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.fz.SetActions(testApp, ActionSpec{Key: "send", Delay: time.Hour})
	pending := e.startRun(tok, conn, "send", rc.URL+"/cb")
	e.advance(time.Minute) // the first is due, the second is not
	rc.next(t)             // and is now held by the receiver

	closed := make(chan struct{})
	go func() { e.fz.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("Close did not return while a delivery was in flight")
	}
	for _, id := range []string{inFlight, pending} {
		if d := e.delivery(id); !d.Done || d.Delivered || d.Err == "" {
			t.Errorf("after Close: %+v", d)
		}
	}
	e.fz.Close() // idempotent

	// Runs created later are still served but get no callback.
	later := e.startRun(tok, conn, "send", rc.URL+"/cb")
	if d := e.delivery(later); !d.Done || d.Attempts != 0 || d.Err != ErrClosed.Error() {
		t.Errorf("run created after Close: %+v", d)
	}
	e.advance(2 * time.Hour)
	if err := e.fz.ResendCallback(inFlight); !errors.Is(err, ErrClosed) {
		t.Errorf("ResendCallback after Close: %v", err)
	}
	if err := e.fz.SendForgedCallback(rc.URL+"/cb", inFlight, "success"); !errors.Is(err, ErrClosed) {
		t.Errorf("SendForgedCallback after Close: %v", err)
	}
	close(release)
	rc.none(t)
}
