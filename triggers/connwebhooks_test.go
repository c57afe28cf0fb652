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
