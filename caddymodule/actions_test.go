package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestActionsCaddyfile(t *testing.T) {
	var h Actions
	d := caddyfile.NewTestDispenser(`zapier_actions {
		app SlackCLIAPI ` + slackUUID + `
		poll_interval 250ms
		max_poll_interval 2s
		run_via stored
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Apps["SlackCLIAPI"] != slackUUID || time.Duration(h.PollInterval) != 250*time.Millisecond || time.Duration(h.MaxPollInterval) != 2*time.Second || h.RunVia != "stored" {
		t.Errorf("parsed %+v", h)
	}
	var empty Actions
	if err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`zapier_actions`)); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(empty); string(b) != "{}" {
		t.Errorf("adapted JSON of a bare zapier_actions = %s, want {}", b)
	}
	for input, want := range map[string]string{
		"zapier_actions arg":                   "wrong argument count",
		"zapier_actions {\napp SlackCLIAPI\n}": "app takes an implementation id and an app UUID",
		"zapier_actions {\napp A " + slackUUID + "\napp A " + slackUUID + "\n}": "app A is mapped twice",
		"zapier_actions {\npoll_interval soon\n}":                               "invalid duration",
		"zapier_actions {\nwait 5s\n}":                                          `unrecognized zapier_actions option "wait"`,
		"zapier_actions {\nrun_via v2\n}":                                       "run_via must be auto, stored or action_runs",
		"zapier_actions {\nrun_via\n}":                                          "wrong argument count",
	} {
		var h Actions
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", input, err, want)
		}
	}
	for _, h := range []Actions{
		{PollInterval: caddy.Duration(-time.Second)},
		{PollInterval: caddy.Duration(time.Second), MaxPollInterval: caddy.Duration(time.Millisecond)},
		{Apps: map[string]string{"SlackCLIAPI": "nope"}},
		{RunVia: "v2"},
	} {
		if err := h.Provision(caddy.Context{}); err == nil || !strings.HasPrefix(err.Error(), "zapier_actions: ") {
			t.Errorf("Provision(%+v) = %v, want a zapier_actions error", h, err)
		}
	}
	if h := (Actions{}); h.setDefaults() != nil || h.RunVia != "auto" {
		t.Errorf("run_via defaults to %q, want auto", h.RunVia)
	}
	h = Actions{PollInterval: caddy.Duration(10 * time.Second)}
	if err := h.setDefaults(); err != nil || h.MaxPollInterval != h.PollInterval {
		t.Errorf("a long poll_interval: max %s, %v", time.Duration(h.MaxPollInterval), err)
	}
}
