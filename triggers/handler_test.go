package triggers

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/ratelimit"
	"github.com/zapgate/caddy-zapier/webhooksig"
)

const appUUID = "81f613aa-c98a-4383-a5fc-195e68647217"

var connWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))

type handlerEnv struct {
	*env
	h     *Handler
	conns *connect.Store
	mu    sync.Mutex
	seen  map[string]int // observed outcomes
}

func newHandlerEnv(t *testing.T, mutate ...func(*Options)) *handlerEnv {
	t.Helper()
	e := &handlerEnv{env: newEnv(t), seen: map[string]int{}}
	opts := Options{DeliverTo: e.recv.url, SigningSecret: testSecret, ConnectionWebhookSecret: connWebhookSecret, APIURL: "https://api.zapier.com"}
	for _, f := range mutate {
		f(&opts)
	}
	if err := opts.Check(); err != nil {
		t.Fatal(err)
	}
	trusted, _ := gateway.ParseTrustedSources([]string{"127.0.0.0/8", "::1/128"})
	rules := gateway.NewIdentityRules("X-Zapier-User", "X-Zapier-Tenant", trusted)
	// Claims and connections on disk: the claims' sweep reads real
	// modification times.
	files := &certmagic.FileStorage{Path: t.TempDir()}
	e.conns = connect.NewStore(files)
	observe := func(prefix string) func(string) {
		return func(o string) {
			e.mu.Lock()
			e.seen[prefix+o]++
			e.mu.Unlock()
		}
	}
	h, err := NewHandler(HandlerConfig{
		Options: opts, Manager: e.mgr, Storage: files,
		Policy: &gateway.Policy{Identity: &rules, Hosts: gateway.NewHostRules()},
		Lookup: &actions.Lookup{Store: e.conns,
			Configured: func(name string) (actions.App, bool, error) {
				return actions.App{Key: "SlackCLIAPI", UUID: appUUID}, name == "SlackCLIAPI", nil
			},
			Catalog: func(context.Context, gateway.Identity, string) (actions.App, error) {
				return actions.App{}, &gateway.Error{Status: http.StatusNotFound, Code: "app_not_found", Message: "no such app"}
			}},
		ObserveNotification:      observe("notify:"),
		ObserveConnectionWebhook: observe("webhook:"),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	return e
}

func (e *handlerEnv) observed(o string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[o]
}

type response struct {
	status int
	body   string
}

func (r response) code() string {
	var v struct{ Error struct{ Code string } }
	_ = json.Unmarshal([]byte(r.body), &v)
	return v.Error.Code
}

func (e *handlerEnv) do(method, path, user, body string, header ...string) response {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:40000"
	req.Host = "localhost"
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if user != "" {
		req.Header.Set("X-Zapier-Tenant", "org")
		req.Header.Set("X-Zapier-User", user)
	}
	rec := httptest.NewRecorder()
	if err := e.h.Serve(rec, req); err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return response{rec.Code, rec.Body.String()}
}

func TestHandlerNotifyAndWebhookRoutesWithoutIdentity(t *testing.T) {
	e := newHandlerEnv(t, func(o *Options) { o.ConnectionWebhookSecret = "" })
	token := "?inbox_token=" + e.mgr.NotifyToken("czg-any")
	if r := e.do(http.MethodPost, "/notify"+token, "", `{"inbox_id":"unknown","received_message_count":5}`); r.status != http.StatusOK {
		t.Errorf("notify with an unknown inbox: %d", r.status)
	}
	if e.observed("notify:false") != 1 {
		t.Errorf("notifications observed: %v", e.seen)
	}
	// A token the gateway did not mint is refused before any lookup.
	for _, q := range []string{"", "?inbox_token=zz", "?inbox_token=" + strings.Repeat("a", 64)} {
		if r := e.do(http.MethodPost, "/notify"+q, "", `{"inbox_id":"unknown"}`); r.status != http.StatusBadRequest {
			t.Errorf("notify with token %q: %d", q, r.status)
		}
	}
	if e.observed("notify:token_invalid") != 3 {
		t.Errorf("notifications observed: %v", e.seen)
	}
	if r := e.do(http.MethodPost, "/notify"+token, "", `not json`); r.status != http.StatusBadRequest {
		t.Errorf("malformed notify: %d", r.status)
	}
	if r := e.do(http.MethodGet, "/notify", "", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET notify: %d", r.status)
	}
	// Without connection_webhook_secret the route does not exist.
	if r := e.do(http.MethodPost, "/connection-webhooks", "", `{}`); r.status != http.StatusNotFound || r.code() != "not_found" {
		t.Errorf("connection-webhooks without a secret: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/elsewhere", "", ""); r.status != http.StatusNotFound || r.code() != "not_found" {
		t.Errorf("unknown route: %d", r.status)
	}
}

func TestHandlerNotifyRateLimitPerSource(t *testing.T) {
	e := newHandlerEnv(t)
	lim, err := ratelimit.New(ratelimit.Config{Events: 1, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.h.cfg.NotifyLimit = lim
	source := "203.0.113.9"
	e.h.cfg.SourceAddr = func(*http.Request) string { return source }
	token := "?inbox_token=" + e.mgr.NotifyToken("czg-any")
	if r := e.do(http.MethodPost, "/notify"+token, "", `{"inbox_id":"x"}`); r.status != http.StatusOK {
		t.Fatalf("first notification: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, "/notify"+token, "", `{"inbox_id":"x"}`); r.status != http.StatusTooManyRequests || r.code() != "rate_limited" {
		t.Errorf("second from the same source: %d %s", r.status, r.body)
	}
	source = "203.0.113.10"
	if r := e.do(http.MethodPost, "/notify"+token, "", `{"inbox_id":"x"}`); r.status != http.StatusOK {
		t.Errorf("another source: %d %s", r.status, r.body)
	}
	if e.observed("notify:rate_limited") != 1 || e.observed("notify:false") != 2 {
		t.Errorf("notifications observed: %v", e.seen)
	}
}

func TestHandlerSubscriptionRoutes(t *testing.T) {
	e := newHandlerEnv(t)
	ctx := context.Background()
	if _, err := e.conns.Put(ctx, "org", "alice", connect.Record{ConnectionID: e.conn, App: "SlackCLIAPI", AppUUID: appUUID}); err != nil {
		t.Fatal(err)
	}
	put := `{"app":"SlackCLIAPI","trigger":"new_message","inputs":{"channel":"C1"}}`
	if r := e.do(http.MethodPut, "/subscriptions/slack-new", "", put); r.status < 400 || r.code() == "" {
		t.Errorf("PUT without identity: %d %s", r.status, r.body)
	}
	r := e.do(http.MethodPut, "/subscriptions/slack-new", "alice", put)
	if r.status != http.StatusCreated || !strings.Contains(r.body, `"subscription"`) {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPut, "/subscriptions/slack-new", "alice", put); r.status != http.StatusOK {
		t.Errorf("PUT again: %d %s", r.status, r.body)
	}
	other := `{"app":"SlackCLIAPI","trigger":"other_trigger"}`
	if r := e.do(http.MethodPut, "/subscriptions/slack-new", "alice", other); r.status != http.StatusConflict || r.code() != "subscription_conflict" {
		t.Errorf("PUT another config: %d %s", r.status, r.body)
	}
	r = e.do(http.MethodGet, "/subscriptions", "alice", "")
	var list struct{ Data []View }
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.status != http.StatusOK || len(list.Data) != 1 {
		t.Errorf("GET subscriptions: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, "/subscriptions/slack-new/pause", "alice", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"paused"`) {
		t.Errorf("pause: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, "/subscriptions/slack-new/resume", "alice", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"active"`) {
		t.Errorf("resume: %d %s", r.status, r.body)
	}
	for _, c := range []struct {
		method, path, user, body string
		status                   int
		code                     string
	}{
		{http.MethodGet, "/subscriptions/nope", "alice", "", http.StatusNotFound, "subscription_not_found"},
		{http.MethodGet, "/subscriptions/slack-new", "bob", "", http.StatusNotFound, "subscription_not_found"},
		{http.MethodPut, "/subscriptions/bad%20name", "alice", put, http.StatusBadRequest, "bad_request"},
		{http.MethodPut, "/subscriptions/x", "alice", `{"app":"SlackCLIAPI"}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPut, "/subscriptions/x", "alice", `{"app":"SlackCLIAPI","trigger":"t","inputs":[1]}`, http.StatusBadRequest, "bad_request"},
		{http.MethodPut, "/subscriptions/x", "alice", `{"app":"SlackCLIAPI","trigger":"t","connection_id":"999"}`, http.StatusBadRequest, "connection_invalid"},
		{http.MethodPut, "/subscriptions/x", "bob", put, http.StatusConflict, "connection_missing"},
		{http.MethodPut, "/subscriptions/x", "alice", `{"app":"Nope","trigger":"t"}`, http.StatusNotFound, "app_not_found"},
		{http.MethodPost, "/subscriptions/slack-new", "alice", "", http.StatusMethodNotAllowed, "method_not_allowed"},
		{http.MethodGet, "/subscriptions/slack-new/other", "alice", "", http.StatusNotFound, "not_found"},
	} {
		if r := e.do(c.method, c.path, c.user, c.body); r.status != c.status || r.code() != c.code {
			t.Errorf("%s %s as %q: %d %s, want %d %s", c.method, c.path, c.user, r.status, r.body, c.status, c.code)
		}
	}
	if r := e.do(http.MethodDelete, "/subscriptions/slack-new", "alice", ""); r.status != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/subscriptions/slack-new", "alice", ""); r.status != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d %s", r.status, r.body)
	}
}

func TestHandlerConnectionWebhooks(t *testing.T) {
	e := newHandlerEnv(t)
	ctx := context.Background()
	if _, err := e.conns.Put(ctx, "org", "alice", connect.Record{ConnectionID: "c-77", App: "SlackCLIAPI", AppUUID: appUUID}); err != nil {
		t.Fatal(err)
	}
	signer, err := webhooksig.NewSigner(connWebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	send := func(id, body string) response {
		h := http.Header{}
		signer.SetHeaders(h, id, time.Now(), []byte(body))
		return e.do(http.MethodPost, "/connection-webhooks", "", body,
			"webhook-id", h.Get("webhook-id"), "webhook-timestamp", h.Get("webhook-timestamp"), "webhook-signature", h.Get("webhook-signature"))
	}
	body := `{"type":"connection.expiry_scheduled","data":{"connection_id":"c-77","expires_at":"2030-01-01T00:00:00Z"}}`
	if r := send("msg_1", body); r.status != http.StatusOK || !strings.Contains(r.body, `"forwarded"`) {
		t.Fatalf("known connection: %d %s", r.status, r.body)
	}
	got := e.recv.all()
	if len(got) != 1 || got[0].ID != "msg_1" || got[0].Body["type"] != "connection.expiring" || got[0].Body["user"] != "alice" || got[0].Body["zapier_type"] != "connection.expiry_scheduled" {
		t.Fatalf("the partner got %+v", got)
	}
	if r := send("msg_1", body); r.status != http.StatusOK || !strings.Contains(r.body, `"duplicate"`) {
		t.Errorf("a copy: %d %s", r.status, r.body)
	}
	unknown := `{"type":"connection.expiry_scheduled","data":{"connection_id":"c-nobody"}}`
	if r := send("msg_2", unknown); r.status != http.StatusOK || !strings.Contains(r.body, `"unknown_connection"`) {
		t.Errorf("unknown connection: %d %s", r.status, r.body)
	}
	if r := send("msg_3", `[]`); r.status != http.StatusBadRequest {
		t.Errorf("malformed: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, "/connection-webhooks", "", body, "webhook-id", "msg_4"); r.status != http.StatusUnauthorized || r.code() != "signature_invalid" {
		t.Errorf("unsigned: %d %s", r.status, r.body)
	}
	e.recv.setStatus(func(int) int { return http.StatusInternalServerError })
	if r := send("msg_5", body); r.status != http.StatusBadGateway || r.code() != "delivery_failed" {
		t.Errorf("partner failing: %d %s", r.status, r.body)
	}
	if len(e.recv.all()) != 2 {
		t.Errorf("the partner got %d requests, want 2", len(e.recv.all()))
	}
	for o, n := range map[string]int{"forwarded": 1, "duplicate": 1, "unknown_connection": 1, "malformed": 1, "signature_invalid": 1, "partner_failed": 1} {
		if got := e.observed("webhook:" + o); got != n {
			t.Errorf("outcome %s observed %d times, want %d", o, got, n)
		}
	}
}

func TestOptionsCheckRefusesBadValuesWithoutQuotingSecrets(t *testing.T) {
	for name, o := range map[string]Options{
		"no deliver_to":     {SigningSecret: testSecret},
		"relative":          {DeliverTo: "/events", SigningSecret: testSecret},
		"no secret":         {DeliverTo: "http://127.0.0.1:3000/e"},
		"short secret":      {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: "whsec_c2VjcmV0LXZhbHVlLTQy"},
		"bad conn secret":   {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret, ConnectionWebhookSecret: "whsec_!!!secret-value-43"},
		"bad notify":        {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret, NotificationURL: "ftp://x"},
		"lease_limit > 100": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret, LeaseLimit: 101},
		"prefix not rooted": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret, InboxPrefix: "trigger-inbox"},
		"negative attempts": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret, Attempts: -1},
	} {
		err := o.Check()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, secret := range []string{"c2VjcmV0LXZhbHVlLTQy", "secret-value-43", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error quotes a secret: %v", name, err)
			}
		}
	}
	o := Options{DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: testSecret}
	if err := o.Check(); err != nil || o.InboxPrefix != DefaultPrefix || !o.Stream() {
		t.Fatalf("defaults: %v %q stream %v", err, o.InboxPrefix, o.Stream())
	}
	k := o.LoopKey()
	o.NotificationURL = "https://app.example.com/notify"
	if o.Stream() || o.LoopKey() == k {
		t.Errorf("a notification URL turns the stream off and changes the loop")
	}
}
