package caddymodule

import (
	"context"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

const trgTestSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestTriggersCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier_triggers {
		deliver_to http://127.0.0.1:3000/zapier/events
		signing_secret {env.ZAPIER_EVENTS_SECRET}
		notification_url https://app.example.com/zapier/triggers/notify
		connection_webhook_secret {env.ZAPIER_CONNECTION_WEBHOOK_SECRET}
		app SlackCLIAPI 81f613aa-c98a-4383-a5fc-195e68647217
		inbox_prefix /trigger-inbox/v1
		delivery_timeout 5s
		drain_interval 1m
		retry_base 100ms
		retry_max 2s
		attempts 4
		max_leases 2
		lease_limit 20
		max_concurrent 3
		events_stream off
	}`)
	var h Triggers
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Triggers{DeliverTo: "http://127.0.0.1:3000/zapier/events", SigningSecret: "{env.ZAPIER_EVENTS_SECRET}",
		NotificationURL: "https://app.example.com/zapier/triggers/notify", ConnectionWebhookSecret: "{env.ZAPIER_CONNECTION_WEBHOOK_SECRET}",
		Apps: map[string]string{"SlackCLIAPI": "81f613aa-c98a-4383-a5fc-195e68647217"}, InboxPrefix: "/trigger-inbox/v1",
		DeliveryTimeout: caddy.Duration(5 * time.Second), DrainInterval: caddy.Duration(time.Minute), RetryBase: caddy.Duration(100 * time.Millisecond),
		RetryMax: caddy.Duration(2 * time.Second), Attempts: 4, MaxLeases: 2, LeaseLimit: 20, MaxConcurrent: 3, EventsStream: new(bool)}
	got, _ := json.Marshal(h)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Fatalf("parsed\n%s\nwant\n%s", got, exp)
	}
	for _, bad := range []string{
		"zapier_triggers extra",
		"zapier_triggers {\n nope 1\n}",
		"zapier_triggers {\n deliver_to\n}",
		"zapier_triggers {\n attempts x\n}",
		"zapier_triggers {\n drain_interval soon\n}",
		"zapier_triggers {\n events_stream maybe\n}",
	} {
		var h Triggers
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// memCertStorage is a certmagic.Storage in memory, for provisioning tests.
type memCertStorage struct{ certmagic.Storage }

func (memCertStorage) Load(context.Context, string) ([]byte, error) { return nil, fs.ErrNotExist }
func (memCertStorage) List(context.Context, string, bool) ([]string, error) {
	return nil, fs.ErrNotExist
}

func TestTriggersProvisionRefusesBadValuesWithoutQuotingSecrets(t *testing.T) {
	app := &App{APIURL: "https://api.zapier.com"}
	for name, h := range map[string]Triggers{
		"no deliver_to":     {SigningSecret: trgTestSecret},
		"relative":          {DeliverTo: "/events", SigningSecret: trgTestSecret},
		"no secret":         {DeliverTo: "http://127.0.0.1:3000/e"},
		"short secret":      {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: "whsec_c2VjcmV0LXZhbHVlLTQy"},
		"bad conn secret":   {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, ConnectionWebhookSecret: "whsec_!!!secret-value-43"},
		"bad notify":        {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, NotificationURL: "ftp://x"},
		"lease_limit > 100": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, LeaseLimit: 101},
		"prefix not rooted": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, InboxPrefix: "trigger-inbox"},
		"negative attempts": {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, Attempts: -1},
		"bad app mapping":   {DeliverTo: "http://127.0.0.1:3000/e", SigningSecret: trgTestSecret, Apps: map[string]string{"Slack": "not-a-uuid"}},
	} {
		err := h.provision(app, memCertStorage{}, zap.NewNop())
		if err == nil {
			h.Cleanup()
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, secret := range []string{"c2VjcmV0LXZhbHVlLTQy", "secret-value-43", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error quotes a secret: %v", name, err)
			}
		}
	}
}
