package triggers

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// Twenty concurrent copies of one delivery across two gateways sharing a
// storage: exactly one claims it; after it is done every copy is a
// duplicate; a failed forward releases it for a retry.
func TestWebhookClaimsOnce(t *testing.T) {
	store := newMemStorage()
	now := time.Now()
	gw := func() *WebhookClaims {
		return &WebhookClaims{Storage: store, Prefix: "claims", InFlightTTL: time.Minute, Now: func() time.Time { return now }}
	}
	a, b := gw(), gw()
	ctx := context.Background()
	var mu sync.Mutex
	counts := map[int]int{}
	var winner *WebhookClaims
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			got, err := c.Claim(ctx, "msg_1")
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			counts[got]++
			if got == Claimed {
				winner = c
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[Claimed] != 1 || counts[InFlight] != 19 {
		t.Fatalf("claims: %v", counts)
	}
	if got, _ := winner.Claim(ctx, "msg_1"); got != InFlight {
		t.Fatalf("a copy on the claiming gateway: %d", got)
	}
	if err := winner.Abandon(ctx, "msg_1"); err != nil { // the forward failed
		t.Fatal(err)
	}
	if got, _ := b.Claim(ctx, "msg_1"); got != Claimed {
		t.Fatalf("after a failed forward: %d", got)
	}
	if err := b.Done(ctx, "msg_1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Claim(ctx, "msg_1"); got != AlreadyForwarded {
		t.Fatalf("after done: %d", got)
	}
	// A claim of a gateway that died is taken over after InFlightTTL.
	if got, _ := a.Claim(ctx, "msg_2"); got != Claimed {
		t.Fatal("msg_2")
	}
	now = now.Add(2 * time.Minute)
	if got, _ := b.Claim(ctx, "msg_2"); got != Claimed {
		t.Fatalf("a stale claim was not taken over: %d", got)
	}
	// An older version's mark (a timestamp) is a forwarded delivery.
	_ = store.Store(ctx, a.Key("msg_3"), []byte(now.Format(time.RFC3339)))
	if got, _ := a.Claim(ctx, "msg_3"); got != AlreadyForwarded {
		t.Fatalf("older mark: %d", got)
	}
}

func TestParseConnectionWebhookTakesTestFromTheBodyOnly(t *testing.T) {
	w, err := ParseConnectionWebhook([]byte(`{"type":"connection.expiry_scheduled","expires_at":"x","data":{"connection_id":123}}`))
	if err != nil || w.ConnectionID != "123" || w.Test {
		t.Fatalf("%+v %v", w, err)
	}
	for _, body := range []string{`{"type":"t","test":true,"data":{"id":"c"}}`, `{"type":"t","data":{"id":"c","test":true}}`} {
		if w, err := ParseConnectionWebhook([]byte(body)); err != nil || !w.Test || w.ConnectionID != "c" {
			t.Fatalf("%s: %+v %v", body, w, err)
		}
	}
	for _, body := range []string{``, `{}`, `{"type":"t"}`, `{"type":"t","data":[]}`, `{"type":"t","data":null}`, `[]`} {
		if _, err := ParseConnectionWebhook([]byte(body)); err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

func FuzzParseConnectionWebhook(f *testing.F) {
	f.Add([]byte(`{"type":"connection.expiry_scheduled","expires_at":"2026-08-01T00:00:00Z","data":{"connection_id":"123","app":"a"}}`))
	f.Add([]byte(`{"type":"t","test":true,"data":{"id":1e99}}`))
	f.Add([]byte(`{"type":"t","data":{"authentication_id":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := ParseConnectionWebhook(body)
		if err != nil {
			return
		}
		if w.Type == "" || len(w.Type) > 200 {
			t.Fatalf("accepted type %q", w.Type)
		}
		if w.Test && !bytes.Contains(body, []byte("true")) {
			t.Fatal("a test flag not in the body")
		}
	})
}

func TestParseNotify(t *testing.T) {
	if id, err := ParseNotify(strings.NewReader(`{"inbox_id":"ib-1","received_message_count":5}`)); err != nil || id != "ib-1" {
		t.Fatalf("%q %v", id, err)
	}
	for _, body := range []string{``, `{}`, `{"inbox_id":""}`, `{"inbox_id":5}`, `{"inbox_id":"` + strings.Repeat("x", 129) + `"}`, `nope`} {
		if _, err := ParseNotify(strings.NewReader(body)); err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

func FuzzParseNotify(f *testing.F) {
	f.Add([]byte(`{"inbox_id":"0b9f5c1e-6f1a-4c57-9d55-0c6f2bd0d1c2","received_message_count":3}`))
	f.Add([]byte(`{"inbox_id":null}`))
	f.Add([]byte(`{"inbox_id":"a"}{"inbox_id":"b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := ParseNotify(bytes.NewReader(body))
		if err == nil && (id == "" || len(id) > 128) {
			t.Fatalf("accepted inbox id %q", id)
		}
	})
}

func FuzzNotifyTokenForm(f *testing.F) {
	m := &Manager{cfg: Config{NotifyKey: []byte("k")}}
	f.Add(m.NotifyToken("czg-x"))
	f.Add(strings.Repeat("0", 32))
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		if m.NotifyTokenForm(token) == TokenMinted && m.tokenMAC(token[:32]) != token[32:] {
			t.Fatalf("a token with a wrong MAC passed: %q", token)
		}
	})
}
