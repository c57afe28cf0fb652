package fakezapier

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"
)

// SentCallback hands back the delivered body and token byte for byte;
// SignCallback signs with the published key, sub as asked or left out;
// PostCallback sends any body and token once.
func TestSentSignedAndPostedCallbacks(t *testing.T) {
	rc := newReceiver(t)
	e := cbEnv(t, rc)
	tok, conn := e.callbackSetup()
	id := e.startRun(tok, conn, "send", rc.URL+"/cb")
	if _, _, err := e.fz.SentCallback(id); err == nil {
		t.Error("SentCallback before the run finished succeeded")
	}
	e.advance(time.Minute)
	first := rc.next(t)
	e.waitDone(id)
	body, sig, err := e.fz.SentCallback(id)
	if err != nil || !bytes.Equal(body, first.body) || sig != first.header.Get("Zapier-Callback-Signature") {
		t.Fatalf("SentCallback: %s %q %v, delivered %s %q", body, sig, err, first.body, first.header.Get("Zapier-Callback-Signature"))
	}
	if _, _, err := e.fz.SentCallback("no-such-run"); err == nil {
		t.Error("SentCallback of an unknown run succeeded")
	}

	for _, sub := range []string{"arun_other", ""} {
		claims, err := e.verifyCallbackJWT(e.fz.SignCallback(sub), e.now())
		if err != nil || claims["iss"] != CallbackIssuer {
			t.Errorf("SignCallback(%q): %v %v", sub, claims, err)
		}
		if got, ok := claims["sub"]; (sub == "") == ok || (ok && got != sub) {
			t.Errorf("SignCallback(%q) has sub %v (present %v)", sub, got, ok)
		}
	}

	want := CallbackBody("arun_other", "success", map[string]any{"k": "v"})
	var parsed struct {
		Data struct {
			Type, ID, Status string
			Results          []map[string]string
			Errors           []any
		}
	}
	if err := json.Unmarshal(want, &parsed); err != nil || parsed.Data.Type != "run" || parsed.Data.ID != "arun_other" ||
		parsed.Data.Status != "success" || len(parsed.Data.Results) != 1 || parsed.Data.Results[0]["k"] != "v" || parsed.Data.Errors == nil {
		t.Errorf("CallbackBody: %s", want)
	}
	if err := e.fz.PostCallback(rc.URL+"/cb", want, "t.o.k"); err != nil {
		t.Fatal(err)
	}
	got := rc.next(t)
	if !bytes.Equal(got.body, want) || got.header.Get("Zapier-Callback-Signature") != "t.o.k" {
		t.Errorf("PostCallback sent %s %v", got.body, got.header)
	}
	rc.answer(http.StatusConflict)
	var se *CallbackStatusError
	if err := e.fz.PostCallback(rc.URL+"/cb", want, ""); !errors.As(err, &se) || se.Status != http.StatusConflict {
		t.Errorf("PostCallback answered 409: %v", err)
	}
	if got := rc.next(t); got.header.Get("Zapier-Callback-Signature") != "" {
		t.Errorf("PostCallback with no token sent %q", got.header.Get("Zapier-Callback-Signature"))
	}
}
