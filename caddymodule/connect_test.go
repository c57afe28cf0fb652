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

func TestAppMap(t *testing.T) {
	m, err := newAppMap(map[string]string{"SlackCLIAPI": strings.ToUpper(slackUUID)})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]appIDs{
		"SlackCLIAPI":              {connect: "SlackCLIAPI", uuid: slackUUID},
		slackUUID:                  {connect: "SlackCLIAPI", uuid: slackUUID}, // by its UUID, any case
		strings.ToUpper(slackUUID): {connect: "SlackCLIAPI", uuid: slackUUID},
	} {
		got, ok, aerr := m.resolve(name)
		if aerr != nil || !ok || got != want {
			t.Errorf("resolve(%q) = %+v, %v; want %+v", name, got, aerr, want)
		}
	}
	// Anything else is for Zapier's catalog.
	for _, name := range []string{"GoogleSheetsV2API", "11111111-2222-3333-4444-555555555555"} {
		if _, ok, aerr := m.resolve(name); ok || aerr != nil {
			t.Errorf("resolve(%q) = %v, %v; want it left to the catalog", name, ok, aerr)
		}
	}
	for name, want := range map[string]string{
		"":                              "app must be",
		"a/b":                           "app must be",
		"..":                            "app must be",
		"x y":                           "app must be",
		strings.Repeat("a", maxAppID+1): "app must be",
	} {
		_, _, aerr := m.resolve(name)
		if aerr == nil || aerr.Code != "bad_request" || !strings.Contains(aerr.Message, want) {
			t.Errorf("resolve(%q) = %v, want bad_request containing %q", name, aerr, want)
		}
	}
	for _, bad := range []map[string]string{
		{"SlackCLIAPI": "not-a-uuid"},
		{"Slack/API": slackUUID},
		{slackUUID: slackUUID},
		{"A": slackUUID, "B": strings.ToUpper(slackUUID)},
	} {
		if _, err := newAppMap(bad); err == nil {
			t.Errorf("newAppMap(%v) accepted", bad)
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
