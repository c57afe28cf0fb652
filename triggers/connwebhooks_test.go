package triggers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

func TestWebhooksClientAgainstTheFake(t *testing.T) {
	fz := fakezapier.New(fakezapier.Config{ClientID: "c", ClientSecret: "s"})
	srv := httptest.NewServer(fz)
	t.Cleanup(srv.Close)
	fz.SetConnectionWebhooksToken("hooks-token", true)

	got := make(chan http.Header, 1)
	var secret string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("test delivery: %v", err)
		}
		got <- r.Header
	}))
	t.Cleanup(recv.Close)

	ctx := context.Background()
	if _, err := (&WebhooksClient{APIURL: srv.URL, Token: "wrong"}).List(ctx); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("a wrong token: %v", err)
	}
	c := &WebhooksClient{APIURL: srv.URL, Token: "hooks-token"}
	w, err := c.Register(ctx, recv.URL+"/zapier/triggers/connection-webhooks")
	if err != nil || w.ID == "" || !strings.HasPrefix(w.Secret, "whsec_") || w.EventType != WebhookEventType {
		t.Fatalf("Register: %+v %v", w, err)
	}
	secret = w.Secret
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != w.ID || list[0].Secret != "" {
		t.Fatalf("List: %+v %v", list, err)
	}
	if err := c.Test(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h.Get("webhook-test") != "true" {
		t.Fatalf("test delivery headers: %v", h)
	}
	if err := c.Delete(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := c.List(ctx); len(list) != 0 {
		t.Fatalf("after Delete: %+v", list)
	}
	if err := c.Test(ctx, w.ID); err == nil {
		t.Fatal("Test of a deleted webhook succeeded")
	}
}

func TestWebhooksCredentialsClient(t *testing.T) {
	ctx := context.Background()
	exchanges := 0
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		exchanges++
		if r.FormValue("grant_type") != "client_credentials" || r.FormValue("client_id") != "hid" || r.FormValue("client_secret") != "hsecret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"exchanged"}`))
	}))
	t.Cleanup(tokens.Close)
	if _, err := (WebhooksCredentials{APIURL: "https://api.zapier.com", ClientID: "hid"}).Client(ctx); err == nil {
		t.Error("accepted a client id without a secret")
	}
	c, err := WebhooksCredentials{APIURL: "https://api.zapier.com", TokenURL: tokens.URL, Token: "given", ClientID: "hid", ClientSecret: "hsecret"}.Client(ctx)
	if err != nil || c.Token != "given" || exchanges != 0 {
		t.Errorf("with a token: %+v %v, %d exchanges", c, err, exchanges)
	}
	c, err = WebhooksCredentials{APIURL: "https://api.zapier.com", TokenURL: tokens.URL, ClientID: "hid", ClientSecret: "hsecret"}.Client(ctx)
	if err != nil || c.Token != "exchanged" || c.APIURL != "https://api.zapier.com" || exchanges != 1 {
		t.Errorf("with client credentials: %+v %v, %d exchanges", c, err, exchanges)
	}
	if _, err := (WebhooksCredentials{TokenURL: tokens.URL, ClientID: "hid", ClientSecret: "wrong-secret-value"}).Client(ctx); err == nil || strings.Contains(err.Error(), "wrong-secret-value") {
		t.Errorf("refused credentials: %v", err)
	}
}
