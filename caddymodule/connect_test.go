package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

const slackUUID = "81f613aa-c98a-4383-a5fc-195e68647217"

func TestConnectCaddyfile(t *testing.T) {
	var h Connect
	d := caddyfile.NewTestDispenser(`zapier_connect {
		app SlackCLIAPI ` + slackUUID + `
		app GoogleSheetsV2API 11111111-2222-3333-4444-555555555555
		state_ttl 5m
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Apps["SlackCLIAPI"] != slackUUID || len(h.Apps) != 2 || time.Duration(h.StateTTL) != 5*time.Minute {
		t.Errorf("parsed %+v", h)
	}
	// Defaults stay out of the JSON.
	var empty Connect
	if err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`zapier_connect`)); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(empty); string(b) != "{}" {
		t.Errorf("adapted JSON of a bare zapier_connect = %s, want {}", b)
	}

	for input, want := range map[string]string{
		"zapier_connect arg":                                                    "wrong argument count",
		"zapier_connect {\napp SlackCLIAPI\n}":                                  "app takes an implementation id and an app UUID",
		"zapier_connect {\napp A " + slackUUID + " extra\n}":                    "app takes an implementation id and an app UUID",
		"zapier_connect {\napp A " + slackUUID + "\napp A " + slackUUID + "\n}": "app A is mapped twice",
		"zapier_connect {\nstate_ttl soon\n}":                                   "invalid duration",
		"zapier_connect {\nstate_ttl\n}":                                        "exactly one duration",
		"zapier_connect {\ncolor blue\n}":                                       `unrecognized zapier_connect option "color"`,
	} {
		var h Connect
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", input, err, want)
		}
	}
}

func TestConnectRejectsBadProvisionValues(t *testing.T) {
	for _, h := range []Connect{
		{StateTTL: caddy.Duration(-time.Second)},
		{StateTTL: caddy.Duration(48 * time.Hour)},
		{Apps: map[string]string{"SlackCLIAPI": "nope"}},
	} {
		// Provision checks its own values before it needs the app.
		if err := h.Provision(caddy.Context{}); err == nil || !strings.HasPrefix(err.Error(), "zapier_connect: ") {
			t.Errorf("Provision(%+v) = %v, want a zapier_connect error", h, err)
		}
	}
}
